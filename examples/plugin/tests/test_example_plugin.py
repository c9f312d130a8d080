"""The example plug-in passes clbench's conformance check, runs next to the baselines, and is exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parents[1]


def clbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clbench.protocols.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_the_plugin_is_registered_and_passes_the_conformance_check(tmp_path):
    p = clbench("check", "ridge_head", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 failed" in p.stdout and "ok   class-il: trains through the loop" in p.stdout


@pytest.mark.slow
def test_the_plugin_runs_next_to_the_baselines(tmp_path):
    p = clbench("run", str(HERE / "with_baselines.yaml"), "--output", str(tmp_path), "--quiet", "--no-report", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(list((tmp_path / "example_plugin" / "cells").glob("*.json"))) == 8


def test_the_ridge_head_is_the_joint_ridge_solution():
    from clbench.stream import StreamInfo, TensorData, TrainData, TrainView
    from clbench_example_plugin import RidgeHead

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=60)
    import torch

    head = RidgeHead(StreamInfo((5,), 3, "class-il"), alpha=0.5)
    for part in (slice(0, 20), slice(20, 60)):
        head.train_experience(TrainView(0, 0, (0, 1, 2), TrainData(TensorData(torch.from_numpy(x[part]), torch.from_numpy(y[part])))))
    t = np.eye(3)[y]
    w = np.linalg.solve(x.T.astype(np.float64) @ x + 0.5 * np.eye(5), x.T.astype(np.float64) @ t)
    assert np.allclose(head.weights.numpy(), w, atol=1e-10)
