"""The matrix runner: expand a config into cells, check their data, run the missing ones, record them atomically.

The run folder's layout and what a valid record is belong to :mod:`clbench.results`; this module writes
records as cells finish and keeps ``results.csv``/``cells.csv`` up to date in time linear in the number of
cells (:class:`TableWriter`).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from clbench.benchmarks.backbones import parse_backbone, weights_problem
from clbench.benchmarks.features import feature_stream
from clbench.benchmarks.registry import build_stream, entry_source
from clbench.benchmarks.sources import get_source
from clbench.callbacks import NO_CALLBACKS, Callback, CallbackError, Callbacks, StopCell
from clbench.errors import CellFailure, DataError, UserError
from clbench.files import atomic_write_json, atomic_write_text, atomic_write_yaml, cannot_write, ensure_folder, remove_stale_tmp
from clbench.host import host_facts, library_versions
from clbench.paths import data_root as resolve_data_root
from clbench.results import RETRY_KINDS, CellRecord, read_run
from clbench.results import CELL_COLUMNS, RESULT_COLUMNS, frame_from_rows
from clbench.stream import Experience, Stream
from clbench.strategies.registry import resolve_strategy

from .config import CellSpec, RunConfig
from .executors import make_executor
from .loop import run_stream
from .search import partial_score

ALL_EXPERIENCES = "all_experiences_unlabelled"


class StreamCache:
    """Keeps the last few built streams of this process, keyed by benchmark entry, seed and features."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[str, Stream] = OrderedDict()

    def get(self, key: str, build: Callable[[], Stream]) -> Stream:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        stream = build()
        self._items[key] = stream
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return stream


def cell_stream(cell: CellSpec, wants_features: bool, cache: StreamCache | None = None) -> Stream:
    """The stream a cell trains on: built from its benchmark entry and seed, features if wanted."""
    key = json.dumps([cell.benchmark, cell.seed, cell.data_root], sort_keys=True, default=str)
    cache = cache or StreamCache(1)
    raw = cache.get(key, lambda: build_stream(cell.benchmark, cell.seed, cell.data_root, cell.cache_dir))
    if not wants_features:
        return raw
    backbone = cell.benchmark.get("backbone")
    return cache.get(key + f"|features:{backbone}", lambda: feature_stream(raw, backbone, cell.cache_dir))


def describe_stream(stream: Stream) -> dict[str, Any]:
    """How a stream was made, for the cell record."""
    return {"name": stream.name, "scenario": stream.scenario, "n_classes": stream.n_classes,
            "n_experiences": len(stream), "params": stream.params, "seed": stream.seed}


def unlabelled_data(request: str, cell: CellSpec, stream: Stream, cache: StreamCache | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The unlabelled inputs a strategy asked for (:meth:`Strategy.unlabelled_request`) and what they were.

    ``all_experiences_unlabelled``: the training inputs of every experience of the stream (future ones
    included: recorded as ``sees_future``). A dataset source name: that dataset's training inputs, through
    the cell's backbone when it has one.
    """
    if request == ALL_EXPERIENCES:
        x = torch.cat([e.train.float_x() for e in stream.experiences])
        return x, {"unlabelled": ALL_EXPERIENCES, "sees_future": True, "samples": len(x)}
    source = get_source(request)
    data = source.load(resolve_data_root(cell.data_root), True, cell.cache_dir)
    backbone = cell.benchmark.get("backbone")
    if backbone:
        one = Stream(f"unlabelled_{source.name}", "class-il", source.n_classes,  # (one test sample: the cache needs a split)
                     (Experience(0, 0, (), data.train, data.test.subset(torch.arange(1))),))
        x = feature_stream(one, str(backbone), cell.cache_dir)[0].train.float_x()
    else:
        x = data.train.float_x()
    want = stream[0].train.sample_shape
    if tuple(x.shape[1:]) != tuple(want):
        raise UserError(f"unlabelled data {request!r} has samples of shape {tuple(x.shape[1:])} but the stream's inputs "
                        f"are {tuple(want)}; fix: give the benchmark a pretrained backbone: (both pass through it) or "
                        f"name a dataset of the same shape")
    return x, {"unlabelled": request, "sees_future": False, "samples": len(x)}


@dataclass(frozen=True)
class PruneRule:
    """Stop a cell after experience ``step`` (1-based, up to ``after``) when its partial objective (see
    :func:`clbench.protocols.search.partial_score`) is below ``below[step]`` (the median of finished trials)."""

    objective: str
    after: int
    below: tuple[tuple[int, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "after": self.after, "below": [list(b) for b in self.below]}


class PruneCallback(Callback):
    """Raises :class:`~clbench.callbacks.StopCell` when the cell falls below its rule."""

    def __init__(self, rule: PruneRule) -> None:
        self.rule = rule
        self.below = dict(rule.below)

    def on_experience_end(self, record: Any, index: int) -> None:
        step = index + 1
        if step > self.rule.after or step not in self.below:
            return
        value = partial_score(record.accuracy, record.test_sizes, self.rule.objective)
        if value < self.below[step]:
            raise StopCell(f"pruned: {self.rule.objective} {value:.4f} after {step} experience(s) is below the median "
                           f"{self.below[step]:.4f} of the finished trials")


@contextmanager
def seeded(seed: int):
    """Seed torch's global generator for model initialisation without leaking the state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def new_record(cell: CellSpec) -> CellRecord:
    spec: dict[str, Any] = {"benchmark": cell.benchmark, "strategy": cell.strategy, "device": cell.device,
                            "eval_period": cell.eval_period}
    if cell.tag:
        spec["tag"] = cell.tag
    if cell.prune is not None:
        spec["prune"] = cell.prune.to_dict()
    return CellRecord(cell.cell_id, cell.benchmark_label, cell.strategy_label, cell.seed, spec=spec,
                      versions=library_versions(), host=host_facts(cell.device), started=time.time())


def new_strategy(cls: type, stream: Stream, cell: CellSpec):
    """The strategy of a cell: ``cls`` built for the stream with the cell's seed, device and hyperparameters."""
    return cls(stream.info, seed=cell.seed, device=cell.device, **cell.hyperparameters)


def execute_cell(cell: CellSpec, cache: StreamCache | None = None, callbacks: Callbacks = NO_CALLBACKS,
                 make_strategy: Callable[[type, Stream, CellSpec], Any] = new_strategy) -> CellRecord:
    """Run one cell; any exception of the strategy or its data becomes a failed record with its reason.

    A plug-in calling ``sys.exit`` is a failed cell too; an exception raised by one of the ``callbacks`` (e.g.
    ``optuna.TrialPruned``) propagates unchanged; ``KeyboardInterrupt`` stops everything. ``make_strategy``
    builds the strategy (under the cell's seed); a tuning study of a re-solvable head passes one that reuses a
    fit (:mod:`clbench.protocols.resolve`).
    """
    record = new_record(cell)
    if cell.prune is not None:
        callbacks = Callbacks([*getattr(callbacks, "items", []), PruneCallback(cell.prune)])
    try:
        cls = resolve_strategy(cell.strategy["name"])
        bad = cls.parameter_problems(cell.hyperparameters)
        if bad:
            raise UserError("; ".join(bad))
        stream = cell_stream(cell, bool(cls.wants_features), cache)
        record.stream = describe_stream(stream)
        record.versions = library_versions()
        with seeded(cell.seed):
            strategy = make_strategy(cls, stream, cell)
            request = strategy.unlabelled_request()
            if request:
                x, info = unlabelled_data(request, cell, stream, cache)
                record.stream.update(info)
                strategy.receive_unlabelled(x)
            run_stream(strategy, stream, record, callbacks, cell.eval_period)
    except CallbackError as exc:
        if not isinstance(exc.original, StopCell):
            raise exc.original from None
        record.status, record.error, record.error_kind = "failed", str(exc.original), "stopped"
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - recorded, not raised
        record.status = "failed"
        if isinstance(exc, SystemExit):
            record.error = f"the strategy called sys.exit({exc.code!r}) during the cell (recorded as failed; the matrix goes on)"
        else:
            record.error = f"{type(exc).__name__}: {exc}"
        record.error_kind = "data" if isinstance(exc, DataError) else ""
        record.spec["traceback"] = traceback.format_exc(limit=8)
    record.finished = time.time()
    return record


def preflight(config: RunConfig) -> None:
    """Every dataset and weight file the matrix needs, before anything runs: one UserError listing the problems."""
    problems: list[str] = []
    root = resolve_data_root(config.data_root)
    seen: set[str] = set()
    for entry in config.benchmarks:
        source = entry_source(entry)
        if source is not None and source.name not in seen:
            seen.add(source.name)
            p = source.problem(root, bool(entry.get("download", True)))
            if p is not None:
                problems.append(str(p))
        backbone = entry.get("backbone")
        if backbone and str(backbone) not in seen:
            seen.add(str(backbone))
            if parse_backbone(str(backbone))[0] != "flatten":
                p = weights_problem(str(backbone))
                if p is not None:
                    problems.append(str(p))
    for entry in config.strategies:
        data = entry.get("key_data")
        if isinstance(data, str) and data not in seen and data not in ("first_experience", ALL_EXPERIENCES):
            seen.add(data)
            try:
                p = get_source(data).problem(root, True)
            except UserError as exc:
                p = exc
            if p is not None:
                problems.append(str(p))
    if problems:
        raise UserError("the data this matrix needs is not available (nothing was run):\n  - " + "\n  - ".join(problems))


class TableWriter:
    """Keeps ``results.csv`` and ``cells.csv`` of a run folder in step with its records.

    Rows of a record are built once when it arrives; the tables are rewritten (atomically) when the number of
    records has doubled since the last write, or when ``interval`` seconds have passed and a rewrite costs
    under 5% of the time since the last one. So writing the tables costs time linear in the number of cells;
    :meth:`flush` writes them in config order at the end. A crash leaves the old tables, never partial ones;
    the next run rebuilds them from the records.
    """

    def __init__(self, path: Path, order: list[str], records: dict[str, CellRecord], interval: float = 10.0) -> None:
        self.path, self.order, self.interval = path, order, interval
        self.rows: dict[str, tuple[list[tuple], tuple]] = {}
        for r in records.values():
            self.add(r, write=False)
        self.written_at = len(self.rows)
        self.last = time.monotonic()
        self.cost = 0.0

    def add(self, record: CellRecord, write: bool = True) -> None:
        self.rows[record.cell_id] = (record.result_rows(), record.cell_row())
        if not write:
            return
        now = time.monotonic()
        due = len(self.rows) >= 2 * self.written_at
        due = due or (now - self.last >= self.interval and self.cost <= 0.05 * (now - self.last))
        if due:
            self.flush()

    def flush(self) -> None:
        t0 = time.monotonic()
        rank = {cid: i for i, cid in enumerate(self.order)}
        ids = sorted(self.rows, key=lambda c: rank.get(c, len(rank)))
        results = frame_from_rows([row for c in ids for row in self.rows[c][0]], RESULT_COLUMNS,
                                  ["benchmark", "strategy", "seed", "trained_exp", "evaluated_exp"])
        cells = frame_from_rows([self.rows[c][1] for c in ids], CELL_COLUMNS, ["benchmark", "strategy", "seed"])
        atomic_write_text(self.path / "results.csv", results.to_csv(index=False))
        atomic_write_text(self.path / "cells.csv", cells.to_csv(index=False))
        self.written_at = len(self.rows)
        self.last = time.monotonic()
        self.cost = self.last - t0


class RunFolder:
    """Writes one run folder (its layout: :mod:`clbench.results`) and holds its lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.cells_dir = self.path / "cells"

    def write_record(self, record: CellRecord) -> None:
        atomic_write_json(self.cells_dir / f"{record.cell_id}.json", record.to_dict())

    @contextmanager
    def locked(self):
        """Hold the folder's lock for a block; another clbench process on the folder is refused (one UserError)."""
        from filelock import FileLock, Timeout

        ensure_folder(self.path)
        lock = FileLock(str(self.path / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"run folder {self.path} is in use by another clbench process; wait for it to finish or "
                            f"choose another --output/--name") from None
        except OSError as exc:
            raise cannot_write(self.path / ".lock", exc) from None
        try:
            yield self
        finally:
            lock.release()


def _todo(config: RunConfig, records: dict[str, CellRecord], retry_failed: bool) -> list[CellSpec]:
    out = []
    for c in config.cells():
        r = records.get(c.cell_id)
        if r is None or (not r.ok and (retry_failed or r.error_kind in RETRY_KINDS)):
            out.append(c)
    return out


def run_matrix(config: RunConfig, *, quiet: bool = False, retry_failed: bool = False, executor=None,
               echo: Callable[[str], None] = print, callbacks: Callbacks = NO_CALLBACKS,
               folder_locked: bool = False) -> list[CellRecord]:
    """Run every cell of ``config`` not yet recorded in its run folder; return the matrix's records in config order.

    Failed cells run again with ``retry_failed``, and always when they failed because of their data.
    ``callbacks`` get ``on_cell_end`` in this process for every cell that finishes (e.g. tracker export).
    ``folder_locked``: the caller already holds the folder's lock (``clbench tune``).
    """
    folder = RunFolder(config.run_dir)
    if folder_locked:
        return _run_locked(folder, config, quiet, retry_failed, executor, echo, callbacks)
    with folder.locked():
        return _run_locked(folder, config, quiet, retry_failed, executor, echo, callbacks)


def _run_locked(folder: RunFolder, config: RunConfig, quiet: bool, retry_failed: bool, executor,
                echo: Callable[[str], None], callbacks: Callbacks) -> list[CellRecord]:
    for d in (folder.path, folder.cells_dir):
        remove_stale_tmp(d)  # left by a killed earlier run; we hold the lock, so no writer is mid-write
    contents = read_run(folder.path)
    cells = config.cells()
    wanted = {c.cell_id for c in cells}
    records = {k: v for k, v in contents.records.items() if k in wanted}
    todo = _todo(config, records, retry_failed)
    if todo:
        preflight(config)
    atomic_write_yaml(folder.path / "config.yaml", config.to_dict())
    if not quiet:
        echo(f"run folder {folder.path}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")
        stale = len(contents.records) - len(records)
        if stale:
            echo(f"  {stale} record(s) in {folder.cells_dir} belong to an earlier config of this folder; they are kept "
                 f"but not used (tables and reports show the current config only)")
    tables = TableWriter(folder.path, [c.cell_id for c in cells], records)
    executor = executor or make_executor(config.executor, config.workers, timeout=config.timeout, address=config.address)
    bar = None
    if not quiet and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="cells", unit="cell", file=sys.stderr)
    try:
        for record in executor.run(todo, partial(execute_cell, cache=StreamCache())):  # picklable for workers
            folder.write_record(record)
            records[record.cell_id] = record
            tables.add(record)
            callbacks.on_cell_end(record)
            if bar is not None:
                bar.set_postfix_str(f"{record.benchmark}/{record.strategy}/s{record.seed}: "
                                    + (f"ACC {100 * record.metrics.get('acc', float('nan')):.1f}" if record.ok else "FAILED"))
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        tables.flush()
    return [records[c.cell_id] for c in cells if c.cell_id in records]
