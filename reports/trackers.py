"""Experiment-tracker export: every cell of a run folder as one tracked run in TensorBoard, MLflow or W&B.

What a cell becomes (the same in every tracker; :func:`cell_log` computes it once):

- **parameters**: the strategy entry (``record.spec["strategy"]``: name and hyperparameters), the benchmark
  entry (``record.spec["benchmark"]``), the stream description (``record.stream``: scenario, class order,
  source), the seed, the other run settings of the spec (device, eval_period), the cell's labels, id and
  status, and the library versions. MLflow and TensorBoard get them flattened with dotted keys
  (``strategy.lr``; lists and other non-strings as JSON text), W&B as its nested config.
- **steps** (experience index i = 0..T-1): ``seen_accuracy`` = a_i, the accuracy on the union of the test
  sets seen after experience i (:func:`clbench.metrics.seen_accuracy`), and ``accuracy/exp_j`` = R[i][j] for
  every evaluated experience j. Only cells that finished (``ok``) have steps and final metrics.
- **final metrics**: ``final/<name>`` for every number in ``record.metrics`` (NaN/None, e.g. A_auc of a
  stream without anytime evaluation, are left out).
- **artefact**: the run folder's report (``RUN/report``) when it exists: copied as MLflow artefact folder
  ``report/`` and as a W&B artifact ``<run folder>-report`` (type ``report``) of each cell's run; in
  TensorBoard, which has no artefacts, its PNG figures as images and ``report.md`` as text in one extra
  run ``<run folder>/report``.

Grouping: MLflow experiment = run folder name; TensorBoard ``<logdir>/<run folder>/<benchmark>/<strategy>/
seed<k>``; W&B ``group`` = run folder name (project ``$WANDB_PROJECT``, default ``clbench``).

Idempotent: each exported cell carries its cell id and a stamp of its record (status and finish time) and
of the report it was exported with. Exporting again skips a cell whose stamp is unchanged and replaces
(deletes, then writes) one whose record or report changed (a failed cell run again, a new report), so a
cell is never in a tracker twice. MLflow: tags ``clbench.cell_id``/``clbench.stamp`` (the stamp is set last,
so a run whose export broke off is replaced); TensorBoard and W&B offline: a ``clbench-cell.json`` marker in
the cell's folder (written last); W&B online: the run's config, found through the public API.

Trackers are optional extras (``pip install 'clbench[mlflow]'``); a missing one is one :class:`UserError`.
Default locations, next to the run folder: TensorBoard ``<RUN>/../tensorboard``, W&B files ``<RUN>/../wandb``,
MLflow ``$MLFLOW_TRACKING_URI`` or else ``sqlite:///<RUN>/../mlflow.db`` (artefacts in ``<RUN>/../mlartifacts``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.callbacks import Callback
from clbench.errors import UserError
from clbench.results import CellRecord, read_run

TRACKERS = ("tensorboard", "mlflow", "wandb")
#: the file that marks a cell's TensorBoard / W&B-offline folder as completely written (and with what)
MARKER = "clbench-cell.json"

WRITTEN, REPLACED, UNCHANGED = "written", "replaced", "unchanged"


def require(kind: str):
    """Import the tracker's package, or one :class:`UserError` naming the extra to install."""
    if kind not in TRACKERS:
        raise UserError(f"unknown tracker {kind!r}; valid: {', '.join(TRACKERS)}")
    try:
        if kind == "tensorboard":
            import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter
        if kind == "mlflow":
            import mlflow

            return mlflow
        import wandb

        return wandb
    except ImportError as exc:
        raise UserError(f"exporting to {kind} needs the {kind} package, which is not installed ({exc}); "
                        f"install it with: pip install 'clbench[{kind}]'") from None


# ---------------------------------------------------------------- what a cell becomes


@dataclass
class CellLog:
    """One cell as a tracked run, tracker-independent (see the module docstring)."""

    cell_id: str
    group: str
    benchmark: str
    strategy: str
    seed: int
    status: str
    error: str
    params: dict[str, Any]
    steps: list[dict[str, float]]
    final: dict[str, float]
    started: float
    finished: float
    stamp: str
    report: Path | None = None
    report_digest: str = ""
    step_times: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.strategy} {self.benchmark} seed{self.seed}"

    def flat_params(self) -> dict[str, str | int | float | bool]:
        """The parameters with dotted keys; numbers and booleans kept, other non-strings as JSON text."""
        out: dict[str, str | int | float | bool] = {}
        for key, value in flatten(self.params).items():
            if isinstance(value, (str, bool, int, float)):
                out[key] = value
            else:
                out[key] = json.dumps(value, sort_keys=True, default=str)
        return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def report_digest(report: Path | None) -> str:
    """SHA-1 over the report folder's file names and contents ('' when there is none)."""
    if report is None or not report.is_dir():
        return ""
    h = hashlib.sha1()
    for p in sorted(report.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(report)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


def cell_log(record: CellRecord, group: str, report: Path | None = None) -> CellLog:
    """What :class:`Tracker` writes for ``record`` of run folder ``group``; ``report``: the report folder, if any."""
    spec = record.spec or {}
    params: dict[str, Any] = {
        "seed": record.seed,
        "cell_id": record.cell_id,
        "status": record.status,
        "label": {"benchmark": record.benchmark, "strategy": record.strategy},
        "strategy": dict(spec.get("strategy") or {"name": record.strategy}),
        "benchmark": dict(spec.get("benchmark") or {"name": record.benchmark}),
        "stream": dict(record.stream or {}),
        "run": {k: v for k, v in spec.items() if k not in ("strategy", "benchmark")},
        "versions": dict(record.versions or {}),
    }
    if record.error:
        params["error"] = record.error
    steps: list[dict[str, float]] = []
    final: dict[str, float] = {}
    times: list[float] = []
    if record.ok:
        seen = record.seen_accuracy()
        T = record.n_experiences
        width = len(str(T - 1))
        for i, row in enumerate(record.accuracy):
            step = {"seen_accuracy": float(seen[i])}
            step.update({f"accuracy/exp_{j:0{width}d}": float(a) for j, a in enumerate(row)})
            steps.append(step)
        final = {f"final/{k}": float(v) for k, v in sorted(record.metrics.items()) if _finite(v)}
        t = record.started or record.finished
        for i in range(T):  # wall time at the end of experience i (training and evaluation)
            t += record.train_seconds[i] + record.eval_seconds[i]
            times.append(t)
    digest = report_digest(report)
    return CellLog(cell_id=record.cell_id, group=group, benchmark=record.benchmark, strategy=record.strategy,
                   seed=record.seed, status=record.status, error=record.error, params=params, steps=steps, final=final,
                   started=record.started, finished=record.finished, stamp=f"{record.status}:{record.finished!r}",
                   report=report if digest else None, report_digest=digest, step_times=times)


def safe_name(text: str) -> str:
    """A label as a path component or tracker name: letters, digits, ``._-`` (others become ``_``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "_"
    return s[:100]


# ---------------------------------------------------------------- trackers


class Tracker:
    """Writes cells of one run folder to one tracker; :meth:`log_cell` says ``written``, ``replaced`` or ``unchanged``."""

    kind = ""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.group = self.run_dir.resolve().name
        self.location = ""

    def log_cell(self, record: CellRecord, report: Path | None = None) -> str:
        return self.write(cell_log(record, self.group, report))

    def write(self, log: CellLog) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the tracker holds (writers, services)."""


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _marker(log: CellLog) -> dict[str, Any]:
    return {"cell_id": log.cell_id, "group": log.group, "stamp": log.stamp, "report_digest": log.report_digest}


def _same(marker: Mapping[str, Any] | None, log: CellLog) -> bool:
    return marker is not None and all(marker.get(k) == v for k, v in _marker(log).items())


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


class TensorBoardTracker(Tracker):
    """Event files under ``<logdir>/<run folder>/<benchmark>/<strategy>/seed<k>`` (one writer per cell).

    Parameters go in as TensorBoard hparams (HParams dashboard) and as a Markdown table (text ``params``);
    accuracies as scalars at step = experience index; final metrics as scalars ``final/*`` at the last step.
    """

    kind = "tensorboard"

    def __init__(self, run_dir: Path, uri: str | None = None) -> None:
        super().__init__(run_dir)
        self.SummaryWriter = require("tensorboard")
        self.logdir = Path(uri) if uri else self.run_dir.resolve().parent / "tensorboard"
        self.root = self.logdir / safe_name(self.group)
        self.location = str(self.logdir)
        self._used: dict[Path, str] = {}

    def cell_dir(self, log: CellLog) -> Path:
        sub = self.root / safe_name(log.benchmark) / safe_name(log.strategy) / f"seed{log.seed}"
        if self._used.setdefault(sub, log.cell_id) != log.cell_id:  # two cells with the same labels
            sub = sub.with_name(f"{sub.name}-{log.cell_id}")
        return sub

    def write(self, log: CellLog) -> str:
        from torch.utils.tensorboard.summary import hparams

        sub = self.cell_dir(log)
        if log.report is not None:
            self._write_report(log)
        if _same(_read_marker(sub), log):
            return UNCHANGED
        existed = sub.exists()
        if existed:
            shutil.rmtree(sub)
        writer = self.SummaryWriter(log_dir=str(sub))
        try:
            flat = log.flat_params()
            for summary in hparams(flat, {k: 0.0 for k in log.final}):
                writer.file_writer.add_summary(summary, walltime=log.started or None)
            writer.add_text("params", _markdown_table(flat), 0, walltime=log.started or None)
            if log.error:
                writer.add_text("error", log.error, 0, walltime=log.finished or None)
            for i, step in enumerate(log.steps):
                for tag, value in step.items():
                    writer.add_scalar(tag, value, i, walltime=log.step_times[i])
            last = max(len(log.steps) - 1, 0)
            for tag, value in log.final.items():
                writer.add_scalar(tag, value, last, walltime=log.finished or None)
            writer.flush()
        finally:
            writer.close()
        (sub / MARKER).write_text(json.dumps(_marker(log)))
        return REPLACED if existed else WRITTEN

    def _write_report(self, log: CellLog) -> None:
        """The report's PNG figures (images ``report/<name>``) and report.md (text) in run ``<run folder>/report``."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        folder = self.root / "report"
        marker = {"group": log.group, "report_digest": log.report_digest}
        if _read_marker(folder) == marker:
            return
        if folder.exists():
            shutil.rmtree(folder)
        writer = self.SummaryWriter(log_dir=str(folder))
        try:
            assert log.report is not None
            for png in sorted(log.report.rglob("*.png")):
                data = png.read_bytes()
                width, height = _png_size(data)
                image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
                writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=f"report/{png.stem}", image=image)]), 0)
            md = log.report / "report.md"
            if md.is_file():
                writer.add_text("report/report.md", md.read_text(), 0)
            writer.flush()
        finally:
            writer.close()
        (folder / MARKER).write_text(json.dumps(marker))


def _markdown_table(flat: Mapping[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in flat.items())
    return "| parameter | value |\n|---|---|\n" + rows


def _http_reachable(uri: str, timeout: float = 10.0) -> None:
    """An http(s) tracking URI answers (any HTTP status counts); one UserError when nothing listens there."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # a server answered (maybe behind a proxy without /health or with authentication)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it (e.g. `mlflow server "
                        f"--host 127.0.0.1 --port 5000`) or pass another --uri / --track-uri") from None


class MLflowTracker(Tracker):
    """One MLflow run per cell in experiment ``<run folder>``, written with ``MlflowClient`` (no global state)."""

    kind = "mlflow"

    def __init__(self, run_dir: Path, uri: str | None = None) -> None:
        super().__init__(run_dir)
        require("mlflow")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no line per run in our output
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        parent = self.run_dir.resolve().parent
        default = not uri and not os.environ.get("MLFLOW_TRACKING_URI")
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{parent / 'mlflow.db'}"
        self.location = self.uri
        if self.uri.startswith(("http://", "https://")):
            _http_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.MlflowException = MlflowException
        try:
            exp = self.client.get_experiment_by_name(self.group)
            if exp is None:
                location = (parent / "mlartifacts" / safe_name(self.group)).as_uri() if default else None
                self.experiment_id = self.client.create_experiment(self.group, artifact_location=location)
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self.experiment_id = exp.experiment_id
        except MlflowException as exc:
            raise UserError(f"MLflow at {self.uri}: {str(exc).splitlines()[0]}") from None
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        self.max_param = int(MAX_PARAM_VAL_LENGTH)

    def existing(self, cell_id: str) -> list:
        """Active runs of this experiment tagged with ``cell_id``."""
        return self.client.search_runs([self.experiment_id], filter_string=f"tags.`clbench.cell_id` = '{cell_id}'",
                                       max_results=100)

    def write(self, log: CellLog) -> str:
        from mlflow.entities import Metric, Param, RunStatus, RunTag

        try:
            runs = self.existing(log.cell_id)
            if (len(runs) == 1 and runs[0].data.tags.get("clbench.stamp") == log.stamp
                    and runs[0].data.tags.get("clbench.report_digest", "") == log.report_digest):
                return UNCHANGED
            for r in runs:
                self.client.delete_run(r.info.run_id)
            tags = {"clbench.cell_id": log.cell_id, "clbench.run_folder": str(self.run_dir.resolve()),
                    "clbench.benchmark": log.benchmark, "clbench.strategy": log.strategy, "clbench.seed": str(log.seed),
                    "clbench.status": log.status}
            run = self.client.create_run(self.experiment_id, start_time=_ms(log.started) if log.started else None,
                                         tags=tags, run_name=log.name)
            rid = run.info.run_id
            params = [Param(k, (v if isinstance(v, str) else json.dumps(v))[: self.max_param])
                      for k, v in log.flat_params().items()]
            metrics = [Metric(k, v, _ms(log.step_times[i]), i) for i, step in enumerate(log.steps) for k, v in step.items()]
            last = max(len(log.steps) - 1, 0)
            metrics += [Metric(k, v, _ms(log.finished or time.time()), last) for k, v in log.final.items()]
            for n in range(0, len(params), 100):
                self.client.log_batch(rid, params=params[n:n + 100])
            for n in range(0, len(metrics), 1000):
                self.client.log_batch(rid, metrics=metrics[n:n + 1000])
            if log.report is not None:
                self.client.log_artifacts(rid, str(log.report), "report")
            self.client.log_batch(rid, tags=[RunTag("clbench.report_digest", log.report_digest),
                                             RunTag("clbench.stamp", log.stamp)])  # last: the run is complete
            status = RunStatus.to_string(RunStatus.FINISHED if log.status == "ok" else RunStatus.FAILED)
            self.client.set_terminated(rid, status, end_time=_ms(log.finished) if log.finished else None)
        except self.MlflowException as exc:
            raise UserError(f"MLflow at {self.uri}: {str(exc).splitlines()[0]}") from None
        return REPLACED if runs else WRITTEN


def _ms(t: float) -> int:
    return int(round(t * 1000))


class WandbTracker(Tracker):
    """One W&B run per cell in group ``<run folder>`` (project ``$WANDB_PROJECT`` or ``clbench``).

    The run id is ``<cell id>-<hash of run folder name and record stamp>``: a changed record gets a new run
    and the old one is removed (offline: its folder under ``<dir>/wandb``; online: deleted through the API).
    ``WANDB_MODE=offline`` writes files only (``wandb sync`` uploads them later).
    """

    kind = "wandb"

    def __init__(self, run_dir: Path, uri: str | None = None) -> None:
        super().__init__(run_dir)
        self.wandb = require("wandb")
        self.dir = Path(uri) if uri else self.run_dir.resolve().parent
        self.project = os.environ.get("WANDB_PROJECT") or "clbench"
        self.entity = os.environ.get("WANDB_ENTITY") or None
        try:
            self.mode = self.wandb.setup().settings.mode
        except self.wandb.errors.Error as exc:
            raise UserError(f"W&B: {exc}") from None
        self.offline = self.mode in ("offline", "dryrun")
        self.location = f"{self.dir / 'wandb'} (offline)" if self.offline else f"project {self.project} ({self.mode})"

    def run_id(self, log: CellLog) -> str:
        return f"{log.cell_id}-{hashlib.sha1(f'{log.group}|{log.stamp}|{log.report_digest}'.encode()).hexdigest()[:8]}"

    def _offline_dirs(self, log: CellLog, run_id: str) -> tuple[bool, list[Path]]:
        """(an identical export exists, folders of earlier or broken-off exports of this cell)."""
        base = self.dir / "wandb"
        same, old = False, []
        for d in sorted(base.glob("*run-*")) if base.is_dir() else []:
            if not d.is_dir() or d.is_symlink():
                continue
            m = _read_marker(d)
            if m is not None and m.get("cell_id") == log.cell_id and m.get("group") == log.group:
                if _same(m, log) and not same:
                    same = True
                else:
                    old.append(d)
            elif m is None and d.name.endswith(f"-{run_id}"):
                old.append(d)  # written without its marker: the export broke off
        return same, old

    def _online_runs(self, log: CellLog) -> list:
        api = self.wandb.Api()
        path = f"{self.entity}/{self.project}" if self.entity else self.project
        return list(api.runs(path, filters={"group": log.group, "config.clbench.cell_id": log.cell_id}))

    def write(self, log: CellLog) -> str:
        wandb = self.wandb
        run_id = self.run_id(log)
        try:
            if self.offline:
                same, old = self._offline_dirs(log, run_id)
                for d in old:
                    shutil.rmtree(d)
            else:
                found = self._online_runs(log)
                same = any(r.id == run_id for r in found)
                old = [r for r in found if r.id != run_id]
                for r in old:
                    r.delete()
            if same:
                return UNCHANGED
            config = {**log.params, "clbench": {"cell_id": log.cell_id, "run_folder": str(self.run_dir.resolve()),
                                                "stamp": log.stamp, "report_digest": log.report_digest}}
            settings = wandb.Settings(console="off", silent=True, save_code=False, disable_git=True,
                                      x_disable_stats=True, x_disable_machine_info=True, x_save_requirements=False)
            self.dir.mkdir(parents=True, exist_ok=True)
            run = wandb.init(dir=str(self.dir), project=self.project, entity=self.entity, id=run_id, name=log.name,
                             group=log.group, job_type=safe_name(log.benchmark), tags=[log.cell_id], config=config,
                             settings=settings, reinit="create_new")
            try:
                for i, step in enumerate(log.steps):
                    run.log(step, step=i)
                run.summary.update({**log.final, "status": log.status, **({"error": log.error} if log.error else {})})
                if log.report is not None:
                    art = wandb.Artifact(f"{safe_name(log.group)}-report", type="report",
                                         metadata={"run_folder": str(self.run_dir.resolve())})
                    art.add_dir(str(log.report))
                    run.log_artifact(art)
                sync_dir = Path(run.settings.sync_dir)
            finally:
                run.finish(exit_code=0 if log.status == "ok" else 1)
            if self.offline:
                (sync_dir / MARKER).write_text(json.dumps(_marker(log)))
        except wandb.errors.Error as exc:
            hint = "" if self.offline else "; run `wandb login`, or set WANDB_MODE=offline to write files only"
            raise UserError(f"W&B: {str(exc).splitlines()[0]}{hint}") from None
        return REPLACED if old else WRITTEN

    def close(self) -> None:
        self.wandb.teardown()


_CLASSES: dict[str, type[Tracker]] = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


def open_tracker(kind: str, run_dir: str | Path, uri: str | None = None) -> Tracker:
    """The tracker ``kind`` for run folder ``run_dir``; ``uri``: logdir (TensorBoard), W&B folder or MLflow tracking URI."""
    require(kind)
    return _CLASSES[kind](Path(run_dir), uri)


class TrackerCallback(Callback):
    """Logs each finished cell (``on_cell_end``) to a tracker; a tracker that fails is a warning, not a lost run."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_cell_end(self, record: Any) -> None:
        try:
            self.tracker.log_cell(record)
        except Exception as exc:  # noqa: BLE001 - the cell is recorded on disk; clbench export can redo it
            warnings.warn(f"could not log cell {record.cell_id} ({record.benchmark}/{record.strategy}/seed "
                          f"{record.seed}) to {self.tracker.kind}: {exc}; the cell is recorded, export it later with "
                          f"`clbench export {self.tracker.run_dir} --to {self.tracker.kind}`", stacklevel=2)


# ---------------------------------------------------------------- clbench export


@dataclass
class ExportSummary:
    """What :func:`export_run` did: counts per outcome, the tracker's location, records left out as stale."""

    run_dir: Path
    kind: str
    location: str
    counts: dict[str, int]
    stale: int
    report: bool


def export_run(run_dir: str | Path, kind: str, uri: str | None = None) -> ExportSummary:
    """Write every cell of the run folder's current config (and its report, if any) to tracker ``kind``."""
    path = Path(run_dir)
    if not (path / "cells").is_dir() and not (path / "config.yaml").is_file():
        raise UserError(f"{path} is not a run folder (no cells/ and no config.yaml); pass a folder written by "
                        f"clbench run or clbench tune")
    contents = read_run(path)
    records = contents.current()
    if not records:
        raise UserError(f"{path} holds no finished cell of its current config; nothing to export")
    report = path / "report"
    report = report if report.is_dir() else None
    tracker = open_tracker(kind, path, uri)
    counts = {WRITTEN: 0, REPLACED: 0, UNCHANGED: 0}
    try:
        for record in records:
            counts[tracker.log_cell(record, report)] += 1
    finally:
        tracker.close()
    return ExportSummary(path, kind, tracker.location, counts, len(contents.stale()), report is not None)
