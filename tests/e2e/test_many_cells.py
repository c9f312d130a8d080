"""Thousands of cells: a 2,000-cell matrix of tiny cells, killed with SIGKILL in its middle and resumed, and
the same cells on the process pool and on Ray giving the same table.

The cells: ToyNCM (tests/plugins/tune_toys.py: class means, no training loop) with 500 values of its noise
knob, on two halves of scikit-learn's digits (classes 0-4 and 5-9, one experience each), seeds 0 and 1.

* serial (``clbench run``, the default ``--workers 1``): all 2,000 cells, killed after about half of them
  and resumed: every cell recorded exactly once, the records written before the kill untouched;
* the local process pool (``--workers 2``, a fresh process per cell) and Ray (a local instance, 2 CPUs): the
  first ``CLBENCH_MANY_CELLS_SLICE`` cells of the same matrix (default 200; a fresh process per cell costs
  about 0.1-0.3 s on the 2-core test machine, so 2,000 would take minutes: ``bench/scaling.py`` runs them
  all), whose rows must equal the serial run's rows of the same cells.

Timings (per-cell overhead, resume start-up) are measured by ``bench/scaling.py``, not asserted here.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import PLUGINS, STABLE, child_env, write_config

from clbench.protocols.cli import main
from clbench.protocols.config import parse_config
from clbench.protocols.executors import ProcessExecutor, RayExecutor
from clbench.protocols.runner import run_matrix

pytestmark = pytest.mark.slow

HALVES = ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])


def many_cells(output: Path, name: str, variants: int) -> dict:
    """2 benchmarks x 2 seeds x ``variants`` ToyNCM knobs = ``4 * variants`` tiny cells (the cells of a smaller
    matrix are cells of every larger one)."""
    return {"name": name, "output": str(output), "seeds": [0, 1],
            "benchmarks": [{"name": "split_digits", "classes": c, "n_experiences": 1} for c in HALVES],
            "strategies": [{"name": "tune_toys:ToyNCM", "shift": 0, "knob": k / 1000} for k in range(variants)]}


def count_records(cells: Path) -> int:
    try:
        return sum(1 for e in os.scandir(cells) if e.name.endswith(".json"))
    except FileNotFoundError:
        return 0


def table(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results.csv")[STABLE].sort_values("cell_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    """The 2,000-cell matrix run by ``clbench run`` in a child process, SIGKILLed after about 1,000 cells,
    then resumed by a plain rerun. Yields the run folder and the record digests taken right after the kill."""
    tmp = tmp_path_factory.mktemp("many")
    data = many_cells(tmp / "runs", "many", 500)
    cfg = write_config(tmp / "many.yaml", data)
    run_dir = tmp / "runs" / "many"
    cells = run_dir / "cells"
    log = open(tmp / "run.log", "w")  # the progress bar goes here (a pipe nobody reads would block the child)
    proc = subprocess.Popen([sys.executable, "-m", "clbench.protocols.cli", "run", str(cfg), "--no-report"],
                            env=child_env(OMP_NUM_THREADS="1"), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while count_records(cells) < 1000:
            assert proc.poll() is None, f"clbench run ended early: {(tmp / 'run.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "timed out waiting for half of the cells"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in cells.glob("*.json")}
    assert 1000 <= len(before) < 2000
    assert main(["run", str(cfg), "--no-report", "--quiet"]) == 0  # the resume
    yield data, run_dir, before


def test_2000_cells_killed_mid_run_resume_with_every_cell_recorded_once(serial_run):
    data, run_dir, before = serial_run
    expected = {c.cell_id for c in parse_config(data).cells()}
    assert len(expected) == 2000
    after = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in (run_dir / "cells").glob("*.json")}
    assert {name[:-5] for name in after} == expected
    assert all(after[name] == digest for name, digest in before.items())  # nothing recorded before the kill was redone
    cells = pd.read_csv(run_dir / "cells.csv")
    assert len(cells) == 2000 and set(cells.cell_id) == expected and (cells.status == "ok").all()
    results = table(run_dir)
    assert len(results) == 2000 and not results.cell_id.duplicated().any()  # one experience: one row per cell
    assert results.accuracy.between(0, 1).all() and results.accuracy.nunique() > 100  # the knob changes the result


def slice_size() -> int:
    return int(os.environ.get("CLBENCH_MANY_CELLS_SLICE", "200"))


def slice_data(output: Path, name: str) -> dict:
    n = slice_size()
    assert n % 4 == 0 and 4 <= n <= 2000, "CLBENCH_MANY_CELLS_SLICE must be a multiple of 4 up to 2000"
    return many_cells(output, name, n // 4)


def test_the_process_pool_gives_the_serial_rows(serial_run, tmp_path):
    _, run_dir, _ = serial_run
    data = slice_data(tmp_path / "runs", "pool")
    run_matrix(parse_config(data), quiet=True, executor=ProcessExecutor(2, threads=1))
    pool = table(tmp_path / "runs" / "pool")
    assert len(pool) == slice_size()
    serial = table(run_dir)
    assert pool.equals(serial[serial.cell_id.isin(set(pool.cell_id))].reset_index(drop=True))


def test_ray_gives_the_serial_rows(serial_run, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    _, run_dir, _ = serial_run
    data = slice_data(tmp_path / "runs", "ray")
    # Ray's workers inherit this environment: make the test plug-in importable there
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH", "")) if p))
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as temp:  # short: Ray's socket paths must stay short
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
        try:
            run_matrix(parse_config(data), quiet=True, executor=RayExecutor())
        finally:
            ray.shutdown()
    got = table(tmp_path / "runs" / "ray")
    assert len(got) == slice_size()
    serial = table(run_dir)
    assert got.equals(serial[serial.cell_id.isin(set(got.cell_id))].reset_index(drop=True))
