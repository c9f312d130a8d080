"""The device path of the gradient strategies: resident data, bfloat16 autocast, seeds as one vectorised ensemble.

Everything here runs on the CPU (the ensemble and the resident data path are device-independent code); the
one test that needs a GPU compares a CUDA run with the CPU run and is skipped without one.
"""

from __future__ import annotations

import pytest
import torch

from clbench.benchmarks.registry import build_stream
from clbench.errors import UserError
from clbench.protocols.config import CellSpec, parse_config
from clbench.protocols.ensemble import EnsembleExecutor, group_cells, run_group
from clbench.protocols.runner import execute_cell, run_matrix, seeded
from clbench.stream import TensorData
from clbench.strategies.ensemble import Ensemble, StackedOptimizer, ensemble_problem
from clbench.strategies.gradient import GradientStrategy, ResidentData
from clbench.strategies.registry import resolve_strategy
from helpers import run_cell, stable_table, tiny_matrix

TINY = dict(lr=0.05, epochs=2, hidden=(16,), batch_size=32)


def streams(data_root, name: str, seeds, n: int):
    return [build_stream({"name": name, "n_experiences": n}, s, data_root) for s in seeds]


def per_seed(name: str, stream, seed: int, **hp):
    with seeded(seed):
        s = resolve_strategy(name)(stream.info, seed=seed, **{**TINY, **hp})
    for e in stream:
        s.train_experience(e.train_view())
    return s


def as_ensemble(name: str, streams_, seeds, **hp) -> Ensemble:
    members = []
    for st, seed in zip(streams_, seeds):
        with seeded(seed):
            members.append(resolve_strategy(name)(st.info, seed=seed, **{**TINY, **hp}))
    ens = Ensemble(members)
    for i in range(len(streams_[0])):
        ens.train_experience([st[i].train_view() for st in streams_])
    return ens


# ------------------------------------------------------------------ resident data, precision

def test_resident_batches_are_the_batches_of_tensor_data():
    """Same generator seed: ResidentData cuts the minibatches TensorData.batches(shuffle=True) yields, in order."""
    x = torch.randint(0, 256, (103, 1, 4, 4), dtype=torch.uint8)
    data = TensorData(x, torch.randint(0, 10, (103,)))
    mine = list(ResidentData(data, torch.device("cpu")).batches(16, torch.Generator().manual_seed(3)))
    ref = list(data.batches(16, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert len(mine) == len(ref) == 7
    for (a, ya), (b, yb) in zip(mine, ref):
        assert torch.equal(a, b) and torch.equal(ya, yb) and a.dtype == torch.float32
    assert torch.equal(torch.cat([y for _, y in mine]).sort().values, data.y.sort().values)  # every sample once


def test_precision_is_declared_and_bfloat16_trains(permuted):
    assert "precision" in GradientStrategy.constraints()
    assert any("precision" in p for p in resolve_strategy("finetune").parameter_problems({"precision": "float16"}))
    with pytest.raises(UserError, match="precision"):
        parse_config({"benchmarks": ["permuted_digits"], "strategies": [{"name": "ewc", "precision": "half"}]})
    hp = {**TINY, "lr": 0.1, "epochs": 3, "hidden": (32,)}
    s32, r32 = run_cell("finetune", permuted, hp)
    s16, r16 = run_cell("finetune", permuted, hp, precision="bfloat16")
    a32, a16 = torch.tensor(r32.accuracy), torch.tensor(r16.accuracy)
    assert a16.diagonal().min() > 0.7  # it learns
    assert (a32 - a16).abs().max() < 0.05  # close to float32 ...
    p32 = torch.cat([p.flatten() for p in s32.model.parameters()])
    p16 = torch.cat([p.flatten() for p in s16.model.parameters()])
    assert not torch.equal(p32, p16)  # ... but computed in bfloat16
    assert all(p.dtype == torch.float32 for p in s16.model.parameters())
    assert s16.predict(permuted[0].test.float_x()[:5]).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_sees_the_cpu_minibatches(permuted):
    """Same data order on the GPU (indices drawn on the CPU): accuracies equal up to float rounding."""
    _, cpu = run_cell("finetune", permuted, TINY)
    _, gpu = run_cell("finetune", permuted, TINY, device="cuda")
    assert (torch.tensor(cpu.accuracy) - torch.tensor(gpu.accuracy)).abs().max() <= 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_ensemble_is_the_per_seed_runs(data_root):
    """On the GPU too: the ensemble's members equal per-seed GPU runs (float rounding), with bfloat16 as well."""
    seeds = (0, 1)
    sts = streams(data_root, "permuted_digits", seeds, 2)
    for precision in ("float32", "bfloat16"):
        ens = as_ensemble("ewc", sts, seeds, ewc_lambda=100.0, device="cuda", precision=precision)
        for k, (st, seed) in enumerate(zip(sts, seeds)):
            ref = per_seed("ewc", st, seed, ewc_lambda=100.0, device="cuda", precision=precision)
            if precision == "float32":
                for a, b in zip(ref.model.parameters(), ens.members[k].model.parameters()):
                    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
            x = st[0].test.float_x()
            same = (ref.predict(x).argmax(1) == ens.members[k].predict(x).argmax(1)).float().mean()
            assert same >= (0.99 if precision == "float32" else 0.9)  # bfloat16 products round differently


# ------------------------------------------------------------------ the stacked optimiser

@pytest.mark.parametrize("kind,hp", [("sgd", {"momentum": 0.9, "weight_decay": 0.01}), ("sgd", {}),
                                     ("adam", {"weight_decay": 0.01}), ("adam", {})])
def test_stacked_optimizer_is_torch_optim_per_member(kind, hp):
    """K members stacked, one of them idle at some steps: each member's trajectory is its own torch.optim's."""
    g = torch.Generator().manual_seed(0)
    K, shape, steps = 3, (4, 5), 6
    init = torch.randn(K, *shape, generator=g)
    grads = torch.randn(steps, K, *shape, generator=g)
    idle = {(2, 1), (3, 1), (5, 0)}  # (step, member) pairs without data
    stacked = init.clone().requires_grad_(True)
    opt = StackedOptimizer({"w": stacked}, kind, 0.1, **hp)
    for s in range(steps):
        stacked.grad = grads[s].clone()
        opt.step([(s, k) not in idle for k in range(K)])
    for k in range(K):
        p = init[k].clone().requires_grad_(True)
        ref = (torch.optim.Adam if kind == "adam" else torch.optim.SGD)([p], lr=0.1, **hp)
        for s in range(steps):
            if (s, k) in idle:
                continue
            p.grad = grads[s, k].clone()
            ref.step()
        assert torch.allclose(stacked[k], p, rtol=1e-6, atol=1e-7), (kind, k)
        if not any(kk == k for _, kk in idle):
            assert torch.equal(stacked[k], p)  # same operations, same order: bit for bit


# ------------------------------------------------------------------ ensemble == per-seed runs

@pytest.mark.parametrize("name,hp", [
    ("finetune", {}),
    ("finetune", {"optimizer": "adam", "lr": 0.002, "weight_decay": 1e-3}),
    ("replay", {"buffer_size": 40, "momentum": 0.9, "lr": 0.01}),
    ("ewc", {"ewc_lambda": 1000.0}),
    ("lwf", {"alpha": 1.0, "temperature": 2.0, "optimizer": "adam", "lr": 0.002}),
])
def test_ensemble_equals_per_seed_runs(data_root, name, hp):
    """Three seeds (own streams, inits, data orders) trained at once give each seed's own model.

    Parameters agree to float rounding, not bit for bit: the batched matrix products of vmap sum in another
    order than the per-seed ones (measured on this CPU: at most 1.8e-7 absolute after 3 experiences x 2
    epochs); predictions on every test set are the same.
    """
    seeds = (0, 1, 2)
    sts = streams(data_root, "permuted_digits", seeds, 3)
    ens = as_ensemble(name, sts, seeds, **hp)
    assert not ens.failed
    for k, (st, seed) in enumerate(zip(sts, seeds)):
        ref = per_seed(name, st, seed, **hp)
        for (n, a), b in zip(ref.model.named_parameters(), ens.members[k].model.parameters()):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (name, seed, n, float((a - b).abs().max()))
        for e in st:
            x = e.test.float_x()
            assert torch.equal(ref.predict(x).argmax(1), ens.members[k].predict(x).argmax(1))
    p0 = next(ens.members[0].model.parameters())
    assert not torch.equal(p0, next(ens.members[1].model.parameters()))  # own initialisation per seed


@pytest.mark.parametrize("name,hp", [("replay", {"buffer_size": 30, "optimizer": "adam", "lr": 0.002}),
                                     ("lwf", {"alpha": 1.0, "optimizer": "adam", "lr": 0.002})])
def test_ensemble_with_experiences_of_different_sizes(data_root, name, hp):
    """split_digits: each seed its own class order, so experiences differ in size and LwF's old classes differ:
    padded minibatches, members idle at some steps (own Adam step counts), one KL per member."""
    seeds = (0, 1)
    sts = streams(data_root, "split_digits", seeds, 5)
    assert [len(e.train) for e in sts[0]] != [len(e.train) for e in sts[1]]
    ens = as_ensemble(name, sts, seeds, **hp)
    for k, (st, seed) in enumerate(zip(sts, seeds)):
        ref = per_seed(name, st, seed, **hp)
        for a, b in zip(ref.model.parameters(), ens.members[k].model.parameters()):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_run_group_records_equal_the_per_seed_cells(data_root):
    cells = [CellSpec({"name": "permuted_digits", "n_experiences": 3}, {"name": "ewc", "ewc_lambda": 100.0, **TINY,
                                                                         "hidden": [16]}, s, data_root=str(data_root))
             for s in (0, 1)]
    alone = [execute_cell(c) for c in cells]
    together = run_group(cells)
    for a, b in zip(alone, together):
        assert a.ok and b.ok and a.cell_id == b.cell_id and a.seed == b.seed
        assert a.accuracy == b.accuracy and a.baseline_accuracy == b.baseline_accuracy
        assert a.metrics["acc"] == b.metrics["acc"] and a.state_bytes == b.state_bytes
        assert b.spec["ensemble"] == {"seeds": [0, 1]}


def test_a_failing_member_fails_alone(data_root):
    seeds = (0, 1, 2)
    sts = streams(data_root, "permuted_digits", seeds, 3)
    members = []
    for st, seed in zip(sts, seeds):
        with seeded(seed):
            members.append(resolve_strategy("finetune")(st.info, seed=seed, **TINY))

    def broken(exp):
        if exp.index == 1:
            raise RuntimeError("member 1 broke")

    members[1].after_experience = broken
    ens = Ensemble(members)
    for i in range(3):
        ens.train_experience([st[i].train_view() if k not in ens.failed else None for k, st in enumerate(sts)])
    assert set(ens.failed) == {1} and "member 1 broke" in str(ens.failed[1])
    ref = per_seed("finetune", sts[2], 2)
    for a, b in zip(ref.model.parameters(), members[2].model.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_what_an_ensemble_can_train(permuted):
    assert ensemble_problem(resolve_strategy("finetune"), {}) is None
    assert "dropout" in ensemble_problem(resolve_strategy("finetune"), {"dropout": 0.5})
    assert "batchnorm" in ensemble_problem(resolve_strategy("replay"), {"batchnorm": True})
    assert "not one of" in ensemble_problem(resolve_strategy("si"), {})
    with pytest.raises(UserError, match="differ in lr"):
        with seeded(0):
            Ensemble([resolve_strategy("finetune")(permuted.info, seed=s, **{**TINY, "lr": 0.01 * (s + 1)}) for s in (0, 1)])
    b = {"name": "split_digits"}
    cells = [CellSpec(b, {"name": "finetune", "lr": 0.1}, 0), CellSpec(b, {"name": "si"}, 0),
             CellSpec(b, {"name": "finetune", "lr": 0.1}, 1), CellSpec(b, {"name": "si"}, 1),
             CellSpec(b, {"name": "finetune", "lr": 0.2}, 0), CellSpec(b, {"name": "finetune", "dropout": 0.5}, 0),
             CellSpec(b, {"name": "finetune", "dropout": 0.5}, 1)]
    groups = [[(c.strategy.get("lr"), c.strategy["name"], c.seed) for c in g] for g in group_cells(cells)]
    assert groups == [[(0.1, "finetune", 0), (0.1, "finetune", 1)], [(None, "si", 0)], [(None, "si", 1)],
                      [(0.2, "finetune", 0)], [(None, "finetune", 0)], [(None, "finetune", 1)]]


def test_ensemble_executor_gives_the_serial_run(tmp_path, data_root):
    """A matrix through EnsembleExecutor: the same results.csv (accuracy, state) as the serial executor."""
    data = tiny_matrix(tmp_path / "a", "m", seeds=(0, 1), epochs=1)
    data["data_root"] = str(data_root)
    serial = parse_config(data)
    run_matrix(serial, quiet=True)
    data2 = {**data, "output": str(tmp_path / "b")}
    run_matrix(parse_config(data2), quiet=True, executor=EnsembleExecutor())
    assert stable_table(tmp_path / "a" / "m").equals(stable_table(tmp_path / "b" / "m"))


def test_written_out_mlp_is_vmap_of_functional_call(data_root):
    """The MLP fast path (batched products) gives vmap(functional_call)'s outputs, and training through either
    path gives the same models."""
    seeds = (0, 1)
    sts = streams(data_root, "permuted_digits", seeds, 2)
    fast = as_ensemble("ewc", sts, seeds, ewc_lambda=100.0, hidden=(16, 8))
    assert fast.layers == ["features.1", "features.3", "head"]
    x = torch.stack([st[0].test.float_x()[:50] for st in sts])
    assert torch.equal(fast.logits(fast.params, x), torch.func.vmap(fast._forward)(fast.params, x))
    members = []
    for st, seed in zip(sts, seeds):
        with seeded(seed):
            members.append(resolve_strategy("ewc")(st.info, seed=seed, **{**TINY, "ewc_lambda": 100.0, "hidden": (16, 8)}))
    generic = Ensemble(members)
    generic.layers = None  # vmap(functional_call) throughout
    for i in range(2):
        generic.train_experience([st[i].train_view() for st in sts])
    for a, b in zip(fast.params.values(), generic.params.values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ bench/reproduce.py

def _reproduce():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("clbench_bench_reproduce", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_reproduce_full_jobs_are_the_published_settings():
    """--full: the configs' hyperparameters at the published scale; costs counted by hand."""
    rep = _reproduce()
    args = rep.parse_args(["--full", "--device", "cpu"])
    jobs = {(j.method, j.strategy["name"], tuple(j.seeds)): j for j in rep.make_jobs(args)}
    ewc = jobs[("ewc", "ewc", (0, 1, 2))]
    assert ewc.ensemble and ewc.strategy["epochs"] == 30 and ewc.strategy["lr"] == 0.001
    assert ewc.strategy["hidden"] == [1000, 1000] and ewc.strategy["ewc_lambda"] == 1.0
    assert ewc.benchmark["train_per_task"] is None and ewc.benchmark["first_identity"] is False
    assert rep.mlp_macs([1000, 1000]) == 784 * 1000 + 1000 * 1000 + 1000 * 10
    assert rep.job_cost(ewc)["steps"] == 10 * 30 * 235  # ceil(60000 / 256) = 235 minibatches per epoch
    gem = jobs[("gem", "avalanche.GEM", (1,))]
    assert gem.benchmark["n_experiences"] == 20 and gem.benchmark["train_per_task"] == 1000
    assert gem.strategy["patterns_per_exp"] == 1000 and rep.job_cost(gem)["steps"] == 20 * 100
    agem = jobs[("agem", "avalanche.AGEM", (2,))]
    assert agem.benchmark["n_experiences"] == 17 and rep.job_cost(agem)["steps"] == 17 * 6000
    si = [j for j in jobs.values() if j.method == "si"]
    assert {j.strategy["name"] for j in si} == {"si", "avalanche.SynapticIntelligence"} and not any(j.ensemble for j in si)
    assert all(j.strategy["hidden"] == [2000, 2000] and j.strategy["epochs"] == 20 for j in si)
    assert len(jobs) == 1 + 6 + 1 + 3 + 1 + 3  # ewc, si x2 x3, lwf, gem x3 + finetune, agem x3


@pytest.mark.slow
def test_reproduce_smoke_runs_every_method(tmp_path, data_root, monkeypatch):
    """--smoke: the same code at CPU scale, every method, a table and a study record (about 20-60 s)."""
    rep = _reproduce()
    monkeypatch.setenv("CLBENCH_DATA", str(data_root))
    out = tmp_path / "study"
    code = rep.main(["--smoke", "--runs", str(tmp_path / "runs"), "--out", str(out)])
    assert code == 0
    table = (out / "reproduce.md").read_text()
    for method in ("ewc", "si", "lwf", "gem", "agem"):
        assert f"| {method} |" in table
    assert "`ewc` (ensemble)" in table and "`avalanche.AGEM`" in table and "FAILED" not in table
    from clbench.studies import read_study, stale_studies

    study = read_study(out)
    assert set(study.configs) == {f"configs/pmnist_{m}.yaml" for m in ("ewc", "si", "lwf", "gem", "agem")}
    assert sorted(study.files) == ["cells.json", "reproduce.csv", "reproduce.md"]
    import json

    cells = json.loads((out / "cells.json").read_text())
    assert {c["status"] for c in cells} == {"ok"} and len(cells) == 2 * 7  # 7 strategy entries x 2 seeds
    assert all(len(c["accuracy"]) == 3 for c in cells)
