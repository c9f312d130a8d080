"""Phase-1 trials on the executors: 2 workers give the same study as 1; failed trials show as failed; the lock is
held for the whole command."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
from filelock import FileLock, Timeout

from clbench.protocols.cli import main
from clbench.protocols.executors import ProcessExecutor, SerialExecutor
from clbench.protocols.tune import run_tune
from clbench.protocols.tune_config import parse_tune_config

TOY = "tune_toys:ToyNCM"


def _config(tmp_path, name, search, strategies=None):
    return {"name": name, "output": str(tmp_path / "runs"), "seeds": [0],
            "tuning": {"name": "split_digits", "classes": [0, 1, 2, 3, 4], "n_experiences": 5},
            "evaluation": {"name": "split_digits", "classes": [5, 6, 7, 8, 9], "n_experiences": 5},
            "strategies": strategies or [{"name": TOY, "shift": 0}],
            "search": {"sampler": "random", "n_trials": 6, "seeds": [0, 1], "protocol": "two-phase", **search}}


def _trials(summary):
    return [(t["number"], t["state"], t["params"], t["value"]) for t in summary["strategies"][0]["tuning"]["trials"]]


@pytest.mark.slow
def test_two_workers_give_the_same_study_as_one(tmp_path):
    one = run_tune(parse_tune_config(_config(tmp_path, "one", {})), quiet=True, executor=SerialExecutor())
    two = run_tune(parse_tune_config(_config(tmp_path, "two", {})), quiet=True, executor=ProcessExecutor(workers=2))
    assert len(_trials(one)) == 6 and _trials(one) == _trials(two)
    assert one["strategies"][0]["chosen"] == two["strategies"][0]["chosen"]


def test_pruning_by_the_median_of_finished_trials_stops_a_trial_inside_its_cell(tmp_path):
    search = {"n_trials": 10, "pruning": {"after": 2, "startup_trials": 3}, "seeds": [0]}
    summary = run_tune(parse_tune_config(_config(tmp_path, "p", search)), quiet=True)
    trials = summary["strategies"][0]["tuning"]["trials"]
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    done = [t for t in trials if t["state"] == "COMPLETE"]
    assert len(pruned) + len(done) == 10 and pruned
    for t in pruned:  # below the median of the trials finished before it, at a step <= 2
        step, value = max(t["intermediate"].items())
        before = [d["intermediate"][step] for d in done if d["number"] < t["number"] and step in d["intermediate"]]
        assert int(step) <= 2 and len(before) >= 3 and value < pd.Series(before).median()


def test_failed_trials_are_recorded_failed_with_their_reason(tmp_path, capsys):
    strategies = [{"name": "finetune", "epochs": 1, "hidden": [16], "batch_size": 32, "search_space": {"lr": [1e6, 0.05]}}]
    data = _config(tmp_path, "f", {"sampler": "grid", "seeds": [0]}, strategies)
    import yaml

    (tmp_path / "f.yaml").write_text(yaml.safe_dump(data))
    assert main(["tune", str(tmp_path / "f.yaml"), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "FAILED (seed 0: CellFailure: training diverged" in out and "acc " in out and "%" in out
    trials = pd.read_csv(tmp_path / "runs" / "f" / "trials.csv")
    failed = trials[trials.state == "FAIL"]
    assert len(failed) == 1 and "training diverged" in failed.error.iloc[0] and pd.isna(failed.value.iloc[0])
    assert "lr=0.05" in out  # chosen values with 3 significant digits


def test_the_run_folder_lock_is_held_for_the_whole_command(tmp_path, monkeypatch):
    tc = parse_tune_config(_config(tmp_path, "l", {"n_trials": 2, "seeds": [0]}))
    seen = []
    import clbench.protocols.tune as tune

    real = tune.run_matrix

    def probe(*args, **kw):  # between phase 1 and phase 2, another process must still be refused
        lock = FileLock(str(tc.run_dir / ".lock"))
        try:
            lock.acquire(timeout=0)
            seen.append("acquired")
            lock.release()
        except Timeout:
            seen.append("refused")
        return real(*args, **kw)

    monkeypatch.setattr(tune, "run_matrix", probe)
    run_tune(tc, quiet=True)
    assert seen == ["refused"]


def test_a_trial_failing_on_its_first_seed_ignores_its_other_seeds_cells(tmp_path):
    """The later seeds' cells of a failed trial came back after the trial was told (KeyError before)."""
    strategies = [{"name": "finetune", "epochs": 1, "hidden": [16], "batch_size": 32, "search_space": {"lr": [1e6]}}]
    tc = parse_tune_config(_config(tmp_path, "k", {"sampler": "grid", "seeds": [0, 1]}, strategies))
    summary = run_tune(tc, quiet=True)
    (trial,) = summary["strategies"][0]["tuning"]["trials"]
    assert trial["state"] == "FAIL" and "seed 0: CellFailure: training diverged" in trial["error"]
