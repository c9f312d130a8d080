"""Shared fixtures. Real data comes from $CLBENCH_DATA (CI points it at ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
