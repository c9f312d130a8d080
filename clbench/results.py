"""The cell record and the run folder: what a finished cell is, how it is stored, and the tables derived from it.

Layout of a run folder ``runs/<name>/``::

    config.yaml      the resolved configuration: the matrix this folder holds
    cells/<id>.json  one :class:`CellRecord` per finished (or failed) cell, written atomically
    results.csv      tidy table: one row per ok cell x trained experience x evaluated experience
    cells.csv        one row per cell: status, error, scalar metrics
    report/          tables and plots (clbench report)

Everything that reads records goes through :func:`read_run` (resume, report, tune, bench scripts), so a
record is valid or not in one place: :meth:`CellRecord.from_dict` checks the schema version, every field's
type and shape, and that the recorded ACC is the one of the recorded accuracy matrix. A record that fails
is treated as absent (the cell runs again) with one warning naming the file.

**Run-folder identity.** A folder holds the matrix of its current ``config.yaml``. When a config changes
(``epochs: 1`` -> ``epochs: 3``), the changed entries have other cell ids; records of cells that are not in
the current matrix stay on disk but are never mixed into tables or reports (:meth:`RunContents.stale`
lists them, and ``clbench run``/``report`` say how many were left out).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .files import load_yaml_file, read_json
from .metrics import final_accuracy, seen_accuracy
from .stats import SPREADS, aggregate, format_aggregate

SCHEMA_VERSION = 2
STATUSES = ("ok", "failed")
#: why a cell failed, when it is not the strategy's fault: a plain rerun runs such cells again
RETRY_KINDS = ("data",)


def cell_id(benchmark: Mapping[str, Any], strategy: Mapping[str, Any], seed: int) -> str:
    """The stable id of a cell: a hash of its benchmark entry, strategy entry and seed."""
    key = json.dumps({"b": benchmark, "s": strategy, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


class InvalidRecord(ValueError):
    """A cell record that does not pass :meth:`CellRecord.from_dict`; the message says why."""


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num_list(v: Any, n: int | None = None) -> bool:
    return isinstance(v, list) and all(_num(x) for x in v) and (n is None or len(v) == n)


@dataclass
class CellRecord:
    """Everything measured for one (benchmark, strategy, seed) cell (schema :data:`SCHEMA_VERSION`).

    ``accuracy[i][j]`` = R[i, j], accuracy on experience j's test set after training on experience i;
    ``baseline_accuracy`` the untrained model's (for FWT); per-experience ``train_seconds``,
    ``eval_seconds``, ``peak_memory_mb`` (process RSS high-water mark), ``alloc_peak_mb`` (memory the
    strategy itself allocated during training, above the process baseline), ``state_bytes``; ``anytime``
    pairs ``[training samples seen, accuracy on the seen classes' test data]`` when the loop evaluates
    during experiences (``eval_period``). ``metrics`` are the scalar metrics of :mod:`clbench.metrics`.
    ``error_kind`` is ``data`` when the cell failed because of its data (a plain rerun retries it).
    ``host`` holds the machine facts of :mod:`clbench.host`.
    """

    cell_id: str
    benchmark: str
    strategy: str
    seed: int
    status: str = "ok"
    error: str = ""
    error_kind: str = ""
    accuracy: list[list[float]] = field(default_factory=list)
    baseline_accuracy: list[float] = field(default_factory=list)
    test_sizes: list[int] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    peak_memory_mb: list[float] = field(default_factory=list)
    alloc_peak_mb: list[float] = field(default_factory=list)
    state_bytes: list[int] = field(default_factory=list)
    anytime: list[list[float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    schema: int = SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def n_experiences(self) -> int:
        return len(self.accuracy)

    def seen_accuracy(self) -> np.ndarray:
        """a_i: accuracy on the union of the test sets seen after step i (see :func:`clbench.metrics.seen_accuracy`)."""
        return seen_accuracy(np.asarray(self.accuracy, dtype=float), self.test_sizes or None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, expect_id: str | None = None) -> "CellRecord":
        """A checked record; :class:`InvalidRecord` naming the first problem otherwise.

        Accepts schema 1 (the first release: no ``schema`` key, no ``alloc_peak_mb``/``anytime``/``host``).
        """
        if not isinstance(d, dict):
            raise InvalidRecord(f"not a JSON object but {type(d).__name__}")
        schema = d.get("schema", 1)
        if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= SCHEMA_VERSION:
            raise InvalidRecord(f"schema {schema!r} is not one this clbench reads (1..{SCHEMA_VERSION}); "
                                f"a newer clbench may have written it")
        for key, ok in (("cell_id", isinstance(d.get("cell_id"), str)), ("benchmark", isinstance(d.get("benchmark"), str)),
                        ("strategy", isinstance(d.get("strategy"), str)),
                        ("seed", isinstance(d.get("seed"), int) and not isinstance(d.get("seed"), bool)),
                        ("status", d.get("status") in STATUSES)):
            if not ok:
                raise InvalidRecord(f"field {key!r} is missing or has the wrong type ({d.get(key)!r})")
        if expect_id is not None and d["cell_id"] != expect_id:
            raise InvalidRecord(f"its cell_id {d['cell_id']!r} is not its file name {expect_id!r}")
        for key in ("error", "error_kind"):
            if not isinstance(d.get(key, ""), str):
                raise InvalidRecord(f"field {key!r} must be a string")
        for key in ("metrics", "spec", "stream", "versions", "host"):
            if not isinstance(d.get(key, {}), dict):
                raise InvalidRecord(f"field {key!r} must be an object")
        for key in ("started", "finished"):
            if not _num(d.get(key, 0.0)):
                raise InvalidRecord(f"field {key!r} must be a number")
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in d.items() if k in known})
        rec.schema = SCHEMA_VERSION
        if rec.ok:
            rec._check_ok()
        return rec

    def _check_ok(self) -> None:
        """An ok record holds a square accuracy matrix in [0, 1], per-experience lists of its size, and its ACC."""
        R = self.accuracy
        T = len(R) if isinstance(R, list) else 0
        if T == 0 or not all(_num_list(row, T) for row in R):
            raise InvalidRecord("an ok record needs a square accuracy matrix (list of T lists of T numbers)")
        arr = np.asarray(R, dtype=float)
        for key in ("test_sizes", "train_seconds", "eval_seconds", "peak_memory_mb", "state_bytes"):
            if not _num_list(getattr(self, key), T):
                raise InvalidRecord(f"field {key!r} must be a list of {T} numbers")
        empty = np.asarray(self.test_sizes) == 0
        if np.isnan(arr[:, ~empty]).any() or not np.all((arr[~np.isnan(arr)] >= 0) & (arr[~np.isnan(arr)] <= 1)):
            raise InvalidRecord("accuracies must lie in [0, 1] (NaN only for an experience without test data)")
        for key in ("baseline_accuracy", "alloc_peak_mb"):
            v = getattr(self, key)
            if v and not _num_list(v, T):
                raise InvalidRecord(f"field {key!r} must be empty or a list of {T} numbers")
        if not isinstance(self.anytime, list) or not all(_num_list(p, 2) for p in self.anytime):
            raise InvalidRecord("field 'anytime' must be a list of [samples, accuracy] pairs")
        if not all(isinstance(k, str) and (_num(v) or v is None) for k, v in self.metrics.items()):
            raise InvalidRecord("metrics must map names to numbers")
        acc = self.metrics.get("acc")
        if not _num(acc) or not (math.isclose(acc, final_accuracy(arr), rel_tol=0, abs_tol=1e-9)
                                 or (math.isnan(acc) and math.isnan(final_accuracy(arr)))):
            raise InvalidRecord(f"its ACC {acc!r} is not the mean of the last row of its accuracy matrix")

    # ---- tidy rows
    def result_rows(self) -> list[tuple]:
        """Rows of ``results.csv`` (one per trained x evaluated experience); none for a failed cell."""
        if not self.ok:
            return []
        rows = []
        for i, row in enumerate(self.accuracy):
            for j, acc in enumerate(row):
                rows.append((self.benchmark, self.strategy, self.seed, i, j, acc, self.test_sizes[j],
                             self.train_seconds[i], self.eval_seconds[i], self.peak_memory_mb[i],
                             self.alloc_peak_mb[i] if self.alloc_peak_mb else np.nan, self.state_bytes[i], self.cell_id))
        return rows

    def cell_row(self) -> tuple:
        """The row of ``cells.csv``."""
        m = self.metrics if self.ok else {}
        return (self.benchmark, self.strategy, self.seed, self.status, self.error,
                *[(m.get(k) if m.get(k) is not None else np.nan) for k in METRIC_COLUMNS], self.cell_id)


RESULT_COLUMNS = ["benchmark", "strategy", "seed", "trained_exp", "evaluated_exp", "accuracy", "n_test", "train_seconds",
                  "eval_seconds", "peak_memory_mb", "alloc_peak_mb", "state_bytes", "cell_id"]
METRIC_COLUMNS = ["acc", "aia", "a_last", "a_auc", "bwt", "fwt", "forgetting", "train_seconds",
                  "peak_memory_mb", "alloc_peak_mb", "state_bytes"]
CELL_COLUMNS = ["benchmark", "strategy", "seed", "status", "error", *METRIC_COLUMNS, "cell_id"]
PERCENT_METRICS = ("acc", "aia", "a_last", "a_auc", "bwt", "fwt", "forgetting")


def results_frame(records: Iterable[CellRecord]) -> pd.DataFrame:
    """One row per ok cell x trained experience x evaluated experience (failed cells have no rows)."""
    rows = [row for r in records for row in r.result_rows()]
    return frame_from_rows(rows, RESULT_COLUMNS, ["benchmark", "strategy", "seed", "trained_exp", "evaluated_exp"])


def cells_frame(records: Iterable[CellRecord]) -> pd.DataFrame:
    """One row per cell: status, error and the scalar metrics (NaN for failed cells)."""
    return frame_from_rows([r.cell_row() for r in records], CELL_COLUMNS, ["benchmark", "strategy", "seed"])


def frame_from_rows(rows: Sequence[tuple], columns: Sequence[str], order: Sequence[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(list(rows), columns=list(columns))
    return df.sort_values(list(order), kind="stable").reset_index(drop=True)


SUMMARY_METRICS = {"acc": "ACC", "aia": "AIA", "a_last": "A_last", "forgetting": "Forget", "bwt": "BWT",
                   "train_seconds": "train s"}


def summary_frame(records: Iterable[CellRecord], spread: str = "std",
                  metrics: Mapping[str, str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Per benchmark x strategy: mean ± ``spread`` (``std`` or ``ci``) over the ok seeds, as strings.

    Accuracies in percent; ``seeds`` counts ok cells, ``failed`` failed ones. :data:`clbench.stats.SPREADS`
    names the spread; callers print that name with the table.
    """
    groups: dict[tuple[str, str], list[CellRecord]] = {}
    for r in records:
        groups.setdefault((r.benchmark, r.strategy), []).append(r)
    rows = []
    for (b, s), rs in groups.items():
        ok = [r for r in rs if r.ok]
        row: dict[str, Any] = {"benchmark": b, "strategy": s, "seeds": len(ok)}
        for m, title in metrics.items():
            agg = aggregate([r.metrics.get(m, np.nan) if r.metrics.get(m) is not None else np.nan for r in ok])
            row[title] = format_aggregate(agg, spread, 100.0 if m in PERCENT_METRICS else 1.0)
        row["failed"] = len(rs) - len(ok)
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(records: Sequence[CellRecord], spread: str = "std") -> str:
    """The terminal summary: the summary table with what ± means, then the failed cells and why."""
    if not records:
        return "no cells"
    text = summary_frame(records, spread).to_string(index=False)
    text = f"{SPREADS[spread]}; accuracies in %\n" + text
    failed = [r for r in records if not r.ok]
    if failed:
        text += "\n\nfailed cells:\n" + "\n".join(f"  {r.benchmark}/{r.strategy}/seed {r.seed}: {r.error}" for r in failed)
    return text


# ---------------------------------------------------------------- the run folder


@dataclass(frozen=True)
class MatrixCell:
    """One cell of a config's matrix: id, labels and seed."""

    cell_id: str
    benchmark: str
    strategy: str
    seed: int


def entry_label(entry: Mapping[str, Any]) -> str:
    return str(entry.get("label") or entry["name"])


def config_matrix(config: Mapping[str, Any]) -> list[MatrixCell] | None:
    """The cells of a resolved config (benchmark -> seed -> strategy order), or None when it holds no matrix."""
    b, s, seeds = config.get("benchmarks"), config.get("strategies"), config.get("seeds")
    if not (isinstance(b, list) and isinstance(s, list) and isinstance(seeds, list)):
        return None
    if not all(isinstance(e, dict) and "name" in e for e in b + s):
        return None
    return [MatrixCell(cell_id(be, se, seed), entry_label(be), entry_label(se), seed) for be in b for seed in seeds for se in s]


@dataclass
class RunContents:
    """A run folder as read from disk (see the module docstring)."""

    path: Path
    config: dict[str, Any] | None
    records: dict[str, CellRecord]
    invalid: list[tuple[Path, str]]
    matrix: list[MatrixCell] | None

    def current(self) -> list[CellRecord]:
        """Records of the current config's matrix, in config order (all valid records when there is no config)."""
        if self.matrix is None:
            return sorted(self.records.values(), key=lambda r: (r.benchmark, r.strategy, r.seed))
        return [self.records[c.cell_id] for c in self.matrix if c.cell_id in self.records]

    def stale(self) -> list[CellRecord]:
        """Valid records of cells that are not in the current config's matrix (kept on disk, never reported)."""
        if self.matrix is None:
            return []
        ids = {c.cell_id for c in self.matrix}
        return [r for k, r in sorted(self.records.items()) if k not in ids]

    def missing(self) -> list[MatrixCell]:
        return [] if self.matrix is None else [c for c in self.matrix if c.cell_id not in self.records]


def read_record(path: Path) -> CellRecord:
    """One record file, checked; :class:`InvalidRecord` (unreadable JSON included) otherwise."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise InvalidRecord(f"cannot be read as JSON ({exc})") from None
    return CellRecord.from_dict(data, expect_id=path.stem)


def read_run(folder: str | Path, *, warn: bool = True) -> RunContents:
    """Read a run folder's config and every cell record; invalid records are left out with one warning each."""
    path = Path(folder)
    config = None
    if (path / "config.yaml").is_file():
        try:
            loaded = load_yaml_file(path / "config.yaml")
            config = loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError) as exc:
            if warn:
                warnings.warn(f"ignoring {path / 'config.yaml'}: {exc}", stacklevel=2)
    records: dict[str, CellRecord] = {}
    invalid: list[tuple[Path, str]] = []
    cells = path / "cells"
    if cells.is_dir():
        for f in sorted(cells.glob("*.json")):
            try:
                rec = read_record(f)
            except InvalidRecord as exc:
                invalid.append((f, str(exc)))
                if warn:
                    warnings.warn(f"cell record {f} is not valid ({exc}); it is treated as absent (clbench run runs "
                                  f"that cell again)", stacklevel=2)
                continue
            records[rec.cell_id] = rec
    return RunContents(path, config, records, invalid, None if config is None else config_matrix(config))
