"""A tuning run killed with SIGKILL in the middle of its study continues the same study when restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import child_env

from clbench.protocols.tune import run_tune
from clbench.protocols.tune_config import parse_tune_config

pytestmark = pytest.mark.slow


def study_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    names = [n for n in optuna.get_all_study_names(storage=url) if "/tuning/" in n]
    return optuna.load_study(study_name=names[0], storage=url).get_trials() if names else []


def test_killed_tuning_run_resumes_the_same_study(tmp_path, data_root):
    budget = 6
    data = {
        "name": "killed", "output": str(tmp_path / "runs"), "seeds": [0], "data_root": str(data_root),
        "tuning": {"name": "split_digits", "classes": [0, 1, 2, 3, 4], "n_experiences": 5},
        "evaluation": {"name": "split_digits", "classes": [5, 6, 7, 8, 9], "n_experiences": 5},
        # 0.15 s per experience: a trial lasts about 0.75 s, long enough to be killed in its middle
        "strategies": [{"name": "tune_toys:ToyNCM", "shift": 0, "delay": 0.15}],
        "search": {"sampler": "random", "n_trials": budget, "seeds": [0], "protocol": "two-phase"},
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data))
    url = f"sqlite:///{tmp_path / 'runs' / 'killed' / 'tune.db'}"
    env = child_env(OMP_NUM_THREADS="1")
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "clbench.protocols.cli", "tune", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if (tmp_path / "runs" / "killed" / "tune.db").exists():
                try:
                    trials = study_trials(url)
                except Exception:  # noqa: BLE001 - the child may be creating the tables right now
                    continue
                done = [t for t in trials if t.state.name == "COMPLETE"]
                if len(done) >= 2 and any(t.state.name == "RUNNING" for t in trials):
                    break  # kill it in the middle of a trial
        assert proc.poll() is None, (tmp_path / "log.txt").read_text()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    before = {t.number: (t.state.name, t.params, t.value) for t in study_trials(url)}
    completed = {n: v for n, v in before.items() if v[0] == "COMPLETE"}
    assert 2 <= len(completed) < budget
    assert not (tmp_path / "runs" / "killed" / "tune.json").exists()  # it really died before finishing

    summary = run_tune(parse_tune_config(data, default_name="tune"), quiet=True)
    after = {t.number: (t.state.name, t.params, t.value) for t in study_trials(url)}
    # the same study: every trial completed before the kill is still there, unchanged
    assert all(after[n] == v for n, v in completed.items())
    # it grew to the budget of completed trials, and did not start afresh
    assert sum(v[0] == "COMPLETE" for v in after.values()) == budget
    assert len(after) > len(before) and max(after) < budget + len(before)
    # the trial caught RUNNING by the kill is marked failed and its parameters run again
    assert any(v[0] == "RUNNING" for v in before.values())
    for n, (state, params, _) in before.items():
        if state == "RUNNING":
            assert after[n][0] == "FAIL"
            assert any(v[0] == "COMPLETE" and v[1] == params for m, v in after.items() if m > n)
    row = summary["strategies"][0]
    assert len([t for t in row["tuning"]["trials"] if t["state"] == "COMPLETE"]) == budget
    assert list(row["phase2"]["per_seed"]) == [0]  # phase 2 ran once on its single seed
    assert json.loads((tmp_path / "runs" / "killed" / "tune.json").read_text())["run"] == "killed"
