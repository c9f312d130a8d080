"""``clbench report``: tables, figures and statistics of one or more run folders, and one self-contained report.html.

Entry points: :func:`write_report` (any caller: ``clbench report``, the end of ``clbench run`` and
``clbench tune``) and :func:`report_after_run` (same, but never raises: prints why it failed).

Output folder (default ``<run>/report``; for several runs ``<parent of the first>/report-<a>+<b>``)::

    report.html                self-contained page (CSS inline, figures as base64 PNG, no script, no network)
    report.md                  the same content in Markdown, figures linked from figures/
    tables/summary_<bench>.{csv,md,tex}    strategies x metrics, mean ± 95% CI over seeds
    tables/pairwise_<bench>.{csv,md,tex}   paired tests on ACC (shared seeds and streams)
    tables/ranks.{csv,md,tex}              average ranks, Friedman + Nemenyi critical difference
    tables/failed_cells.csv                every failed cell with its reason
    tables/tune.{csv,md,tex}               tune runs: conventional vs two-phase score and rank
    figures/<name>.{png,pdf}               one pair per figure
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clbench.errors import UserError
from clbench.files import atomic_write_bytes, atomic_write_text, ensure_folder
from clbench.results import CellRecord, read_run

from .document import Block, FigureRef, Heading, Table, Text, render_markdown, table_latex, table_markdown
from clbench.stats import MeanCI, ci_band, friedman_nemenyi, holm, mean_ci, paired_test

FORMATS = ("html", "md", "png", "pdf")
DEFAULT_FORMATS = FORMATS
CONFIDENCE = 0.95


@dataclass(frozen=True)
class MetricSpec:
    """A summary column: record metric ``key`` times ``scale`` (CSV columns ``<column>_mean``/``_ci95``/``_best``)."""

    key: str
    title: str
    scale: float
    better: str  # "max" | "min"
    decimals: int
    column: str = ""

    @property
    def csv(self) -> str:
        return self.column or self.key


METRICS = (
    MetricSpec("acc", "ACC (%)", 100.0, "max", 2),
    MetricSpec("aia", "AIA (%)", 100.0, "max", 2),
    MetricSpec("forgetting", "Forgetting (%)", 100.0, "min", 2),
    MetricSpec("bwt", "BWT (%)", 100.0, "max", 2),
    MetricSpec("train_seconds", "Train (s)", 1.0, "min", 2),
    MetricSpec("peak_memory_mb", "Peak mem (MiB)", 1.0, "min", 1),
    MetricSpec("state_bytes", "State (MiB)", 1.0 / 2**20, "min", 3, "state_mib"),
)


# ----------------------------------------------------------------------------------------------- loading

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


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
                f"give them, e.g. clbench report {path / inner[0]}") if inner else "give a folder written by `clbench run` or `clbench tune`, e.g. runs/quickstart"
        raise UserError(f"{path} is not a clbench run folder (no cells/ nor config.yaml); fix: {hint}")
    contents = read_run(path)
    records = contents.current()
    tune = tune_table = None
    if (path / "tune.json").exists():
        try:
            tune = _read_json(path / "tune.json")
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
                   tune, tune_table)


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Short distinct labels: the folder name, else parent/name, else name#i."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    names = [f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.name}#{i + 1}" for i, p in enumerate(paths)]


# ----------------------------------------------------------------------------------------------- cells

@dataclass
class Cell:
    run: str
    benchmark: str
    strategy: str
    series: str
    seed: int
    status: str
    error: str
    metrics: dict[str, float]
    R: np.ndarray | None
    seen: np.ndarray | None
    stream_key: str

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.R is not None and self.R.size > 0


def collect_cells(runs: Sequence[RunData]) -> list[Cell]:
    """Flatten the records of all runs (already in config order); a series is the strategy label, plus ``[run]``
    when several runs are compared."""
    multi = len(runs) > 1
    cells = []
    for run in runs:
        for r in run.records:
            series = f"{r.strategy} [{run.label}]" if multi else r.strategy
            R = np.asarray(r.accuracy, dtype=float) if r.ok else None
            cells.append(Cell(run.label, r.benchmark, r.strategy, series, r.seed, r.status,
                              "" if r.ok else (r.error or "no reason recorded"), dict(r.metrics) if r.ok else {}, R,
                              r.seen_accuracy() if r.ok else None, json.dumps(r.stream, sort_keys=True, default=str)))
    return cells


@dataclass
class SeriesStats:
    """Aggregates of one (benchmark, series): per-metric mean ± CI over ok seeds, failures."""

    series: str
    strategy: str
    run: str
    cells: list[Cell]
    ci: dict[str, MeanCI] = field(default_factory=dict)

    @property
    def ok_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.ok]

    @property
    def n_failed(self) -> int:
        return sum(not c.ok for c in self.cells)

    def values(self, key: str) -> dict[tuple[int, str], float]:
        """Metric value per (seed, stream) pairing key, ok cells only."""
        return {(c.seed, c.stream_key): float(c.metrics.get(key, np.nan)) for c in self.ok_cells}


def series_stats(cells: Sequence[Cell]) -> dict[str, dict[str, SeriesStats]]:
    """benchmark -> series -> aggregates (order: benchmarks and series as first met)."""
    out: dict[str, dict[str, SeriesStats]] = {}
    for c in cells:
        s = out.setdefault(c.benchmark, {}).setdefault(c.series, SeriesStats(c.series, c.strategy, c.run, []))
        s.cells.append(c)
    for bench in out.values():
        for s in bench.values():
            for m in METRICS:
                s.ci[m.key] = mean_ci([c.metrics.get(m.key, np.nan) for c in s.ok_cells], CONFIDENCE)
    return out


# ----------------------------------------------------------------------------------------------- tables

def _fmt(ci: MeanCI, scale: float, decimals: int) -> str:
    if ci.n == 0 or math.isnan(ci.mean):
        return "—"
    if math.isnan(ci.half_width):
        return f"{scale * ci.mean:.{decimals}f}"
    return f"{scale * ci.mean:.{decimals}f} ± {scale * ci.half_width:.{decimals}f}"


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:60] or "x"


def benchmark_table(bench: str, stats: dict[str, SeriesStats], name: str, multi: bool) -> Table:
    """Strategies x metrics, mean ± 95% CI over seeds, best per column, paired p-values on ACC against the best row."""
    rows_stats = list(stats.values())
    columns = ["Strategy"] + (["Run"] if multi else []) + ["seeds ok", "failed"] + [m.title for m in METRICS] \
        + ["p vs best (t)", "p vs best (W)"]
    first_metric = len(columns) - len(METRICS) - 2
    best_cells: set[tuple[int, int]] = set()
    for mi, m in enumerate(METRICS):
        means = [s.ci[m.key].mean for s in rows_stats]
        finite = [v for v in means if not math.isnan(v)]
        if len(finite) < 1:
            continue
        target = max(finite) if m.better == "max" else min(finite)
        for r, v in enumerate(means):
            if not math.isnan(v) and abs(v - target) <= 1e-12 * max(1.0, abs(target)):
                best_cells.add((r, first_metric + mi))
    acc_means = [s.ci["acc"].mean for s in rows_stats]
    best_row = None
    if any(not math.isnan(v) for v in acc_means):
        best_row = int(np.nanargmax(np.array(acc_means, dtype=float)))
    rows, failed_rows, data = [], set(), []
    for r, s in enumerate(rows_stats):
        n_ok = len(s.ok_cells)
        row = [s.strategy] + ([s.run] if multi else []) + [str(n_ok), str(s.n_failed)]
        rec: dict[str, Any] = {"benchmark": bench, "strategy": s.strategy, "run": s.run, "series": s.series,
                               "seeds_ok": n_ok, "failed": s.n_failed}
        for m in METRICS:
            ci = s.ci[m.key]
            row.append("failed" if n_ok == 0 else _fmt(ci, m.scale, m.decimals))
            rec[f"{m.csv}_mean"] = ci.mean * m.scale if n_ok else np.nan
            rec[f"{m.csv}_ci95"] = ci.half_width * m.scale if n_ok else np.nan
            rec[f"{m.csv}_best"] = (r, first_metric + METRICS.index(m)) in best_cells
        p_t = p_w = float("nan")
        if best_row is not None and r != best_row and n_ok:
            a, b = s.values("acc"), rows_stats[best_row].values("acc")
            keys = sorted(set(a) & set(b))
            if keys:
                pt = paired_test(s.series, rows_stats[best_row].series, [a[k] for k in keys], [b[k] for k in keys])
                p_t, p_w = pt.p_t, pt.p_wilcoxon
        row += ["best" if r == best_row else _fmt_p(p_t), "best" if r == best_row else _fmt_p(p_w)]
        rec["p_vs_best_t"], rec["p_vs_best_wilcoxon"] = p_t, p_w
        rows.append(row)
        data.append(rec)
        if n_ok == 0:
            failed_rows.add(r)
    caption = (f"{bench}: mean ± 95% CI over seeds (Student t, n−1 d.o.f.; no ± with one seed); accuracies in %; "
               f"best per column in bold (higher ACC/AIA/BWT, lower forgetting/time/memory); "
               f"p vs best: paired t-test (t) and Wilcoxon signed-rank (W) on ACC against the best-ACC row, "
               f"over shared seeds and streams, uncorrected.")
    return Table(name, caption, columns, rows, pd.DataFrame(data), best_cells, failed_rows)


def pairwise_table(bench: str, stats: dict[str, SeriesStats], name: str) -> Table | None:
    """All pairs of series on ACC over their shared (seed, stream) cells: mean difference ± CI and p-values."""
    series = [s for s in stats.values() if s.ok_cells]
    tests = []
    for i, a in enumerate(series):
        for b in series[i + 1:]:
            va, vb = a.values("acc"), b.values("acc")
            keys = sorted(set(va) & set(vb))
            if len(keys) >= 2:
                tests.append(paired_test(a.series, b.series, [va[k] for k in keys], [vb[k] for k in keys], CONFIDENCE))
    if not tests:
        return None
    adj = holm([t.p_t for t in tests])
    rows, data = [], []
    for t, ph in zip(tests, adj):
        rows.append([t.a, t.b, str(t.n), _fmt(t.diff, 100.0, 2), _fmt_p(t.p_t), _fmt_p(ph), _fmt_p(t.p_wilcoxon)])
        data.append({"benchmark": bench, "a": t.a, "b": t.b, "pairs": t.n, "acc_diff_mean": 100 * t.diff.mean,
                     "acc_diff_ci95": 100 * t.diff.half_width, "p_t": t.p_t, "p_t_holm": ph, "p_wilcoxon": t.p_wilcoxon})
    caption = (f"{bench}: paired comparisons of ACC (A − B, percentage points, mean ± 95% CI) over the seeds whose "
               f"streams are identical for both; paired t-test p, its Holm-adjusted p over this table, and the exact "
               f"Wilcoxon signed-rank p (its smallest attainable value with n pairs is 2/2^n).")
    return Table(name, caption, ["A", "B", "pairs", "ΔACC (pp)", "p (t)", "p (t, Holm)", "p (Wilcoxon)"], rows,
                 pd.DataFrame(data))


def ranking(stats: dict[str, dict[str, SeriesStats]]):
    """Critical-difference ranking on ACC: blocks = benchmarks (mean over seeds) when at least two benchmarks share
    two or more series, else the shared (seed, stream) cells of the single benchmark. ``None`` when undefined."""
    benches = [b for b in stats if any(s.ok_cells for s in stats[b].values())]
    if len(benches) >= 2:
        common = [n for n in stats[benches[0]] if all(n in stats[b] and stats[b][n].ok_cells for b in benches)]
        if len(common) >= 2:
            scores = {n: [stats[b][n].ci["acc"].mean for b in benches] for n in common}
            return friedman_nemenyi(scores, True, 0.05, blocks=f"benchmarks: {', '.join(benches)}")
    if len(benches) == 1:
        bs = [s for s in stats[benches[0]].values() if s.ok_cells]
        if len(bs) >= 2:
            keys = set.intersection(*(set(s.values("acc")) for s in bs))
            if len(keys) >= 2:
                keys = sorted(keys)
                scores = {s.series: [s.values("acc")[k] for k in keys] for s in bs}
                return friedman_nemenyi(scores, True, 0.05, blocks=f"seeds of {benches[0]}")
    return None


def ranks_table(rank) -> Table:
    order = sorted(rank.names, key=lambda n: rank.avg_rank[n])
    best = rank.avg_rank[order[0]]
    rows, data = [], []
    for n in order:
        diff = rank.avg_rank[n] - best
        sig = "yes" if diff > rank.cd else "no"
        rows.append([n, f"{rank.avg_rank[n]:.2f}", f"{diff:.2f}", "—" if n == order[0] else sig])
        data.append({"series": n, "avg_rank": rank.avg_rank[n], "diff_to_best": diff, "cd": rank.cd,
                     "significant_vs_best": diff > rank.cd if n != order[0] else False,
                     "friedman_chi2": rank.chi2, "friedman_p": rank.p_friedman, "blocks": rank.blocks, "n_blocks": rank.n_blocks})
    caption = (f"Average rank by ACC (1 = best) over {rank.n_blocks} blocks ({rank.blocks}); Friedman chi2 = {rank.chi2:.2f}, "
               f"p = {_fmt_p(rank.p_friedman)}; Nemenyi critical difference CD = {rank.cd:.2f} at alpha = {rank.alpha} "
               f"(a rank gap larger than CD is significant).")
    return Table("ranks", caption, ["Strategy", "avg rank", "gap to best", f"gap > CD ({rank.cd:.2f})"], rows, pd.DataFrame(data),
                 {(0, 1)})


# ----------------------------------------------------------------------------------------------- tune runs

def tune_entries(run: RunData) -> list[Any] | None:
    """Conventional vs two-phase score and rank per strategy of a ``clbench tune`` run; None if absent/unreadable.

    Read from ``tune.json`` (``strategies[i]``: ``strategy``, ``phase1_score``, ``phase2_score``,
    ``conventional_score``, ``phase2.per_seed``, ``phase2.failed``; ``rankings.two_phase`` /
    ``rankings.conventional`` best first), else from ``tune.csv`` (same scores, ``rank_two_phase``,
    ``rank_conventional``). Missing ranks are computed (1 = best, ties share the lower rank).
    Scores above 1.5 are taken as percent and divided by 100.
    """
    from .plots import TuneEntry

    def num(v: Any) -> float:
        try:
            return float("nan") if v is None else float(v)
        except (TypeError, ValueError):
            return float("nan")

    entries: list[TuneEntry] = []
    tune = run.tune if isinstance(run.tune, dict) else {}
    rows = tune.get("strategies") if isinstance(tune.get("strategies"), list) else None
    if rows:
        rankings = tune.get("rankings") or {}
        for r in rows:
            if not isinstance(r, dict) or not r.get("strategy"):
                continue
            p2 = r.get("phase2") if isinstance(r.get("phase2"), dict) else {}
            e = TuneEntry(str(r["strategy"]), num(r.get("conventional_score")), num(r.get("phase2_score")))
            for key, attr in (("conventional", "rank_conventional"), ("two_phase", "rank_two_phase")):
                order = rankings.get(key) or []
                if e.name in order:
                    setattr(e, attr, float(order.index(e.name) + 1))
            e.extra = {"phase1": num(r.get("phase1_score")), "per_seed": list((p2.get("per_seed") or {}).values()),
                       "failed": len(p2.get("failed") or []), "chosen": r.get("chosen")}
            entries.append(e)
    elif run.tune_table is not None and "strategy" in run.tune_table:
        for r in run.tune_table.to_dict("records"):
            e = TuneEntry(str(r["strategy"]), num(r.get("conventional_score")), num(r.get("phase2_score")),
                          num(r.get("rank_conventional")), num(r.get("rank_two_phase")))
            e.extra = {"phase1": num(r.get("phase1_score")), "per_seed": [], "failed": 0, "chosen": r.get("chosen")}
            entries.append(e)
    entries = [e for e in entries if not (math.isnan(e.conventional) and math.isnan(e.two_phase))]
    if not entries:
        return None
    finite = [abs(v) for e in entries for v in (e.conventional, e.two_phase, e.extra.get("phase1", np.nan)) if not math.isnan(v)]
    if finite and max(finite) > 1.5:
        for e in entries:
            e.conventional, e.two_phase = e.conventional / 100, e.two_phase / 100
            e.extra["phase1"] = e.extra.get("phase1", np.nan) / 100
            e.extra["per_seed"] = [v / 100 for v in e.extra.get("per_seed", [])]
    from scipy.stats import rankdata

    for attr, rattr in (("conventional", "rank_conventional"), ("two_phase", "rank_two_phase")):
        if all(not math.isnan(getattr(e, rattr)) for e in entries):
            continue
        v = np.array([getattr(e, attr) for e in entries], dtype=float)
        r = rankdata(np.where(np.isnan(v), np.inf, -v), method="min")
        for e, ri, vi in zip(entries, r, v):
            setattr(e, rattr, float("nan") if math.isnan(vi) else float(ri))
    return entries


# ----------------------------------------------------------------------------------------------- the report

@dataclass
class _Out:
    """Collects blocks and output files (relative path -> bytes) before the atomic write."""

    formats: tuple[str, ...]
    blocks: list[Block] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    figure_names: list[str] = field(default_factory=list)
    table_names: list[str] = field(default_factory=list)

    def figure(self, name: str, caption: str, fig) -> None:
        from .plots import figure_bytes

        png = figure_bytes(fig, "png")
        if "png" in self.formats or "md" in self.formats:
            self.files[f"figures/{name}.png"] = png
        if "pdf" in self.formats:
            self.files[f"figures/{name}.pdf"] = figure_bytes(fig, "pdf")
        self.blocks.append(FigureRef(name, caption, png))
        self.figure_names.append(name)

    def table(self, t: Table) -> None:
        self.table_names.append(t.name)
        self.files[f"tables/{t.name}.csv"] = t.data.to_csv(index=False).encode()
        self.files[f"tables/{t.name}.md"] = (f"*{t.caption}*\n\n" + table_markdown(t) + "\n").encode()
        self.files[f"tables/{t.name}.tex"] = table_latex(t).encode()
        self.blocks.append(t)


def _runs_block(out: _Out, runs: Sequence[RunData], cells: Sequence[Cell]) -> None:
    rows, data = [], []
    for run in runs:
        mine = [c for c in cells if c.run == run.label]
        cfg = run.config
        expected = ""
        if all(isinstance(cfg.get(k), list) for k in ("benchmarks", "strategies", "seeds")):
            expected = str(len(cfg["benchmarks"]) * len(cfg["strategies"]) * len(cfg["seeds"]))
        versions: dict[str, str] = {}
        for r in run.records:
            versions.update(r.versions or {})
        seeds = sorted({c.seed for c in mine})
        row = [run.label, str(run.path), str(len(mine)) + (f" / {expected}" if expected else ""),
               str(sum(c.ok for c in mine)), str(sum(not c.ok for c in mine)), " ".join(map(str, seeds)),
               str(cfg.get("device", "")), ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
        rows.append(row)
        data.append(dict(zip(["run", "path", "cells", "ok", "failed", "seeds", "device", "versions"], row)))
    out.table(Table("runs", "Run folders in this report (cells recorded / expected by the config).",
                    ["Run", "Folder", "cells", "ok", "failed", "seeds", "device", "versions"], rows, pd.DataFrame(data)))
    for run in runs:
        if run.stale or run.invalid:
            out.blocks.append(Text(f"{run.label}: {run.stale} record(s) of an earlier config of this folder and {run.invalid} "
                                   f"invalid record(s) are left out (only the cells of its current config.yaml are "
                                   f"reported).", "note"))
        mine = [c for c in cells if c.run == run.label]
        if isinstance(run.config.get("seeds"), list):
            exp = len(run.config.get("benchmarks") or []) * len(run.config.get("strategies") or []) * len(run.config["seeds"])
            if exp and len(mine) < exp:
                out.blocks.append(Text(f"{run.label}: {len(mine)} of {exp} cells are recorded; the report covers the "
                                       f"finished ones (rerun the same `clbench run` command to resume).", "note"))


def _benchmark_section(out: _Out, bench: str, stats: dict[str, SeriesStats], colors: dict[str, str], multi: bool,
                       used: set[str]) -> None:
    from .plots import Curve, SeriesPoint, accuracy_matrix_figure, final_bars_figure, pareto_figure, seen_accuracy_figure

    base = slug(bench)
    b = base
    i = 2
    while b in used:
        b, i = f"{base}-{i}", i + 1
    used.add(b)
    out.blocks.append(Heading(f"Benchmark: {bench}", 2, f"bench-{b}"))
    any_ok = next((c for s in stats.values() for c in s.ok_cells), None)
    if any_ok is not None:
        stream = json.loads(any_ok.stream_key) if any_ok.stream_key else {}
        desc = ", ".join(f"{k} {stream[k]}" for k in ("scenario", "n_experiences", "n_classes") if k in stream)
        if desc:
            out.blocks.append(Text(f"Stream: {desc}.", "note"))
    out.table(benchmark_table(bench, stats, f"summary_{b}", multi))
    failed = [c for s in stats.values() for c in s.cells if not c.ok]
    if failed:
        out.blocks.append(Text(f"{len(failed)} failed cell(s) on {bench}, left out of every mean, test and figure (not "
                               f"counted as zero accuracy): " + "; ".join(f"{c.series} seed {c.seed}: FAILED — {c.error[:160]}"
                                                                          for c in failed), "warn"))
    pw = pairwise_table(bench, stats, f"pairwise_{b}")
    if pw is not None:
        out.table(pw)
    else:
        out.blocks.append(Text("No paired tests: fewer than two shared seeds with identical streams between strategies.", "note"))
    ok_series = [s for s in stats.values() if s.ok_cells]
    curves = []
    matrices = []
    for s in ok_series:
        lengths = [len(c.seen) for c in s.ok_cells]
        T = max(set(lengths), key=lengths.count)
        use = [c for c in s.ok_cells if len(c.seen) == T]
        mean, hw = ci_band(np.vstack([c.seen for c in use]), CONFIDENCE)
        curves.append(Curve(s.series, colors[s.series], mean, hw, len(use)))
        matrices.append((s.series, np.mean([c.R for c in use], axis=0), len(use)))
    if curves:
        out.figure(f"seen_accuracy_{b}", f"{bench}: accuracy on the test data of all experiences seen so far, after each "
                   f"experience; line = mean over seeds, band = 95% CI (Student t).", seen_accuracy_figure(bench, curves))
        out.figure(f"accuracy_matrix_{b}", f"{bench}: accuracy matrix R[i, j] (%, test set of experience j after "
                   f"training on experience i), mean over seeds, one panel per strategy.", accuracy_matrix_figure(bench, matrices))
    points = []
    for s in stats.values():
        ok = bool(s.ok_cells)
        state = mean_ci([c.metrics.get("state_bytes", np.nan) / 2**20 for c in s.ok_cells], CONFIDENCE) if ok else None
        points.append(SeriesPoint(s.series, colors[s.series], s.ci["acc"] if ok else None, s.ci["forgetting"] if ok else None,
                                  s.ci["train_seconds"] if ok else None, s.ci["peak_memory_mb"] if ok else None, state,
                                  s.n_failed, len(s.cells)))
    out.figure(f"final_bars_{b}", f"{bench}: final accuracy ACC and forgetting (%), mean over seeds with 95% CI whiskers; "
               f"strategies whose cells failed are labelled 'failed' (no bar).", final_bars_figure(bench, points))
    if curves:
        out.figure(f"pareto_{b}", f"{bench}: ACC against total train time, peak process memory and strategy state size "
                   f"(mean ± 95% CI); the dashed step line joins the Pareto-optimal strategies (no other one is both "
                   f"cheaper and more accurate).", pareto_figure(bench, points))


def _tune_section(out: _Out, runs: Sequence[RunData], colors: dict[str, str]) -> None:
    """Tune runs: per strategy the phase-1, two-phase (phase 2 on D_E) and conventional scores, and both rankings."""
    from .plots import series_colors, tune_rankings_figure, tune_scores_figure

    tune_runs = [r for r in runs if r.tune is not None or r.tune_table is not None]
    if not tune_runs:
        return
    out.blocks.append(Heading("Two-phase tuning (clbench tune)", 2, "tune"))
    for run in tune_runs:
        entries = tune_entries(run)
        if not entries:
            out.blocks.append(Text(f"{run.label}: tune.json/tune.csv found but no per-strategy conventional and two-phase "
                                   f"scores could be read from it; the phase-2 cells are reported above.", "note"))
            continue
        entries.sort(key=lambda e: (math.isnan(e.rank_two_phase), e.rank_two_phase, e.name))
        cmap = dict(colors)
        for k, v in series_colors([e.name for e in entries]).items():
            cmap.setdefault(k, v)
        tune = run.tune if isinstance(run.tune, dict) else {}
        objective = str(tune.get("objective", "score")).upper()
        name = "tune" if len(tune_runs) == 1 else f"tune_{slug(run.label)}"
        rows, data = [], []
        for e in entries:
            two = mean_ci(e.extra.get("per_seed") or [], CONFIDENCE)
            two_text = _fmt(two, 100.0, 2) if two.n and abs(two.mean - e.two_phase) < 1e-9 else \
                ("—" if math.isnan(e.two_phase) else f"{100 * e.two_phase:.2f}")
            failed = int(e.extra.get("failed") or 0)
            rows.append([e.name, "—" if math.isnan(e.extra.get("phase1", np.nan)) else f"{100 * e.extra['phase1']:.2f}",
                         two_text, "—" if math.isnan(e.rank_two_phase) else f"{e.rank_two_phase:.0f}",
                         "—" if math.isnan(e.conventional) else f"{100 * e.conventional:.2f}",
                         "—" if math.isnan(e.rank_conventional) else f"{e.rank_conventional:.0f}",
                         "—" if math.isnan(e.conventional - e.two_phase) else f"{100 * (e.conventional - e.two_phase):+.2f}",
                         f"{failed} FAILED" if failed else "0"])
            data.append({"strategy": e.name, "phase1": e.extra.get("phase1"), "two_phase": e.two_phase,
                         "two_phase_ci95": two.half_width if two.n else np.nan, "rank_two_phase": e.rank_two_phase,
                         "conventional": e.conventional, "rank_conventional": e.rank_conventional,
                         "conventional_minus_two_phase": e.conventional - e.two_phase, "phase2_failed_cells": failed})
        changed = sum(e.rank_conventional != e.rank_two_phase for e in entries
                      if not (math.isnan(e.rank_conventional) or math.isnan(e.rank_two_phase)))
        tau = ((tune.get("kendall_tau") or {}).get("two_phase_vs_conventional") or {}).get("tau")
        tau_text = f"; Kendall tau between the two rankings = {tau:.3f}" if isinstance(tau, (int, float)) else ""
        out.table(Table(name, f"{run.label}: {objective} (%) — phase 1 = best trial on the tuning stream D_HT; two-phase = "
                              f"the chosen values run once per seed on the evaluation stream D_E (mean ± 95% CI over seeds); "
                              f"conventional = best trial of a search tuned directly on D_E (the number a paper tuning on "
                              f"its test stream reports). {changed} of {len(entries)} strategies change rank{tau_text}. "
                              f"clbench tune scores a failed phase-2 cell 0; such cells are counted in the last column. "
                              f"The benchmark sections above show the phase-2 cells (D_E).",
                        ["Strategy", "phase 1 (%)", "two-phase (%)", "rank", "conventional (%)", "rank",
                         "conv. − two-phase (pp)", "failed phase-2 cells"], rows, pd.DataFrame(data)))
        out.figure(f"{name}_scores", f"{run.label}: {objective} under the conventional protocol and the two-phase "
                   f"protocol per strategy (whiskers: 95% CI over evaluation seeds).", tune_scores_figure(run.label, entries, cmap))
        out.figure(f"{name}_rankings", f"{run.label}: the ranking of the strategies under each protocol (1 = best), "
                   f"a line per strategy.", tune_rankings_figure(run.label, entries, cmap))


def build_report(runs: Sequence[RunData], formats: Sequence[str] = DEFAULT_FORMATS) -> tuple[str, _Out]:
    """All blocks and files of the report of ``runs`` (nothing written)."""
    from .plots import critical_difference_figure, series_colors

    out = _Out(tuple(formats))
    multi = len(runs) > 1
    title = "clbench report — " + ", ".join(r.label for r in runs)
    cells = collect_cells(runs)
    stats = series_stats(cells)
    all_series = list(dict.fromkeys(c.series for c in cells))
    colors = series_colors(all_series)
    out.blocks.append(Heading("Runs", 2, "runs"))
    _runs_block(out, runs, cells)
    out.blocks.append(Heading("How to read this report", 3))
    out.blocks.append(Text(
        "Each cell is one (benchmark, strategy, seed). Numbers are means over the seeds whose cell finished, with a "
        "two-sided 95% confidence interval from Student's t distribution with n−1 degrees of freedom "
        "(half-width t·s/√n; t = 12.71 for 2 seeds, 4.30 for 3, 2.78 for 5, so few seeds give wide intervals); with "
        "one seed no interval is given. ACC = mean_j R[T−1, j]; AIA = mean over steps of the "
        "accuracy on all seen test data; BWT = mean_{i<T−1} R[T−1,i] − R[i,i]; forgetting = mean_{j<T−1} max_{l<T−1} "
        "R[l,j] − R[T−1,j]; train seconds summed over experiences; peak memory = peak process RSS (CUDA: peak "
        "allocated); state = bytes the strategy keeps after the last experience. Failed cells are listed as failed and "
        "left out of every statistic. Paired tests use only seeds whose stream (class order, permutations) is identical "
        "for both strategies.", "note"))
    used: set[str] = set()
    for bench, st in stats.items():
        _benchmark_section(out, bench, st, colors, multi, used)
    rank = ranking(stats)
    out.blocks.append(Heading("Ranking across benchmarks (critical difference)", 2, "ranking"))
    if rank is None:
        out.blocks.append(Text("No ranking: it needs at least two strategies that finished on at least two benchmarks "
                               "(or two shared seeds of one benchmark).", "note"))
    else:
        out.table(ranks_table(rank))
        out.figure("critical_difference", f"Critical-difference diagram: average rank by ACC over {rank.n_blocks} blocks "
                   f"({rank.blocks}); thick bars join strategies whose rank gap is below the Nemenyi CD = {rank.cd:.2f}.",
                   critical_difference_figure(rank))
    _tune_section(out, runs, colors)
    failed = [c for c in cells if not c.ok]
    out.blocks.append(Heading("Failed cells", 2, "failed"))
    fdata = pd.DataFrame([{"run": c.run, "benchmark": c.benchmark, "strategy": c.strategy, "seed": c.seed, "status": "failed",
                           "error": c.error} for c in failed], columns=["run", "benchmark", "strategy", "seed", "status", "error"])
    out.files["tables/failed_cells.csv"] = fdata.to_csv(index=False).encode()
    if failed:
        out.blocks.append(Text(f"{len(failed)} cell(s) FAILED; they are not counted as zero accuracy. Rerun them with "
                               f"`clbench run CONFIG --retry-failed`.", "warn"))
        out.table(Table("failed_cells_table", "Failed cells and their recorded reason.",
                        ["Run", "Benchmark", "Strategy", "seed", "status", "reason"],
                        [[c.run, c.benchmark, c.strategy, str(c.seed), "FAILED", c.error[:300]] for c in failed], fdata,
                        failed_rows=set(range(len(failed)))))
    else:
        out.blocks.append(Text("None: every recorded cell finished.", "note"))
    return title, out


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"html,md,png,pdf"`` (or a list) -> a validated tuple; one :class:`UserError` naming the valid choices."""
    if text is None:
        return DEFAULT_FORMATS
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) for t in t.split(",")]
    items = [t for t in items if t]
    bad = [t for t in items if t not in FORMATS]
    if bad or not items:
        raise UserError(f"unknown report format(s) {bad or items}; fix: --format with a comma-separated subset of {','.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def default_out(run_dirs: Sequence[Path]) -> Path:
    if len(run_dirs) == 1:
        return run_dirs[0] / "report"
    return run_dirs[0].parent / ("report-" + "+".join(slug(p.name) for p in run_dirs))[:120]


def _remove_stale(out_dir: Path, built: _Out) -> None:
    """Delete figures/tables of an earlier report in ``out_dir`` that this report no longer has (other files stay)."""
    keep = {"figures": set(built.figure_names), "tables": set(built.table_names) | {"failed_cells"}}
    exts = {"figures": {".png", ".pdf"}, "tables": {".csv", ".md", ".tex"}}
    for sub, names in keep.items():
        folder = out_dir / sub
        if folder.is_dir():
            for f in folder.iterdir():
                if f.is_file() and f.suffix in exts[sub] and f.stem not in names:
                    f.unlink()


def write_report(run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None,
                 formats: str | Sequence[str] | None = None) -> Path:
    """Write the report of one or more run folders into ``out``; return the path of the output folder.

    ``formats``: subset of html, md, png, pdf (default all). CSV/Markdown/LaTeX tables are always written
    under ``tables/``; PNG figure files are also written when ``md`` is asked (the Markdown links them).
    Every file is written atomically; a bad folder raises one :class:`UserError`.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise UserError("no run folder given; fix: clbench report RUN [RUN ...], e.g. clbench report runs/quickstart")
    fmts = parse_formats(formats)
    runs = [load_run(p, label) for p, label in zip(paths, run_labels([p.resolve() for p in paths]))]
    out_dir = Path(out) if out is not None else default_out(paths)
    title, built = build_report(runs, fmts)
    for rel, data in built.files.items():
        atomic_write_bytes(out_dir / rel, data)
    _remove_stale(out_dir, built)
    if "html" in fmts:
        from .html import render_html

        atomic_write_text(out_dir / "report.html", render_html(title, built.blocks))
    if "md" in fmts:
        atomic_write_text(out_dir / "report.md", render_markdown(title, built.blocks))
    return out_dir


def report_after_run(run_dir: str | Path, quiet: bool = False, echo: Callable[[str], None] = print,
                     formats: str | Sequence[str] | None = None) -> Path | None:
    """Write ``<run_dir>/report`` after ``clbench run``/``tune``; on any error print why and how to retry, never raise."""
    try:
        out = write_report([run_dir], None, formats)
    except Exception as exc:  # noqa: BLE001 - the run's results are safe; the report can be made again
        echo(f"report not written ({type(exc).__name__}: {exc}); retry with `clbench report {run_dir}`")
        return None
    if not quiet:
        echo(f"report: {out / 'report.html'}")
    return out
