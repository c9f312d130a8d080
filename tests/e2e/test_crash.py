"""Crash safety: SIGKILL mid-matrix then resume; a second run on the same folder refuses."""

from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest
from helpers import clbench, folder_digest, stable_table, strategy_module, tiny_matrix, write_config

from clbench.protocols.cli import main
from clbench.protocols.config import parse_config
from clbench.protocols.runner import run_matrix

pytestmark = pytest.mark.slow


def _wait_for(predicate, proc, limit: float = 240.0) -> None:
    end = time.monotonic() + limit
    while not predicate():
        assert proc.poll() is None, f"clbench run ended early: {proc.communicate()}"
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.05)


def test_sigkill_mid_matrix_then_rerun_completes_every_cell_exactly_once(tmp_path):
    data = tiny_matrix(tmp_path / "runs", "m", seeds=(0, 1, 2), epochs=4, hidden=32)  # 6 cells
    cfg_file = write_config(tmp_path / "m.yaml", data)
    cells = tmp_path / "runs" / "m" / "cells"
    proc = clbench("run", str(cfg_file), "--workers", "2", "--quiet", "--no-report")
    _wait_for(lambda: cells.is_dir() and any(cells.glob("*.json")), proc)
    first = json.loads(next(cells.glob("*.json")).read_text())
    time.sleep(0.5 * (first["finished"] - first["started"]))  # mid-cell of the second round: >= 2 rounds remain
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, the forkserver and the workers, at once
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # consistent after the kill: every record parses, the table only holds recorded cells
    recorded = {json.loads(f.read_text())["cell_id"] for f in cells.glob("*.json")}
    assert 1 <= len(recorded) < 6
    table = tmp_path / "runs" / "m" / "results.csv"
    if table.exists():
        assert set(pd.read_csv(table).cell_id) <= recorded
    (cells / ".abc.json.x1y2.tmp").write_text("{")  # what a kill between mkstemp and rename leaves

    assert main(["run", str(cfg_file), "--workers", "2", "--quiet", "--no-report"]) == 0
    assert not list(cells.glob(".*.tmp"))
    df = pd.read_csv(table)
    assert df.cell_id.nunique() == 6 and len(df) == 6 * 5 * 5  # every cell, every (trained, evaluated) pair
    assert not df.duplicated(["cell_id", "trained_exp", "evaluated_exp"]).any()

    run_matrix(parse_config(dict(data, output=str(tmp_path / "ref"))), quiet=True)  # uninterrupted, serial
    assert stable_table(tmp_path / "runs" / "m").equals(stable_table(tmp_path / "ref" / "m"))


def test_second_run_on_the_same_folder_refuses_and_changes_nothing(tmp_path):
    mod = strategy_module(tmp_path, "slow", "class Slow(Finetune):\n    def train_experience(self, exp):\n        time.sleep(120)\n")
    data = tiny_matrix(tmp_path / "runs", "m", seeds=(0,))
    data["strategies"] = [{"name": f"{mod}:Slow", "hidden": [16]}]
    cfg_file = write_config(tmp_path / "m.yaml", data)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    first = clbench("run", str(cfg_file), "--quiet", env=env)
    try:
        run_dir = tmp_path / "runs" / "m"
        _wait_for(lambda: (run_dir / "config.yaml").exists(), first)
        before = folder_digest(run_dir)
        second = clbench("run", str(cfg_file), "--quiet", env=env)
        out, err = second.communicate(timeout=240)
        assert second.returncode == 2
        assert "in use by another clbench process" in err and "Traceback" not in err
        assert first.poll() is None  # the first run goes on
        assert folder_digest(run_dir) == before
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
