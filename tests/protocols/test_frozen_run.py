"""The blurry stream generator, and frozen-feature strategies end to end through ``clbench run`` on a blurry config."""

from __future__ import annotations

import torch
import yaml

from clbench.benchmarks.blurry import with_blurry
from clbench.benchmarks.split import split_stream
from clbench.stream import TensorData
from clbench.protocols.cli import main


def _split(seed: int = 0):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(1000) % 10
    train = TensorData(torch.randn(1000, 4, generator=g), y)
    test = TensorData(torch.randn(200, 4, generator=g), y[:200])
    return split_stream("toy", (train, test), seed=seed, n_experiences=5)


def test_blurry_stream_mixes_blurry_classes_keeps_disjoint_ones_home_and_tests_disjoint():
    base = _split()
    s = with_blurry(base, {"disjoint_ratio": 0.5, "blurry_ratio": 0.2}, seed=3)
    disjoint = s.params["blurry"]["disjoint_classes"]
    assert len(disjoint) == 5
    home = {c: e.index for e in base for c in e.classes}
    all_train = torch.cat([e.train.y for e in s])
    assert sorted(all_train.tolist()) == sorted(torch.cat([e.train.y for e in base]).tolist())  # same samples
    for c in range(10):
        where = torch.tensor([int((e.train.y == c).sum()) for e in s])
        if c in disjoint:
            assert where[home[c]] == 100 and where.sum() == 100  # disjoint classes: only at home
        else:
            assert where[home[c]] == 80 and where.sum() == 100  # 20% of a blurry class elsewhere
    new = [set(e.info["new_classes"]) for e in s]
    assert set().union(*new) == set(range(10)) and sum(len(n) for n in new) == 10  # each class new exactly once
    for e in s:  # test sets: the experience's new classes only, disjoint across experiences
        assert set(e.test.y.tolist()) == set(e.info["new_classes"])
    assert torch.equal(with_blurry(base, {"disjoint_ratio": 0.5, "blurry_ratio": 0.2}, seed=3)[2].train.x, s[2].train.x)


def test_all_frozen_strategies_run_from_a_config(tmp_path, data_root):
    cfg = {
        "name": "frozen", "output": str(tmp_path / "runs"), "seeds": [0], "data_root": str(data_root),
        "benchmarks": [{"name": "split_digits", "n_experiences": 5, "backbone": "flatten", "label": "blurry_digits",
                        "blurry": {"disjoint_ratio": 0.5, "blurry_ratio": 0.1}}],
        "strategies": [{"name": "nmc"}, {"name": "gacil", "buffer_size": 256}, {"name": "linear", "epochs": 2},
                       {"name": "joint_linear", "epochs": 2}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--quiet"]) == 0
    import pandas as pd

    cells = pd.read_csv(tmp_path / "runs" / "frozen" / "cells.csv")
    assert (cells.status == "ok").all() and len(cells) == 4
    acc = cells.set_index("strategy")["acc"]
    assert acc["gacil"] > 0.8 and acc["nmc"] > 0.8
    assert acc["linear"] < acc["joint_linear"]  # the finetune head forgets
