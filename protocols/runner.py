"""The matrix runner: expand a config into cells, run the missing ones, record them atomically."""

from __future__ import annotations

import platform
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch

import clbench
from clbench.benchmarks.backbones import feature_stream
from clbench.benchmarks.registry import build_stream
from clbench.benchmarks.stream import Stream
from clbench.errors import UserError
from clbench.reports.tables import cells_frame, results_frame, summary_table
from clbench.strategies.registry import resolve_strategy

from .config import CellSpec, RunConfig
from .executors import make_executor
from .loop import CellResult, run_stream
from .store import atomic_write_json, atomic_write_text, atomic_write_yaml, read_json, remove_stale_tmp


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


def versions() -> dict[str, str]:
    v = {"clbench": clbench.__version__, "torch": torch.__version__, "python": platform.python_version()}
    if "avalanche" in sys.modules:
        v["avalanche"] = getattr(sys.modules["avalanche"], "__version__", "?")
    return v


def cell_stream(cell: CellSpec, wants_features: bool, cache: StreamCache | None = None) -> Stream:
    """The stream a cell trains on: built from its benchmark entry and seed, features if wanted."""
    import json

    key = json.dumps([cell.benchmark, cell.seed, cell.data_root], sort_keys=True, default=str)
    cache = cache or StreamCache(1)
    raw = cache.get(key, lambda: build_stream(cell.benchmark, cell.seed, cell.data_root))
    if not wants_features:
        return raw
    backbone = cell.benchmark.get("backbone")
    return cache.get(key + f"|features:{backbone}", lambda: feature_stream(raw, backbone, cell.cache_dir))


@contextmanager
def seeded(seed: int):
    """Seed torch's global generator for model initialisation without leaking the state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def execute_cell(cell: CellSpec, cache: StreamCache | None = None,
                 on_experience: Callable[[CellResult, int], None] | None = None,
                 reraise: tuple[type[BaseException], ...] = ()) -> CellResult:
    """Run one cell; any exception becomes a failed result with its reason (the matrix goes on).

    ``on_experience(result, done)`` sees the partly filled result after each experience (e.g. for
    pruning); exceptions of the ``reraise`` types (e.g. ``optuna.TrialPruned``) propagate instead.
    """
    result = CellResult(cell.cell_id, cell.benchmark_label, cell.strategy_label, cell.seed,
                        spec={"benchmark": cell.benchmark, "strategy": cell.strategy, "device": cell.device},
                        versions=versions(), started=time.time())
    try:
        hparams = {k: v for k, v in cell.strategy.items() if k not in ("name", "label")}
        cls = resolve_strategy(cell.strategy["name"])
        stream = cell_stream(cell, bool(getattr(cls, "wants_features", False)), cache)
        result.stream = {"name": stream.name, "scenario": stream.scenario, "n_classes": stream.n_classes,
                         "n_experiences": len(stream), "params": stream.params, "seed": stream.seed}
        with seeded(cell.seed):
            strategy = cls(stream.info, seed=cell.seed, device=cell.device, **hparams)
            if callable(getattr(strategy, "receive_unlabelled", None)):  # e.g. kvb key fitting: inputs, no labels
                strategy.receive_unlabelled(torch.cat([e.train.x for e in stream.experiences]))
            hook = None if on_experience is None else (lambda done, _total: on_experience(result, done))
            run_stream(strategy, stream, result, hook)
    except reraise:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        result.spec["traceback"] = traceback.format_exc(limit=8)
    result.finished = time.time()
    return result


class RunFolder:
    """Reads and writes one run folder (see :mod:`clbench.protocols.store` for its layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.cells_dir = self.path / "cells"

    def records(self) -> dict[str, dict[str, Any]]:
        out = {}
        if self.cells_dir.is_dir():
            for f in sorted(self.cells_dir.glob("*.json")):
                try:
                    rec = read_json(f)
                except (OSError, ValueError):
                    continue  # an unreadable record counts as missing: the cell runs again
                if not isinstance(rec, dict) or rec.get("cell_id") != f.stem or "status" not in rec:
                    continue  # not a record of ours (or renamed by hand): the cell runs again
                out[rec["cell_id"]] = rec
        return out

    def write_record(self, result: CellResult) -> None:
        atomic_write_json(self.cells_dir / f"{result.cell_id}.json", result.to_dict())

    def write_tables(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / "results.csv", results_frame(records).to_csv(index=False))
        atomic_write_text(self.path / "cells.csv", cells_frame(records).to_csv(index=False))

    def lock(self):
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"run folder {self.path} is in use by another clbench process; wait for it to finish or choose another --output/name") from None
        return lock


def run_matrix(config: RunConfig, *, quiet: bool = False, retry_failed: bool = False, executor=None,
               echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every cell of ``config`` not yet recorded in its run folder; return all records of the matrix."""
    folder = RunFolder(config.run_dir)
    lock = folder.lock()
    try:
        for d in (folder.path, folder.cells_dir):
            remove_stale_tmp(d)  # left by a killed earlier run; we hold the lock, so no writer is mid-write
        atomic_write_yaml(folder.path / "config.yaml", config.to_dict())
        cells = config.cells()
        done = folder.records()
        todo = [c for c in cells if c.cell_id not in done or (retry_failed and done[c.cell_id].get("status") != "ok")]
        wanted = {c.cell_id for c in cells}
        records = {k: v for k, v in done.items() if k in wanted}
        if not quiet:
            echo(f"run folder {folder.path}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")
        executor = executor or make_executor(config.executor, config.workers, timeout=config.timeout,
                                             address=config.address)
        bar = None
        if not quiet and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="cells", unit="cell", file=sys.stderr)
        for result in executor.run(todo, partial(execute_cell, cache=StreamCache())):  # picklable for workers
            folder.write_record(result)
            records[result.cell_id] = result.to_dict()
            folder.write_tables(list(records.values()))
            if bar is not None:
                bar.set_postfix_str(f"{result.benchmark}/{result.strategy}/s{result.seed}: "
                                    + (f"ACC {100 * result.metrics.get('acc', float('nan')):.1f}" if result.status == "ok" else "FAILED"))
                bar.update(1)
        if bar is not None:
            bar.close()
        ordered = [records[c.cell_id] for c in cells if c.cell_id in records]
        folder.write_tables(ordered)
        return ordered
    finally:
        lock.release()


def format_summary(records: list[dict[str, Any]]) -> str:
    """The printed summary: mean ± std over seeds per benchmark and strategy, and failed cells."""
    cells = cells_frame(records)
    if cells.empty:
        return "no cells"
    table = summary_table(cells).to_string(index=False)
    failed = cells[cells.status != "ok"]
    if len(failed):
        table += "\n\nfailed cells:\n" + "\n".join(f"  {r.benchmark}/{r.strategy}/seed {r.seed}: {r.error}" for r in failed.itertuples())
    return table
