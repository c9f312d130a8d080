"""The Avalanche adapter (avalanche.<Name> as a clbench strategy) and as_avalanche_benchmark."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

pytest.importorskip("avalanche")

from clbench.benchmarks.avalanche_interop import as_avalanche_benchmark, stream_from_avalanche  # noqa: E402
from clbench.benchmarks.registry import build_stream  # noqa: E402
from clbench.errors import UserError  # noqa: E402
from clbench.protocols.config import parse_config  # noqa: E402
from clbench.strategies import avalanche_adapter as adapter  # noqa: E402
from clbench.strategies.registry import resolve_strategy  # noqa: E402
from helpers import run_cell

TINY = dict(lr=0.05, epochs=2, hidden=(32,), batch_size=32)


def run(name: str, stream, seed: int = 0, **hp):
    strategy, result = run_cell(name, stream, TINY, seed, **hp)
    return strategy, torch.tensor(result.accuracy, dtype=torch.float64)


@pytest.mark.parametrize("hp", [{}, {"optimizer": "adam", "lr": 0.002}, {"optimizer": "sgd", "momentum": 0.9, "lr": 0.01},
                                {"precision": "bfloat16"}])
def test_avalanche_naive_equals_finetune(permuted, hp):
    """Same model, optimiser, seed and data order: Avalanche's loop and clbench's give the same R."""
    _, ft = run("finetune", permuted, **hp)
    _, av = run("avalanche.Naive", permuted, **hp)
    assert (ft - av).abs().max() <= 1e-6, (ft, av)
    assert ft.diagonal().min() > 0.3  # and something was learnt


@pytest.mark.parametrize("native,avalanche,hp", [
    ("ewc", "avalanche.EWC", {"ewc_lambda": 1000.0}),
    ("lwf", "avalanche.LwF", {"alpha": 1.0, "temperature": 2.0}),
])
def test_native_regularisers_match_avalanche(permuted, native, avalanche, hp):
    """Same formulas as Avalanche's plugins (EWC: eval-mode minibatch Fisher, no 1/2; LwF: KL, no T^2)."""
    extra = {"fisher_batch_size": TINY["batch_size"]} if native == "ewc" else {}
    _, ours = run(native, permuted, **hp, **extra)
    _, theirs = run(avalanche, permuted, **hp)
    _, ft = run("finetune", permuted)
    assert (ours - theirs).abs().max() <= 1e-6, (ours, theirs)
    assert not torch.equal(ours, ft)  # the penalty is active


def test_adapter_runs_gem_in_the_clbench_loop(permuted):
    _, ft = run("finetune", permuted)
    s, gem = run("avalanche.GEM", permuted, patterns_per_exp=40, memory_strength=0.5)
    assert gem.shape == (3, 3) and not torch.equal(gem, ft)
    assert s.state_bytes() > sum(p.numel() * 4 for p in s.av.model.parameters())  # its memory is counted


def test_adapter_validates_keyword_arguments(permuted):
    cls = resolve_strategy("avalanche.EWC")
    with pytest.raises(UserError, match="ewc_lambda.*batch_size"):
        cls(permuted.info, seed=0, ewc_lambda=1.0, bogus=3)  # lists the valid keys
    with pytest.raises(UserError, match="needs ewc_lambda"):
        cls(permuted.info, seed=0)
    with pytest.raises(UserError, match="use epochs"):
        cls(permuted.info, seed=0, ewc_lambda=1.0, train_epochs=3)
    with pytest.raises(UserError, match="unknown Avalanche strategy 'Nope'.*Naive"):
        resolve_strategy("avalanche.Nope")
    assert {"ewc_lambda", "mode", "lr", "epochs"} <= set(cls.hyperparameters())
    assert "ewc_lambda" in cls.search_space
    # a config is checked before anything runs, every mistake listed
    with pytest.raises(UserError) as err:
        parse_config({"benchmarks": ["permuted_digits"], "strategies": [
            {"name": "avalanche.LwF", "alpha": 1, "temperature": 2, "tmperature": 2}, {"name": "avalanche.AGEM"}]})
    assert "tmperature" in str(err.value) and "AGEM needs patterns_per_exp" in str(err.value)


def test_as_avalanche_benchmark_round_trip(data_root):
    base = build_stream({"name": "split_digits", "n_experiences": 5}, 1, data_root)
    rehearsed = build_stream({"name": "permuted_digits", "n_experiences": 3,
                              "rehearsal": {"schedule": "power_law", "budget": 0.5}}, 1, data_root)
    for stream in (base, rehearsed):
        bm = as_avalanche_benchmark(stream)
        assert len(bm.train_stream) == len(bm.test_stream) == len(stream)
        for exp, av in zip(stream, bm.train_stream):
            assert av.current_experience == exp.index and av.task_label == exp.task_id
            assert set(av.classes_in_this_experience) == set(exp.train.y.tolist())
        back = stream_from_avalanche(bm, scenario=stream.scenario)
        assert len(back) == len(stream)
        for a, b in zip(stream, back):
            for split in ("train", "test"):
                x, y = getattr(a, split), getattr(b, split)
                assert torch.equal(x.float_x(), y.x) and torch.equal(x.y, y.y)
            assert set(a.classes) == set(b.classes)


@pytest.mark.parametrize("name,hp", [
    ("avalanche.Naive", {}),
    ("avalanche.AGEM", {"patterns_per_exp": 30, "sample_size": 40}),  # 20 per group: batches wrap around
    ("avalanche.GEM", {"patterns_per_exp": 40, "memory_strength": 0.5}),
])
def test_fast_paths_change_nothing(permuted, monkeypatch, name, hp):
    """Tensor minibatches and tensor memories give the accuracy matrix of Avalanche's own data path, exactly."""
    calls = []
    original = adapter.TensorBatches.__iter__
    monkeypatch.setattr(adapter.TensorBatches, "__iter__", lambda self: (calls.append(1), original(self))[1])
    s, fast = run(name, permuted, **hp)
    assert len(calls) == 3 * TINY["epochs"]  # the fast path trained every epoch
    if name == "avalanche.AGEM":
        (memory,) = [p._clbench_memory for p in s.av.plugins if hasattr(p, "_clbench_memory")]
        assert len(memory.groups) == 3 and len(memory.groups[0][0]) == 30 and memory.per == 13
    monkeypatch.setattr(adapter, "FAST_PATHS", False)
    _, slow = run(name, permuted, **hp)
    assert len(calls) == 3 * TINY["epochs"]  # not used this time
    assert torch.equal(fast, slow), (fast, slow)


def test_agem_repeats_and_leaves_the_global_generators_alone(permuted):
    """A-GEM picks its memory with random.shuffle: the adapter seeds that from the cell seed, per strategy."""
    random.seed(11)
    np.random.seed(11)
    py, npy = random.getstate(), np.random.get_state()
    hp = {"patterns_per_exp": 30, "sample_size": 40}
    _, a = run("avalanche.AGEM", permuted, **hp)
    _, b = run("avalanche.AGEM", permuted, **hp)
    _, c = run("avalanche.AGEM", permuted, seed=1, **hp)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert random.getstate() == py and all(np.array_equal(u, v) for u, v in zip(np.random.get_state(), npy))
