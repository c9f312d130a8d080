"""Loading and aggregation: run folders -> a :class:`Comparison` of series (strategy configurations) per benchmark.

Identity. A *series* is one strategy entry (the ``spec.strategy`` of its records, label aside), a *benchmark*
one benchmark entry (``spec.benchmark``, label aside). With ``merge`` (the default) the cells of the same
series on the same benchmark from several run folders are pooled: their seeds together are one sample.
A seed recorded in two folders for the same series and benchmark is one measurement repeated, not two
seeds: the first folder's cell is kept and the duplicate is named in the report. Labels are the ones of
the configs (``finetune``); a label shared by different configurations gets its run folder appended
(``finetune [plug_vs_base]``). Every aggregate over seeds is :func:`clbench.stats.aggregate`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clbench.errors import UserError
from clbench.files import read_json
from clbench.results import CellRecord, read_run
from clbench.stats import Aggregate, aggregate

from .options import ReportOptions

#: marks a series whose strategy saw the unlabelled inputs of every experience, future ones included
SEES_FUTURE_MARK = "†"
SEES_FUTURE_NOTE = (f"{SEES_FUTURE_MARK} the strategy was given the unlabelled training inputs of all experiences, "
                    f"future ones included, before the first (stream.unlabelled = all_experiences_unlabelled): not "
                    f"comparable with methods that see only the past.")
#: record keys the stream description gains from a strategy's unlabelled-data request (not part of the stream itself)
_REQUEST_KEYS = ("unlabelled", "sees_future", "samples")
#: stream params that say how a strategy sees the same samples (frozen features), not which samples
_VIEW_KEYS = ("backbone", "feature_cache_hit")


@dataclass(frozen=True)
class MetricSpec:
    """A record metric shown as ``title`` after multiplying by ``scale``; ``better`` is "max" or "min"."""

    key: str
    title: str
    scale: float
    better: str
    decimals: int = 2


METRICS = {m.key: m for m in (
    MetricSpec("acc", "ACC (%)", 100.0, "max"),
    MetricSpec("aia", "AIA (%)", 100.0, "max"),
    MetricSpec("a_last", "A_last (%)", 100.0, "max"),
    MetricSpec("a_auc", "A_auc (%)", 100.0, "max"),
    MetricSpec("forgetting", "Forgetting (%)", 100.0, "min"),
    MetricSpec("bwt", "BWT (%)", 100.0, "max"),
    MetricSpec("fwt", "FWT (%)", 100.0, "max"),
    MetricSpec("train_seconds", "Train (s)", 1.0, "min"),
    MetricSpec("state_bytes", "State (MiB)", 1.0 / 2**20, "min", 3),
    MetricSpec("alloc_peak_mb", "Alloc. peak (MiB)", 1.0, "min", 1),
    MetricSpec("peak_memory_mb", "Process RSS peak (MiB)", 1.0, "min", 1),
)}
SHORT_TITLES = {"acc": "ACC", "aia": "AIA", "a_last": "A_last", "a_auc": "A_auc", "forgetting": "Forgetting", "bwt": "BWT",
                "fwt": "FWT"}


# ----------------------------------------------------------------------------------------------- run folders

@dataclass
class RunData:
    """One run folder as read from disk: its cell records (current config only), resolved config and tune record."""

    path: Path
    label: str
    config: dict[str, Any]
    records: list[CellRecord]
    stale: int = 0
    invalid: int = 0
    tune: dict[str, Any] | None = None
    tune_table: pd.DataFrame | None = None


def load_run(path: str | Path, label: str | None = None) -> RunData:
    """Read a run folder written by ``clbench run`` or ``clbench tune`` through :func:`clbench.results.read_run`.

    Only the records of the folder's current config are reported (records of an earlier config are counted
    and named in the report); a bad folder is one :class:`UserError`.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run folder {path} does not exist; fix: give the folder that `clbench run` printed, e.g. runs/quickstart")
    is_tune = (path / "tune.json").exists() or (path / "tune.csv").exists()
    if not (path / "cells").is_dir() and not (path / "config.yaml").exists() and not is_tune:
        inner = sorted(p.name for p in path.iterdir() if (p / "cells").is_dir() or (p / "config.yaml").exists())
        hint = (f"it holds run folders ({', '.join(inner[:6])}{', ...' if len(inner) > 6 else ''}): "
                f"give them, e.g. clbench report {path / inner[0]}") if inner else \
            "give a folder written by `clbench run` or `clbench tune`, e.g. runs/quickstart"
        raise UserError(f"{path} is not a clbench run folder (no cells/ nor config.yaml); fix: {hint}")
    contents = read_run(path)
    records = contents.current()
    tune = tune_table = None
    if (path / "tune.json").exists():
        try:
            tune = read_json(path / "tune.json")
        except (OSError, ValueError):
            tune = None
    if (path / "tune.csv").exists():
        try:
            tune_table = pd.read_csv(path / "tune.csv")
        except (OSError, ValueError, pd.errors.ParserError):
            tune_table = None
    if not records and tune is None and tune_table is None:
        raise UserError(f"run folder {path} has no finished cells yet; fix: run (or resume) it with `clbench run` first, "
                        f"then `clbench report {path}`")
    return RunData(path, label or path.name, contents.config or {}, records, len(contents.stale()), len(contents.invalid),
                   tune if isinstance(tune, dict) else None, tune_table)


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Short distinct labels: the folder name, else parent/name, else name#i."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    names = [f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.name}#{i + 1}" for i, p in enumerate(paths)]


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:60] or "x"


# ----------------------------------------------------------------------------------------------- identity

def _canonical(entry: Any) -> str:
    if isinstance(entry, dict):
        entry = {k: v for k, v in entry.items() if k != "label"}
    return json.dumps(entry, sort_keys=True, default=str)


def stream_key(rec: CellRecord) -> str:
    """What a paired test pairs on: the stream (classes, order, permutations, seed), not what a strategy asked for
    (unlabelled data) nor how it sees the inputs (``params.backbone``: frozen features of the same samples; whether
    they came from the feature cache)."""
    stream = {k: v for k, v in (rec.stream or {}).items() if k not in _REQUEST_KEYS}
    if isinstance(stream.get("params"), dict):
        stream["params"] = {k: v for k, v in stream["params"].items() if k not in _VIEW_KEYS}
    return json.dumps(stream, sort_keys=True, default=str)


def sees_future(rec: CellRecord) -> bool:
    """The cell's strategy was given the unlabelled inputs of every experience (``stream.sees_future``)."""
    return bool((rec.stream or {}).get("sees_future"))


def _scenario(s: str) -> str:
    return {"class-il": "class-IL", "domain-il": "domain-IL", "task-il": "task-IL"}.get(s, s)


def readable_benchmark(stream: dict[str, Any], fallback: str) -> str:
    """``"Split scikit-learn digits, class-IL, 5 experiences"`` from a record's ``stream`` (dataset from
    ``params.source.title``, the builder from the stream name, ``blurry`` from ``params.blurry``)."""
    params = stream.get("params") if isinstance(stream.get("params"), dict) else {}
    source = params.get("source") if isinstance(params.get("source"), dict) else {}
    name = str(stream.get("name") or fallback)
    dataset = source.get("title") or source.get("name")
    kind = name.split("_", 1)[0] if "_" in name else ""
    if dataset:
        head = f"{kind} {dataset}" if kind in ("split", "permuted") else str(dataset)
    else:
        head = name
    if isinstance(params.get("blurry"), dict):
        head = f"blurry {head}"
    if head.startswith(("split ", "permuted ", "blurry ")):
        head = head[:1].upper() + head[1:]
    parts = [head]
    if stream.get("scenario"):
        parts.append(_scenario(str(stream["scenario"])))
    n = stream.get("n_experiences")
    if isinstance(n, int):
        parts.append(f"{n} experience{'s' if n != 1 else ''}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------- the comparison

@dataclass
class Series:
    """One strategy configuration on one benchmark: its cells (ok and failed) pooled over run folders."""

    key: str
    bench: str
    cells: list[CellRecord] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    @property
    def ok_cells(self) -> list[CellRecord]:
        return [c for c in self.cells if c.ok]

    @property
    def failed_cells(self) -> list[CellRecord]:
        return [c for c in self.cells if not c.ok]

    @property
    def sees_future(self) -> bool:
        return any(sees_future(c) for c in self.cells)

    def metric(self, key: str) -> list[float]:
        """The metric per ok cell (NaN where the record has none)."""
        out = []
        for c in self.ok_cells:
            v = c.metrics.get(key)
            out.append(float("nan") if v is None else float(v))
        return out

    def agg(self, key: str) -> Aggregate:
        """Mean and spreads over the ok seeds (:func:`clbench.stats.aggregate`)."""
        return aggregate(self.metric(key))

    def values(self, key: str) -> dict[tuple[int, str], float]:
        """Metric value per (seed, stream) pairing key, ok cells only."""
        return {(c.seed, stream_key(c)): v for c, v in zip(self.ok_cells, self.metric(key))}


@dataclass
class Benchmark:
    """One benchmark entry: ``label`` is its short name (the config's, or renamed), ``title`` its readable name."""

    key: str
    label: str
    title: str
    slug: str
    stream: dict[str, Any]
    runs: list[str] = field(default_factory=list)

    @property
    def blurry(self) -> bool:
        """A blurry (generalized class-incremental) stream: ACC misleads, A_last is the headline."""
        params = self.stream.get("params") if isinstance(self.stream.get("params"), dict) else {}
        return isinstance(params.get("blurry"), dict)

    @property
    def headline(self) -> str:
        """The accuracy that ranks strategies on this benchmark: A_last on blurry streams, else ACC."""
        return "a_last" if self.blurry else "acc"


@dataclass
class Style:
    """How one strategy is drawn in every figure."""

    color: str
    marker: str
    linestyle: str


@dataclass
class Comparison:
    """What a report compares: benchmarks and strategies (ordered, labelled), and the series of each pair."""

    runs: list[RunData]
    options: ReportOptions
    benchmarks: list[Benchmark]
    strategies: list[str]
    labels: dict[str, str]
    series: dict[str, dict[str, Series]]
    styles: dict[str, Style]
    duplicates: list[tuple[CellRecord, str, str]] = field(default_factory=list)
    left_out: dict[str, list[str]] = field(default_factory=dict)

    origin: dict[int, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.origin = {id(r): run.label for run in self.runs for r in run.records}

    def run_of(self, cell: CellRecord) -> str:
        """The label of the run folder a cell was read from."""
        return self.origin.get(id(cell), "")

    def bench_series(self, bench: str) -> list[Series]:
        """The series of a benchmark in strategy order."""
        d = self.series.get(bench, {})
        return [d[k] for k in self.strategies if k in d]

    def label(self, series: Series | str, mark: bool = True) -> str:
        """A strategy's display label; with ``mark``, ``†`` when the series saw future experiences' inputs."""
        if isinstance(series, Series):
            return self.labels[series.key] + (SEES_FUTURE_MARK if mark and series.sees_future else "")
        return self.labels[series]

    def strategy_sees_future(self, key: str) -> bool:
        return any(b.get(key) is not None and b[key].sees_future for b in self.series.values())

    @property
    def any_sees_future(self) -> bool:
        return any(s.sees_future for b in self.series.values() for s in b.values())

    def all_cells(self) -> list[tuple[str, Series, CellRecord]]:
        return [(b.key, s, c) for b in self.benchmarks for s in self.bench_series(b.key) for c in s.cells]


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")
LINESTYLES = ("-", "--", "-.", ":")


def strategy_styles(keys: Sequence[str]) -> dict[str, Style]:
    """One colour (tab10, tab20 beyond ten), marker and line style per strategy, the same in every figure."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10" if len(keys) <= 10 else "tab20"]
    return {k: Style(to_hex(cmap(i % cmap.N)), MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
            for i, k in enumerate(keys)}


def _select(kind: str, wanted: Sequence[str] | None, names: dict[str, list[str]], order: list[str]) -> list[str]:
    """Keys in the order of ``wanted`` (labels as shown, as configured, or renamed); all of ``order`` when None."""
    if wanted is None:
        return list(order)
    out: list[str] = []
    for w in wanted:
        hits = [k for k in order if w in names[k]]
        if not hits:
            valid = sorted({names[k][0] for k in order})
            what = {"strategies": "strategy", "benchmarks": "benchmark"}[kind]
            raise UserError(f"--{kind} {w!r} matches no {what} of these runs; valid: {', '.join(valid)}")
        out += [k for k in hits if k not in out]
    return out


def build_comparison(runs: Sequence[RunData], options: ReportOptions) -> Comparison:
    """Group the records of ``runs`` into benchmarks x series, apply selection, renaming, order and styles."""
    bench_info: dict[str, dict[str, Any]] = {}
    strat_info: dict[str, dict[str, Any]] = {}
    series: dict[str, dict[str, Series]] = {}
    seen_cells: dict[tuple[str, str, int], str] = {}
    duplicates: list[tuple[CellRecord, str, str]] = []
    for run in runs:
        prefix = "" if options.merge else f"{run.label}|"
        for r in run.records:
            spec = r.spec if isinstance(r.spec, dict) else {}
            bk = prefix + (_canonical(spec["benchmark"]) if "benchmark" in spec else f"{run.label}|{r.benchmark}")
            sk = prefix + (_canonical(spec["strategy"]) if "strategy" in spec else f"{run.label}|{r.strategy}")
            b = bench_info.setdefault(bk, {"label": r.benchmark, "runs": [], "stream": {}})
            if run.label not in b["runs"]:
                b["runs"].append(run.label)
            if r.ok and not b["stream"]:
                b["stream"] = dict(r.stream or {})
            s = strat_info.setdefault(sk, {"label": r.strategy, "runs": []})
            if run.label not in s["runs"]:
                s["runs"].append(run.label)
            first = seen_cells.setdefault((bk, sk, r.seed), run.label)
            ser = series.setdefault(bk, {}).setdefault(sk, Series(sk, bk))
            if run.label not in ser.runs:
                ser.runs.append(run.label)
            if first != run.label:
                duplicates.append((r, first, run.label))
                continue
            ser.cells.append(r)
    for b in bench_info.values():  # a benchmark without an ok cell: describe it from any record
        if not b["stream"]:
            b["stream"] = next((dict(c.stream) for run in runs for c in run.records if c.benchmark == b["label"] and c.stream), {})
    rename = dict(options.rename)
    s_labels = _labels({k: v["label"] for k, v in strat_info.items()}, {k: v["runs"] for k, v in strat_info.items()})
    b_labels = _labels({k: v["label"] for k, v in bench_info.items()}, {k: v["runs"] for k, v in bench_info.items()})
    s_names = {k: [s_labels[k], strat_info[k]["label"]] for k in strat_info}
    b_names = {k: [b_labels[k], bench_info[k]["label"]] for k in bench_info}
    for names in (s_names, b_names):
        for k, ns in names.items():
            new = next((rename[n] for n in ns if n in rename), None)
            if new is not None:
                ns.insert(0, new)
    unknown = sorted(set(rename) - {n for ns in (*s_names.values(), *b_names.values()) for n in ns})
    if unknown:
        valid = sorted({ns[-1] for ns in (*s_names.values(), *b_names.values())})
        raise UserError(f"--rename {', '.join(unknown)}: no strategy or benchmark of these runs has that label; valid: {', '.join(valid)}")
    s_keys = _select("strategies", options.strategies, s_names, list(strat_info))
    b_keys = _select("benchmarks", options.benchmarks, b_names, list(bench_info))
    left_out = {"strategies": [s_names[k][0] for k in strat_info if k not in s_keys],
                "benchmarks": [b_names[k][0] for k in bench_info if k not in b_keys]}
    labels = {k: s_names[k][0] for k in strat_info}
    _check_unique("strategy", [labels[k] for k in s_keys])
    benchmarks = []
    used: set[str] = set()
    for k in b_keys:
        info = bench_info[k]
        label = b_names[k][0]
        renamed = label != b_labels[k]
        title = label if renamed else readable_benchmark(info["stream"], info["label"])
        if not renamed and b_labels[k] != info["label"]:  # the same label for two benchmark entries: say which run
            title += f" [{', '.join(info['runs'])}]"
        base = sl = slug(label)
        i = 2
        while sl in used:
            sl, i = f"{base}-{i}", i + 1
        used.add(sl)
        benchmarks.append(Benchmark(k, label, title, sl, info["stream"], info["runs"]))
    _check_unique("benchmark", [b.label for b in benchmarks])
    kept = {b.key: {sk: s for sk, s in series[b.key].items() if sk in s_keys} for b in benchmarks}
    kept = {bk: d for bk, d in kept.items() if d}
    benchmarks = [b for b in benchmarks if b.key in kept]
    strategies = [k for k in s_keys if any(k in d for d in kept.values())]
    return Comparison(list(runs), options, benchmarks, strategies, labels, kept, strategy_styles(strategies), duplicates,
                      left_out)


def _labels(base: dict[str, str], runs: dict[str, list[str]]) -> dict[str, str]:
    """The configured label, with `` [run]`` appended only where two configurations share it."""
    count: dict[str, int] = {}
    for v in base.values():
        count[v] = count.get(v, 0) + 1
    out = {k: (v if count[v] == 1 else f"{v} [{'+'.join(runs[k])}]") for k, v in base.items()}
    seen: dict[str, int] = {}
    for k, v in out.items():
        seen[v] = seen.get(v, 0) + 1
        if seen[v] > 1:
            out[k] = f"{v} #{seen[v]}"
    return out


def _check_unique(kind: str, labels: list[str]) -> None:
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"two {kind} configurations would both be called {', '.join(map(repr, dup))} after --rename; "
                        f"fix: give them different names")


# ----------------------------------------------------------------------------------------------- curves

def seen_curves(s: Series) -> np.ndarray | None:
    """Seeds x experiences accuracy on all seen test data (the most common stream length; None without ok cells)."""
    ok = s.ok_cells
    if not ok:
        return None
    lengths = [c.n_experiences for c in ok]
    T = max(set(lengths), key=lengths.count)
    return np.vstack([c.seen_accuracy() for c in ok if c.n_experiences == T])


def band_bounds(samples: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean and the band's lower/upper edge over seeds (rows) by :func:`clbench.stats.aggregate`.

    ``std``: mean ± s; ``ci``: mean ± t s / sqrt(n); ``minmax``: [min, max]; ``none``: NaN edges.
    With one seed std and ci are NaN (no band).
    """
    aggs = [aggregate(samples[:, j]) for j in range(samples.shape[1])]
    mean = np.array([a.mean for a in aggs])
    if band == "none":
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan
    if band == "minmax":
        return mean, np.array([a.min for a in aggs]), np.array([a.max for a in aggs])
    h = np.array([a.spread(band) for a in aggs])
    return mean, mean - h, mean + h


def resolve_band(band: str, n_seeds: Sequence[int], ci_from: int) -> str:
    """``auto`` -> ``ci`` when every curve has at least ``ci_from`` seeds, else ``std`` (a t-based band from 2
    seeds spans t_{0.975,1} = 12.7 standard errors and hides everything)."""
    if band != "auto":
        return band
    return "ci" if n_seeds and min(n_seeds) >= ci_from else "std"


def finite(v: float) -> bool:
    return v is not None and not math.isnan(v)
