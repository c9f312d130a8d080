"""Shared fixtures. Real data comes from $CLBENCH_DATA (CI points it at ../shared/data).

Every test runs with its own cache folder, downloads disabled, and one torch thread (tiny models on a
shared machine spin otherwise). End-to-end tests that start whole ``clbench`` processes are marked
``slow`` (``make test-fast`` leaves them out).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data folder: $CLBENCH_DATA, else ../shared/data next to the repository."""
    root = Path(os.environ.get("CLBENCH_DATA") or REPO.parent / "shared" / "data")
    if not (root / "MNIST" / "raw").exists():
        pytest.fail(f"real data not found under {root}; set CLBENCH_DATA to the shared data folder")
    return root


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Every test gets its own cache folder and no downloads (unless a test says otherwise)."""
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLBENCH_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _one_thread_and_seeded():
    """One torch thread, and seeded global generators, for every test; both restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = random.getstate(), np.random.get_state()
        random.seed(0)
        np.random.seed(0)
        yield
        random.setstate(state[0])
        np.random.set_state(state[1])
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def permuted(data_root):
    """Three experiences of permuted scikit-learn digits (seed 0)."""
    from helpers import permuted_digits

    return permuted_digits(data_root)
