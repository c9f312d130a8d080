"""Tracker export round trips: what `clbench export` / `--track` write is read back with each tracker's own reader.

One module-scoped run folder (split_digits, 5 experiences; finetune, hidden [16], 1 epoch; seeds 0 and 1),
made by ``clbench run --track tensorboard`` (so the run itself exercises the per-cell callback) and with its
report. Expected values come from the cell JSON files as written to disk, with the seen accuracy a_i
recomputed here by hand (sum_{j<=i} n_j R[i][j] / sum_{j<=i} n_j), not through clbench's code.

Readers: TensorBoard's ``EventAccumulator``; for MLflow a real ``mlflow server`` (SQLite backend) on
127.0.0.1 and ``MlflowClient`` (slow); for W&B offline mode and the run's ``.wandb`` transaction log,
decoded with W&B's own protobuf schema (wandb 0.2x+ no longer ships a Python reader for the log; its
LevelDB-style framing is parsed below, checksums verified).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
import yaml

from clbench.protocols.cli import main
from clbench.reports.trackers import TensorBoardTracker, TrackerCallback

SEEDS = (0, 1)
STRATEGY = {"name": "finetune", "epochs": 1, "lr": 0.05, "batch_size": 32, "hidden": [16]}


@pytest.fixture(scope="module")
def made(tmp_path_factory, data_root) -> dict[str, Path]:
    """The run folder (made with ``--track tensorboard``) and the folder that tracking wrote."""
    root = tmp_path_factory.mktemp("trackers")
    cfg = {"name": "tiny", "seeds": list(SEEDS), "benchmarks": [{"name": "split_digits", "n_experiences": 5}],
           "strategies": [STRATEGY]}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLBENCH_CACHE", str(root / "cache"))
        code = main(["run", str(path), "--output", str(root), "--data-root", str(data_root), "--quiet",
                     "--track", "tensorboard", "--track-uri", str(root / "tracked")])
    assert code == 0
    assert (root / "tiny" / "report" / "report.md").is_file()
    return {"run": root / "tiny", "tracked": root / "tracked"}


def cells(run: Path) -> list[dict]:
    """The cell records as JSON, straight from disk."""
    out = [json.loads(p.read_text()) for p in sorted((run / "cells").glob("*.json"))]
    assert sorted(c["seed"] for c in out) == list(SEEDS)
    return out


def seen_by_hand(cell: dict) -> list[float]:
    R, n = cell["accuracy"], cell["test_sizes"]
    return [sum(n[j] * R[i][j] for j in range(i + 1)) / sum(n[: i + 1]) for i in range(len(R))]


def finite_metrics(cell: dict) -> dict[str, float]:
    return {k: v for k, v in cell["metrics"].items() if isinstance(v, (int, float)) and v == v}


def report_files(run: Path) -> dict[str, int]:
    rep = run / "report"
    return {str(p.relative_to(rep)): p.stat().st_size for p in rep.rglob("*") if p.is_file()}


def with_changed_cell(run: Path, dest: Path) -> tuple[Path, str]:
    """A copy of the run folder (same name) whose seed-1 record finished later (as a rerun would): (copy, its id)."""
    copy = dest / run.name
    shutil.copytree(run, copy)
    for p in (copy / "cells").glob("*.json"):
        data = json.loads(p.read_text())
        if data["seed"] == 1:
            data["finished"] += 60.0
            p.write_text(json.dumps(data))
            return copy, data["cell_id"]
    raise AssertionError("no seed-1 cell")


def export(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["export", *args]) == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------- TensorBoard


def accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def check_tensorboard_cell(folder: Path, cell: dict) -> None:
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    acc = accumulator(folder)
    seen = [(e.step, e.value) for e in acc.Scalars("seen_accuracy")]
    assert [s for s, _ in seen] == list(range(5))
    assert [v for _, v in seen] == pytest.approx(seen_by_hand(cell), abs=1e-6)  # float32 in event files
    for j in range(5):
        got = [(e.step, e.value) for e in acc.Scalars(f"accuracy/exp_{j}")]
        assert got == [(i, pytest.approx(cell["accuracy"][i][j], abs=1e-6)) for i in range(5)]
    for k, v in finite_metrics(cell).items():
        (event,) = acc.Scalars(f"final/{k}")
        assert (event.step, event.value) == (4, pytest.approx(v, rel=1e-6))
    assert "final/a_auc" not in acc.Tags()["scalars"]  # NaN: not measured, not logged
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["strategy.lr"].number_value == pytest.approx(0.05)
    assert hp["strategy.hidden"].string_value == "[16]"
    assert hp["strategy.epochs"].number_value == 1
    assert hp["seed"].number_value == cell["seed"]
    assert hp["cell_id"].string_value == cell["cell_id"]
    assert hp["benchmark.name"].string_value == "split_digits"
    assert hp["stream.scenario"].string_value == cell["stream"]["scenario"]
    assert json.loads(hp["stream.params.class_order"].string_value) == cell["stream"]["params"]["class_order"]
    text = acc.Tensors("params/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"| cell_id | {cell['cell_id']} |" in text


def event_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("events.out.tfevents.*"))


def test_track_tensorboard_on_run_logs_each_cell(made):
    """`clbench run --track tensorboard`: each cell is in its own folder, read back with TensorBoard's reader."""
    for cell in cells(made["run"]):
        check_tensorboard_cell(made["tracked"] / "tiny" / "split_digits" / "finetune" / f"seed{cell['seed']}", cell)
    assert not (made["tracked"] / "tiny" / "report").exists()  # the report is written after the cells


def test_export_tensorboard_round_trip_and_idempotent(made, tmp_path, capsys):
    logdir = tmp_path / "tb"
    out = export(capsys, str(made["run"]), "--to", "tensorboard", "--uri", str(logdir))
    assert "(2 written, 0 replaced, 0 unchanged); with its report" in out
    for cell in cells(made["run"]):
        check_tensorboard_cell(logdir / "tiny" / "split_digits" / "finetune" / f"seed{cell['seed']}", cell)
    report = accumulator(logdir / "tiny" / "report")
    pngs = sorted((made["run"] / "report").rglob("*.png"))
    assert pngs and sorted(report.Tags()["images"]) == sorted(f"report/{p.stem}" for p in pngs)
    for p in pngs:
        assert report.Images(f"report/{p.stem}")[0].encoded_image_string == p.read_bytes()
    md = report.Tensors("report/report.md/text_summary")[0].tensor_proto.string_val[0].decode()
    assert md == (made["run"] / "report" / "report.md").read_text()

    files = event_files(logdir)
    assert len(files) == 3  # two cells and the report
    out = export(capsys, str(made["run"]), "--to", "tensorboard", "--uri", str(logdir))
    assert "(0 written, 0 replaced, 2 unchanged)" in out and event_files(logdir) == files

    copy, changed = with_changed_cell(made["run"], tmp_path / "copy")
    out = export(capsys, str(copy), "--to", "tensorboard", "--uri", str(logdir))
    assert "(0 written, 1 replaced, 1 unchanged)" in out
    after = event_files(logdir)
    assert len(after) == 3 and len(set(after) - set(files)) == 1  # the changed cell's file replaced, not added
    marker = json.loads((logdir / "tiny" / "split_digits" / "finetune" / "seed1" / "clbench-cell.json").read_text())
    assert marker["cell_id"] == changed


def test_tracker_failure_is_a_warning(made, tmp_path):
    """A tracker that cannot write does not stop the run: the callback warns and names `clbench export`."""
    from clbench.results import read_run

    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")
    callback = TrackerCallback(TensorBoardTracker(made["run"], str(blocked)))
    record = read_run(made["run"]).current()[0]
    with pytest.warns(UserWarning, match=r"could not log cell .* to tensorboard: .*clbench export"):
        callback.on_cell_end(record)


# ---------------------------------------------------------------- errors


def test_missing_tracker_is_one_clear_error(made, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    capsys.readouterr()
    assert main(["export", str(made["run"]), "--to", "mlflow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pip install 'clbench[mlflow]'" in err and err.count("\n") == 1
    # --track checks before any cell runs
    monkeypatch.setitem(sys.modules, "wandb", None)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "never", "seeds": [0], "benchmarks": [{"name": "split_digits"}],
                                   "strategies": [STRATEGY]}))
    assert main(["run", str(cfg), "--output", str(tmp_path), "--quiet", "--track", "wandb"]) == 2
    assert "pip install 'clbench[wandb]'" in capsys.readouterr().err
    assert not (tmp_path / "never" / "cells").exists()


def test_export_of_a_non_run_folder(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--to", "tensorboard"]) == 2
    assert "is not a run folder" in capsys.readouterr().err


# ---------------------------------------------------------------- W&B (offline)


def wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` transaction log: header ``:W&B`` + magic 0xBEE1 + version 0, then 32 KiB
    blocks of chunks (crc32 of type byte and payload, uint16 length, type FULL/FIRST/MIDDLE/LAST), each
    record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    block, pos, payloads, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        assert crc == zlib.crc32(payload, zlib.crc32(bytes([kind]))), f"bad checksum at byte {pos}"
        if kind == 1:
            payloads.append(payload)
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            payloads.append(pending + payload)
    return [pb.Record.FromString(p) for p in payloads]


def wandb_run(folder: Path) -> dict:
    """One offline run's config, history rows, summary, artifacts and exit code, from its transaction log."""
    (log,) = folder.glob("run-*.wandb")
    out: dict = {"history": [], "summary": {}, "artifacts": [], "exit": None}
    for rec in wandb_records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"] = {u.key: json.loads(u.value_json) for u in rec.run.config.update}
        elif kind == "history":
            out["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "artifact":
            out["artifacts"].append(rec.artifact)
        elif kind == "exit":
            out["exit"] = rec.exit.exit_code
    return out


def offline_runs(folder: Path) -> list[Path]:
    return sorted(d for d in (folder / "wandb").glob("offline-run-*") if d.is_dir() and not d.is_symlink())


def test_export_wandb_offline_round_trip_and_idempotent(made, tmp_path, monkeypatch, capsys):
    for key, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_CONFIG_DIR", "config")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "cl-test")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    where = tmp_path / "wb"
    out = export(capsys, str(made["run"]), "--to", "wandb", "--uri", str(where))
    assert "(2 written, 0 replaced, 0 unchanged); with its report" in out
    folders = offline_runs(where)
    assert len(folders) == 2
    by_id = {}
    for folder in folders:
        run = wandb_run(folder)
        by_id[run["config"]["cell_id"]] = run
    files = report_files(made["run"])
    for cell in cells(made["run"]):
        run = by_id[cell["cell_id"]]
        assert (run["run"].run_group, run["run"].project) == ("tiny", "cl-test")
        assert run["run"].display_name == f"finetune split_digits seed{cell['seed']}"
        assert cell["cell_id"] in run["run"].tags
        config = run["config"]
        assert config["strategy"] == cell["spec"]["strategy"] == STRATEGY
        assert config["benchmark"] == cell["spec"]["benchmark"]
        assert config["stream"] == cell["stream"] and config["seed"] == cell["seed"]
        rows = run["history"]
        assert [r["_step"] for r in rows] == list(range(5))
        assert [r["seen_accuracy"] for r in rows] == pytest.approx(seen_by_hand(cell), abs=1e-12)
        for i, r in enumerate(rows):
            assert [r[f"accuracy/exp_{j}"] for j in range(5)] == pytest.approx(cell["accuracy"][i], abs=1e-12)
        for k, v in finite_metrics(cell).items():
            assert run["summary"][f"final/{k}"] == pytest.approx(v, abs=1e-12)
        assert run["summary"]["status"] == "ok" and run["exit"] == 0
        (art,) = run["artifacts"]
        assert (art.name, art.type) == ("tiny-report", "report")
        assert {c.path: c.size for c in art.manifest.contents} == files

    out = export(capsys, str(made["run"]), "--to", "wandb", "--uri", str(where))
    assert "(0 written, 0 replaced, 2 unchanged)" in out and offline_runs(where) == folders

    copy, changed = with_changed_cell(made["run"], tmp_path / "copy")
    out = export(capsys, str(copy), "--to", "wandb", "--uri", str(where))
    assert "(0 written, 1 replaced, 1 unchanged)" in out
    after = offline_runs(where)
    assert len(after) == 2 and len(set(after) - set(folders)) == 1
    (new,) = set(after) - set(folders)
    assert wandb_run(new)["config"]["cell_id"] == changed


# ---------------------------------------------------------------- MLflow (a real tracking server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` with a SQLite backend on 127.0.0.1:<free port>; stopped (its process group) at the end."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/health", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not answer in 180 s:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        log.close()


@pytest.mark.slow
def test_export_mlflow_server_round_trip_and_idempotent(made, mlflow_server, tmp_path, capsys):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    out = export(capsys, str(made["run"]), "--to", "mlflow", "--uri", mlflow_server)
    assert f"2 cells to mlflow at {mlflow_server} (2 written, 0 replaced, 0 unchanged); with its report" in out
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tiny")
    runs = {r.data.tags["clbench.cell_id"]: r for r in client.search_runs([exp.experiment_id])}
    assert len(runs) == 2
    files = report_files(made["run"])
    for cell in cells(made["run"]):
        run = runs[cell["cell_id"]]
        rid = run.info.run_id
        assert run.info.status == "FINISHED" and run.info.run_name == f"finetune split_digits seed{cell['seed']}"
        p = run.data.params
        assert (p["strategy.lr"], p["strategy.hidden"], p["strategy.epochs"], p["strategy.name"]) == ("0.05", "[16]", "1", "finetune")
        assert (p["seed"], p["benchmark.name"], p["benchmark.n_experiences"]) == (str(cell["seed"]), "split_digits", "5")
        assert p["stream.scenario"] == cell["stream"]["scenario"]
        assert json.loads(p["stream.params.class_order"]) == cell["stream"]["params"]["class_order"]
        history = sorted((m.step, m.value) for m in client.get_metric_history(rid, "seen_accuracy"))
        assert [s for s, _ in history] == list(range(5))
        assert [v for _, v in history] == pytest.approx(seen_by_hand(cell), abs=1e-12)
        for j in range(5):
            got = sorted((m.step, m.value) for m in client.get_metric_history(rid, f"accuracy/exp_{j}"))
            assert got == [(i, pytest.approx(cell["accuracy"][i][j], abs=1e-12)) for i in range(5)]
        for k, v in finite_metrics(cell).items():
            assert run.data.metrics[f"final/{k}"] == pytest.approx(v, abs=1e-12)
        listed = {f.path for f in client.list_artifacts(rid, "report")}
        assert {"report/report.md", "report/report.html", "report/figures", "report/tables"} <= listed
        got = Path(client.download_artifacts(rid, "report", str(tmp_path / rid)))
        assert {str(f.relative_to(got)): f.stat().st_size for f in got.rglob("*") if f.is_file()} == files

    out = export(capsys, str(made["run"]), "--to", "mlflow", "--uri", mlflow_server)
    assert "(0 written, 0 replaced, 2 unchanged)" in out
    assert len(client.search_runs([exp.experiment_id])) == 2

    copy, changed = with_changed_cell(made["run"], tmp_path / "copy")
    out = export(capsys, str(copy), "--to", "mlflow", "--uri", mlflow_server)
    assert "(0 written, 1 replaced, 1 unchanged)" in out
    active = client.search_runs([exp.experiment_id])
    deleted = client.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert len(active) == 2 and len(deleted) == 1
    assert deleted[0].data.tags["clbench.cell_id"] == changed
    assert runs[changed].info.run_id == deleted[0].info.run_id
