"""Cells that differ only in their seed, run as one vectorised ensemble (:mod:`clbench.strategies.ensemble`).

How a user asks: with the executor :class:`EnsembleExecutor` (``run_matrix(config, executor=EnsembleExecutor())``;
``bench/reproduce.py`` uses it). It groups the cells it is given by everything but the seed (benchmark entry,
strategy entry, device, data folders, eval_period, tag); each group of two or more cells whose strategy an
ensemble can train (:func:`~clbench.strategies.ensemble.ensemble_problem`) runs in this process as one
:class:`~clbench.strategies.ensemble.Ensemble`, every other cell through the wrapped executor (serial by
default) as usual. Each member keeps what its per-seed cell has: its stream (built from its seed), its
random initialisation (the strategy is built under ``seeded(seed)``), its data order and generators. The
per-seed path stays the default everywhere else.

Each cell still gets its own record, equal to the per-seed cell's up to floating-point rounding (see the
ensemble module). ``train_seconds`` of an experience is the ensemble's training time divided by the number of
members training (they share one computation); ``spec.ensemble`` names the seeds trained together. A member
that fails (divergence, an exception in its hooks) fails its own cell only. A callback raising
:class:`~clbench.callbacks.StopCell` stops that member's cell; any other callback exception propagates, as in
:func:`~clbench.protocols.runner.execute_cell`.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from clbench.callbacks import NO_CALLBACKS, CallbackError, Callbacks, StopCell
from clbench.errors import DataError, UserError
from clbench.results import CellRecord
from clbench.strategies.ensemble import Ensemble, ensemble_problem
from clbench.strategies.registry import resolve_strategy

from .config import CellSpec
from .executors import SerialExecutor
from .loop import _Memory, accuracy, finish_metrics
from .runner import StreamCache, cell_stream, describe_stream, execute_cell, new_record, seeded


def group_key(cell: CellSpec) -> str | None:
    """What cells of one ensemble share (everything but the seed); None for a cell that runs alone."""
    if cell.prune is not None:
        return None
    try:
        cls = resolve_strategy(cell.strategy["name"])
    except UserError:
        return None
    if ensemble_problem(cls, cell.hyperparameters) is not None:
        return None
    return json.dumps([cell.benchmark, cell.strategy, cell.device, cell.data_root, cell.cache_dir, cell.timeout,
                       cell.eval_period, cell.tag], sort_keys=True, default=str)


def group_cells(cells: Iterable[CellSpec]) -> list[list[CellSpec]]:
    """Cells grouped by :func:`group_key`, in order of first appearance; ungroupable cells alone."""
    groups: dict[str, list[CellSpec]] = {}
    out: list[list[CellSpec]] = []
    for cell in cells:
        key = group_key(cell)
        if key is None:
            out.append([cell])
        elif key in groups:
            groups[key].append(cell)
        else:
            groups[key] = [cell]
            out.append(groups[key])
    return out


def _fail(record: CellRecord, exc: BaseException) -> None:
    record.status = "failed"
    if isinstance(exc, CallbackError) and isinstance(exc.original, StopCell):
        record.error, record.error_kind = str(exc.original), "stopped"
        return
    record.error = f"{type(exc).__name__}: {exc}"
    record.error_kind = "data" if isinstance(exc, DataError) else ""
    record.spec["traceback"] = "".join(traceback.format_exception(exc, limit=8))


def _finish(record: CellRecord) -> None:
    finish_metrics(record)
    record.finished = time.time()


def run_group(cells: list[CellSpec], cache: StreamCache | None = None,
              callbacks: Callbacks = NO_CALLBACKS) -> list[CellRecord]:
    """The records of ``cells`` (one group of :func:`group_cells`), trained together as one ensemble.

    A group of one cell, or one whose members cannot be stacked (streams of different lengths), runs cell by
    cell through :func:`~clbench.protocols.runner.execute_cell`.
    """
    if len(cells) == 1:
        return [execute_cell(cells[0], cache, callbacks)]
    records = [new_record(c) for c in cells]
    for r in records:
        r.spec["ensemble"] = {"seeds": [c.seed for c in cells]}
    cache = StreamCache(len(cells) + 1)
    try:
        cls = resolve_strategy(cells[0].strategy["name"])
        bad = cls.parameter_problems(cells[0].hyperparameters)
        if bad:
            raise UserError("; ".join(bad))
        streams = [cell_stream(c, bool(cls.wants_features), cache) for c in cells]
        if len({len(s) for s in streams}) != 1:
            return [execute_cell(c, cache, callbacks) for c in cells]
        members = []
        for c, s, r in zip(cells, streams, records):
            r.stream = describe_stream(s)
            with seeded(c.seed):
                members.append(cls(s.info, seed=c.seed, device=c.device, **c.hyperparameters))
        ensemble = Ensemble(members)
    except Exception as exc:  # noqa: BLE001 - recorded, as execute_cell does
        for r in records:
            _fail(r, exc)
            r.finished = time.time()
        return records
    _lockstep(ensemble, streams, records, callbacks)
    return records


def _lockstep(ensemble: Ensemble, streams: list, records: list[CellRecord], callbacks: Callbacks) -> None:
    """:func:`~clbench.protocols.loop.run_stream` for K members at once (experience ends only)."""
    members, K = ensemble.members, len(ensemble.members)
    device = str(members[0].device)
    task_il = [s.scenario == "task-il" for s in streams]
    tests = [[(e.test, e.classes if task_il[k] else None) for e in streams[k].experiences] for k in range(K)]
    reported: set[int] = set()

    def fail(k: int, exc: BaseException) -> None:
        if isinstance(exc, CallbackError) and not isinstance(exc.original, StopCell):
            raise exc.original from None
        if k not in reported:
            _fail(records[k], exc)
            reported.add(k)
        ensemble.failed.setdefault(k, exc)

    for k in range(K):
        records[k].test_sizes = [len(t) for t, _ in tests[k]]
        try:
            records[k].baseline_accuracy = [accuracy(members[k], t, m, device) for t, m in tests[k]]
        except Exception:  # an untrained strategy may not be able to predict
            records[k].baseline_accuracy = [float("nan")] * len(tests[k])
        members[k].callbacks = callbacks
        try:
            callbacks.on_cell_start(records[k])
        except CallbackError as exc:
            fail(k, exc)
    memory = _Memory(members[0].device)
    for i in range(len(streams[0])):
        live = ensemble.live()
        if not live:
            break
        memory.start()
        t0 = time.perf_counter()
        ensemble.train_experience([streams[k][i].train_view() if k in live else None for k in range(K)])
        if memory.cuda:
            torch.cuda.synchronize(members[0].device)
        train_s = (time.perf_counter() - t0) / len(live)
        peak, alloc = memory.stop()
        for k in live:
            if k in ensemble.failed:
                fail(k, ensemble.failed[k])
                continue
            rec = records[k]
            t1 = time.perf_counter()
            try:
                row = [accuracy(members[k], t, m, device) for t, m in tests[k]]
            except Exception as exc:  # noqa: BLE001 - a contract break fails the cell
                fail(k, exc)
                continue
            rec.accuracy.append(row)
            rec.train_seconds.append(train_s)
            rec.eval_seconds.append(time.perf_counter() - t1)
            rec.peak_memory_mb.append(peak)
            rec.alloc_peak_mb.append(alloc)
            rec.state_bytes.append(int(members[k].state_bytes()))
            try:
                callbacks.on_experience_end(rec, i)
            except CallbackError as exc:
                fail(k, exc)
    for k in range(K):
        if k in ensemble.failed and k not in reported:
            fail(k, ensemble.failed[k])
        _finish(records[k])


class EnsembleExecutor:
    """Runs groups of cells differing only in seed as ensembles, the other cells through ``base`` (see the module docstring).

    It reads all the cells it is given before running any (to group them), so it is for matrices
    (``run_matrix``), not for the lazy, one-trial-at-a-time cell source of tuning.
    """

    def __init__(self, base: Any = None) -> None:
        self.base = base or SerialExecutor()

    def run(self, cells: Iterable[CellSpec], fn: Callable[[CellSpec], CellRecord]) -> Iterator[CellRecord]:
        groups = group_cells(c for c in cells if c is not None)
        single = [g[0] for g in groups if len(g) == 1]
        cache = StreamCache()
        for group in groups:
            if len(group) > 1:
                yield from run_group(group, cache)
        if single:
            yield from self.base.run(single, fn)
