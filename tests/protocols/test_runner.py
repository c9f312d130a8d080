"""The evaluation loop, the matrix runner and the CLI on real (bundled) data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clbench.benchmarks.registry import build_stream
from clbench.stream import TrainView
from clbench.protocols.cli import main
from clbench.protocols.config import CellSpec, parse_config
from clbench.protocols.loop import run_stream
from clbench.results import CellRecord
from clbench.protocols.runner import execute_cell

from helpers import child_env, run_clbench
from spy_strategy import Spy

SMALL = {"name": "finetune", "epochs": 2, "lr": 0.05, "batch_size": 32, "hidden": [32]}


def test_spy_never_sees_test_data_or_future():
    stream = build_stream({"name": "split_digits", "n_experiences": 5}, seed=0)
    spy = Spy(stream.info)
    run_stream(spy, stream, CellRecord("x", "b", "s", 0))
    assert [c.index for c in spy.calls] == [0, 1, 2, 3, 4]  # one call per experience, in order
    for exp, call in zip(stream, spy.calls):
        assert type(call) is TrainView
        assert set(vars(call)) == {"index", "task_id", "classes", "train"}  # no test data, no stream
        # training inputs in predict's domain (floats in [0, 1]), the stored bytes under raw
        assert torch.equal(call.train.x, exp.train.x.float() / 255) and torch.equal(call.train.y, exp.train.y)
        assert torch.equal(call.train.raw.x, exp.train.x)
        assert call.classes == exp.classes


def _cell(seed=0, strategy=SMALL, bench=None):
    return CellSpec(bench or {"name": "split_digits", "n_experiences": 5}, dict(strategy), seed)


def test_same_seed_same_matrix_and_different_seed_differs():
    a, b, c = execute_cell(_cell(0)), execute_cell(_cell(0)), execute_cell(_cell(1))
    assert a.status == "ok", a.error
    assert a.accuracy == b.accuracy and a.baseline_accuracy == b.baseline_accuracy
    assert a.accuracy != c.accuracy
    assert np.array(a.accuracy).shape == (5, 5)
    assert a.metrics["acc"] == pytest.approx(np.mean(a.accuracy[-1]))
    assert len(a.train_seconds) == 5 and min(a.peak_memory_mb) > 0 and min(a.state_bytes) > 0


@pytest.mark.parametrize("name", ["replay", "joint"])
def test_baselines_beat_finetune_on_split_digits(name):
    ft = execute_cell(_cell(0))
    other = execute_cell(_cell(0, {**SMALL, "name": name, "epochs": 4}))
    assert other.status == "ok", other.error
    assert other.metrics["acc"] > ft.metrics["acc"] + 0.2  # finetune forgets everything but the last pair


def test_failing_cell_is_recorded_with_reason():
    r = execute_cell(_cell(0, {**SMALL, "lr": 1e10, "optimizer": "sgd"}))
    assert r.status == "failed" and "non-finite" in r.error


def _write(tmp_path, data, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(p)


def test_run_writes_folder_and_resume_trains_nothing(tmp_path, capsys):
    cfg = {"name": "r", "output": str(tmp_path / "runs"), "seeds": [0, 1],
           "benchmarks": [{"name": "split_digits", "n_experiences": 5}],
           "strategies": [SMALL, {**SMALL, "name": "replay", "buffer_size": 50}]}
    path = _write(tmp_path, cfg)
    assert main(["run", path, "--quiet", "--no-report"]) == 0
    run = tmp_path / "runs" / "r"
    records = sorted((run / "cells").glob("*.json"))
    assert len(records) == 4
    import pandas as pd

    df = pd.read_csv(run / "results.csv")
    assert len(df) == 4 * 5 * 5
    assert {"benchmark", "strategy", "seed", "trained_exp", "evaluated_exp", "accuracy", "train_seconds", "peak_memory_mb", "state_bytes"} <= set(df.columns)
    assert not df.duplicated(["strategy", "seed", "trained_exp", "evaluated_exp"]).any()
    mtimes = {p: p.stat().st_mtime_ns for p in records}
    assert yaml.safe_load((run / "config.yaml").read_text())["seeds"] == [0, 1]
    capsys.readouterr()
    assert main(["run", path, "--no-report"]) == 0
    out = capsys.readouterr()
    assert "0 to run" in out.out
    assert {p: p.stat().st_mtime_ns for p in records} == mtimes  # nothing retrained or rewritten
    # adding a seed runs only the new cells
    assert main(["run", path, "--seeds", "0", "1", "2", "--quiet", "--no-report"]) == 0
    assert len(list((run / "cells").glob("*.json"))) == 6
    assert {p: p.stat().st_mtime_ns for p in records} == mtimes


def test_failed_cell_does_not_stop_the_matrix(tmp_path):
    cfg = {"name": "f", "output": str(tmp_path), "benchmarks": [{"name": "split_digits"}],
           "strategies": [{**SMALL, "lr": 1e10}, SMALL]}
    assert main(["run", _write(tmp_path, cfg), "--quiet", "--no-report"]) == 1
    import pandas as pd

    cells = pd.read_csv(tmp_path / "f" / "cells.csv")
    assert sorted(cells.status) == ["failed", "ok"]
    assert cells.loc[cells.status == "failed", "error"].str.contains("non-finite").all()
    assert np.isnan(cells.loc[cells.status == "failed", "acc"]).all()


def test_plugged_in_strategy_by_module_path(tmp_path):
    cfg = {"name": "p", "output": str(tmp_path), "benchmarks": [{"name": "split_digits"}],
           "strategies": [{"name": "spy_strategy:Spy", "note": "hi"}]}
    assert main(["run", _write(tmp_path, cfg), "--quiet", "--no-report"]) == 0
    rec = json.loads(next((tmp_path / "p" / "cells").glob("*.json")).read_text())
    assert rec["strategy"] == "spy_strategy:Spy" and rec["status"] == "ok"


def _cli(args, tmp_path, **env):
    return run_clbench(*args, cwd=tmp_path, env=child_env(CLBENCH_OFFLINE="1", **env))


@pytest.mark.parametrize("case, expect", [
    ({"strategies": [{"name": "finetun"}]}, "unknown strategy 'finetun'; valid names:"),
    ({"stratgies": []}, "unknown config key 'stratgies'; valid keys:"),
    ({"strategies": [{"name": "finetune", "learning_rate": 1}]}, "has no hyperparameter(s) ['learning_rate']; valid:"),
    ({"benchmarks": [{"name": "split_digits", "n_experiences": 20}]}, "n_experiences=20 is more than the 10 classes"),
    ({"strategies": [{"name": "spy_strategy:NotAStrategy"}]}, "is not a subclass of clbench.strategies.Strategy"),
])
def test_bad_input_gives_one_clear_error(tmp_path, case, expect):
    cfg = {"output": str(tmp_path / "runs"), "benchmarks": [{"name": "split_digits"}], "strategies": [SMALL]}
    cfg.update(case)
    if "stratgies" in case:
        cfg["strategies"] = [SMALL]
    p = _cli(["run", _write(tmp_path, cfg), "--quiet", "--no-report"], tmp_path)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert expect in p.stderr + p.stdout, p.stderr  # config errors on stderr; a stream-size error fails its cell


def test_malformed_yaml_and_missing_file(tmp_path):
    p = _cli(["run", _write(tmp_path, "benchmarks: [\n  {name: split_digits\nstrategies: x: y\n")], tmp_path)
    assert p.returncode == 2 and "not valid YAML at line" in p.stderr and "Traceback" not in p.stderr
    p = _cli(["run", str(tmp_path / "nope.yaml")], tmp_path)
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_missing_dataset_offline_is_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = {"output": str(tmp_path / "runs"), "benchmarks": [{"name": "split_mnist"}], "strategies": [SMALL]}
    path = _write(tmp_path, cfg)
    # refused before anything runs: one error naming the folder, the files and the fix
    p = _cli(["run", path, "--quiet", "--no-report", "--data-root", str(empty)], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "nothing was run" in p.stderr
    assert not list((tmp_path / "runs").rglob("*.json"))
    assert f"not found under {empty / 'MNIST/raw'}" in p.stdout + p.stderr
    assert "train-images-idx3-ubyte" in p.stdout + p.stderr


def test_quickstart_config_is_valid():
    from clbench.protocols.config import quickstart

    cfg = parse_config(quickstart(), default_name="quickstart")
    assert {b["name"] for b in cfg.benchmarks} == {"split_digits", "permuted_digits"}
    assert {s["name"] for s in cfg.strategies} == {"finetune", "replay", "joint"} and cfg.seeds == [0, 1]


def test_foreign_json_in_cells_folder_is_ignored(tmp_path):
    cfg = {"name": "j", "output": str(tmp_path), "benchmarks": [{"name": "split_digits"}], "strategies": [SMALL]}
    cells = tmp_path / "j" / "cells"
    cells.mkdir(parents=True)
    (cells / "notes.json").write_text('{"hello": 1}')
    (cells / "list.json").write_text("[1, 2]")
    assert main(["run", _write(tmp_path, cfg), "--quiet", "--no-report"]) == 0
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "j" / "cells.csv")) == 1


def test_written_files_are_readable_by_others(tmp_path):
    from clbench.files import atomic_write_text

    atomic_write_text(tmp_path / "a.csv", "x\n")
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644
