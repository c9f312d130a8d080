"""Helpers shared by the tests (not a test module; importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from clbench.benchmarks.registry import build_stream
from clbench.protocols.loop import run_stream
from clbench.protocols.runner import seeded
from clbench.results import CellRecord
from clbench.strategies.registry import resolve_strategy

TESTS = Path(__file__).resolve().parent
PLUGINS = TESTS / "plugins"

#: the columns of results.csv that must not depend on the executor (timings and memory do)
STABLE = ["benchmark", "strategy", "seed", "trained_exp", "evaluated_exp", "accuracy", "n_test", "state_bytes", "cell_id"]


def run_cell(name: str, stream, tiny: dict, seed: int = 0, **hp):
    """One cell as the runner runs it (model initialised under the seeded global generator): (strategy, record)."""
    with seeded(seed):
        strategy = resolve_strategy(name)(stream.info, seed=seed, **{**tiny, **hp})
        record = run_stream(strategy, stream, CellRecord("t", stream.name, name, seed))
    return strategy, record


def permuted_digits(data_root, n: int = 3):
    """``n`` experiences of permuted scikit-learn digits (seed 0)."""
    return build_stream({"name": "permuted_digits", "n_experiences": n}, 0, data_root)


def tiny_matrix(output: Path, name: str, *, seeds: tuple[int, ...] = (0, 1), epochs: int = 2, hidden: int = 16,
                **extra: Any) -> dict[str, Any]:
    """split_digits (5 experiences) x {finetune, replay} x seeds, tiny MLPs: a few seconds per matrix."""
    common = {"epochs": epochs, "lr": 0.05, "batch_size": 32, "hidden": [hidden]}
    return {"name": name, "output": str(output), "seeds": list(seeds),
            "benchmarks": [{"name": "split_digits", "n_experiences": 5}],
            "strategies": [{"name": "finetune", **common}, {"name": "replay", "buffer_size": 50, **common}], **extra}


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stable_table(run_dir: Path) -> pd.DataFrame:
    """results.csv without the executor-dependent columns, in a canonical row order."""
    df = pd.read_csv(run_dir / "results.csv")[STABLE]
    return df.sort_values(STABLE[:5]).reset_index(drop=True)


def folder_digest(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every file below a run folder (to show that nothing was lost or altered)."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def child_env(extra_path: Path | None = None, **env: str) -> dict[str, str]:
    """The environment of a child ``clbench``: this one, with the test plug-ins (and ``extra_path``) importable."""
    paths = [str(PLUGINS)] + ([str(extra_path)] if extra_path else []) + [os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "PYTHONUNBUFFERED": "1", **env}


def clbench(*args: str, **kwargs: Any) -> subprocess.Popen:
    """Start ``clbench ARGS`` as a child in its own process group (so a test can kill the whole group)."""
    env = kwargs.pop("env", None) or child_env()
    return subprocess.Popen([sys.executable, "-m", "clbench.protocols.cli", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def run_clbench(*args: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``clbench ARGS`` to completion in a child process; returns its exit code and output."""
    env = kwargs.pop("env", None) or child_env()
    return subprocess.run([sys.executable, "-m", "clbench.protocols.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def strategy_module(folder: Path, name: str, body: str) -> str:
    """Write ``<folder>/<name>.py`` holding strategy classes (``body``); return the module name."""
    header = ("import os, signal, sys, time\nimport torch\nfrom clbench.strategies.base import Strategy\n"
              "from clbench.strategies.baselines import Finetune\n\n")
    (folder / f"{name}.py").write_text(header + body)
    return name


def set_threads(n: int) -> int:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return old
