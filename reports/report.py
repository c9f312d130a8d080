"""``clbench report``: the report of one or more run folders — writing it (assembly in this module).

Entry points: :func:`write_report` (any caller: ``clbench report``, the end of ``clbench run`` and
``clbench tune``) and :func:`report_after_run` (same, but never raises: prints why it failed).
The work is split by role: :mod:`.options` (what is compared, from the command line or a report config),
:mod:`.data` (loading and aggregation), :mod:`.tables`, :mod:`.plots`, :mod:`.tune` (the tune section),
:mod:`.document`/:mod:`.html` (Markdown, LaTeX and HTML renderings).

Output folder (default ``<run>/report``; for several runs ``<parent of the first>/report-<a>+<b>``)::

    report.html                self-contained page (CSS inline, figures as base64 PNG, no script, no network)
    report.md                  the same content in Markdown, figures linked from figures/
    tables/main.{csv,md,tex}               strategies x (benchmark x ACC/AIA[/A_last]), as papers print it
    tables/summary_<bench>.{csv,md,tex}    strategies x metrics of one benchmark, mean ± spread over seeds
    tables/pairwise_<bench>.{csv,md,tex}   paired tests on the headline accuracy (shared seeds and streams)
    tables/ranks.{csv,md,tex}              average ranks, Friedman + Nemenyi critical difference
    tables/failed_cells.csv                every failed cell with its reason
    tables/tune.{csv,md,tex}               tune runs: conventional vs two-phase score and rank
    figures/<name>.{png,pdf}               one pair per figure (PNG 200 dpi, PDF vector)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clbench.errors import UserError
from clbench.files import atomic_write_bytes, atomic_write_text
from clbench.stats import SPREADS

from .data import (SEES_FUTURE_NOTE, SHORT_TITLES, Benchmark, Comparison, RunData, build_comparison, load_run,
                   resolve_band, run_labels, seen_curves, band_bounds, slug)
from .document import Block, FigureRef, Heading, Table, Text, render_markdown, table_latex, table_markdown
from .options import AUTO_CI_SEEDS, FORMATS, SHORT_BANDS, ReportOptions, band_description, parse_formats

__all__ = ["FORMATS", "ReportOptions", "build_report", "default_out", "parse_formats", "report_after_run", "write_report"]


@dataclass
class _Out:
    """Collects blocks and output files (relative path -> bytes) before the atomic write."""

    formats: tuple[str, ...]
    blocks: list[Block] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    figure_names: list[str] = field(default_factory=list)
    table_names: list[str] = field(default_factory=list)
    keep_figures: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    render: bool = True

    def figure(self, name: str, caption: str, fig) -> None:
        from .plots import figure_bytes

        png = figure_bytes(fig, "png") if self.render else b""
        if self.render and ("png" in self.formats or "md" in self.formats):
            self.files[f"figures/{name}.png"] = png
        if self.render and "pdf" in self.formats:
            self.files[f"figures/{name}.pdf"] = figure_bytes(fig, "pdf")
        self.blocks.append(FigureRef(name, caption, png, float(fig.get_figwidth())))
        self.figure_names.append(name)
        if self.keep_figures:
            self.figures[name] = fig

    def table(self, t: Table) -> None:
        self.table_names.append(t.name)
        self.files[f"tables/{t.name}.csv"] = t.data.to_csv(index=False).encode()
        self.files[f"tables/{t.name}.md"] = (f"*{t.caption}*\n\n" + table_markdown(t) + "\n").encode()
        self.files[f"tables/{t.name}.tex"] = table_latex(t).encode()
        self.blocks.append(t)

    def text(self, t: Text) -> None:
        self.blocks.append(t)


def _runs_block(out: _Out, comp: Comparison) -> None:
    rows, data = [], []
    for run in comp.runs:
        cfg = run.config
        expected = ""
        if all(isinstance(cfg.get(k), list) for k in ("benchmarks", "strategies", "seeds")):
            expected = str(len(cfg["benchmarks"]) * len(cfg["strategies"]) * len(cfg["seeds"]))
        versions: dict[str, str] = {}
        devices: set[str] = set()
        for r in run.records:
            versions.update(r.versions or {})
            if isinstance(r.host, dict) and r.host.get("device"):
                devices.add(str(r.host["device"]))
        seeds = sorted({r.seed for r in run.records})
        n_ok = sum(r.ok for r in run.records)
        short = ", ".join(f"{k} {versions[k]}" for k in ("clbench", "torch") if k in versions)
        row = [run.label, str(run.path), str(len(run.records)) + (f" / {expected}" if expected else ""), str(n_ok),
               str(len(run.records) - n_ok), " ".join(map(str, seeds)),
               "; ".join(sorted(devices)) or str(cfg.get("device", "")), short]
        rows.append(row)
        data.append(dict(zip(["run", "path", "cells", "ok", "failed", "seeds", "device", "versions"], row),
                         versions_all=json.dumps(versions, sort_keys=True)))
    out.table(Table("runs", "Run folders in this report (cells recorded / expected by the config).",
                    ["Run", "Folder", "cells", "ok", "failed", "seeds", "device", "versions"], rows, pd.DataFrame(data),
                    label_cols=2))
    for run in comp.runs:
        if run.stale or run.invalid:
            out.text(Text(f"{run.label}: {run.stale} record(s) of an earlier config of this folder and {run.invalid} invalid "
                          f"record(s) are left out (only the cells of its current config.yaml are reported).", "note"))
        if isinstance(run.config.get("seeds"), list):
            exp = len(run.config.get("benchmarks") or []) * len(run.config.get("strategies") or []) * len(run.config["seeds"])
            if exp and len(run.records) < exp:
                out.text(Text(f"{run.label}: {len(run.records)} of {exp} cells are recorded; the report covers the finished "
                              f"ones (rerun the same `clbench run` command to resume).", "note"))
    pooled = [(comp.label(s.key), b.label, s.runs) for b in comp.benchmarks for s in comp.bench_series(b.key) if len(s.runs) > 1]
    if pooled:
        out.text(Text("Pooled over run folders (identical strategy and benchmark entries, seeds together): "
                      + "; ".join(f"{n} on {b} from {' + '.join(r)}" for n, b, r in pooled) + ".", "note"))
    if comp.duplicates:
        out.text(Text(f"{len(comp.duplicates)} cell(s) repeat a seed already recorded for the same configuration in an "
                      f"earlier run folder and are left out (one seed is one sample): "
                      + "; ".join(f"{r.strategy} on {r.benchmark} seed {r.seed} from {dup} (kept: {kept})"
                                  for r, kept, dup in comp.duplicates[:20]) + ".", "note"))
    for kind, names in comp.left_out.items():
        if names:
            out.text(Text(f"Not selected ({kind}): {', '.join(names)}.", "note"))


def mean_matrix(matrices: Sequence[Any]) -> np.ndarray:
    """Element-wise mean over seeds of accuracy matrices, NaN entries (no test data) left out; NaN where no seed has one."""
    stack = np.asarray(matrices, dtype=float)
    count = (~np.isnan(stack)).sum(0)
    total = np.nansum(stack, axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _benchmark_section(out: _Out, comp: Comparison, bench: Benchmark, spread: str) -> None:
    from .plots import Curve, SeriesPoint, accuracy_matrix_figure, cost_figure, final_bars_figure, seen_accuracy_figure
    from .tables import pairwise_table, summary_table

    b = bench.slug
    opts = comp.options
    series = comp.bench_series(bench.key)
    out.blocks.append(Heading(f"{bench.label}: {bench.title}" if bench.label != bench.title else bench.title, 2, f"bench-{b}"))
    stream = bench.stream
    desc = ", ".join(f"{k} {stream[k]}" for k in ("name", "scenario", "n_experiences", "n_classes") if k in stream)
    if desc:
        out.text(Text(f"Stream: {desc}" + ("; blurry: the headline accuracy is A_last (ACC averages experiences of very "
                                          "different sizes)" if bench.blurry else "") + ".", "note"))
    out.table(summary_table(comp, bench, spread))
    failed = [(s, c) for s in series for c in s.failed_cells]
    if failed:
        out.text(Text(f"{len(failed)} failed cell(s) on {bench.label}, left out of every mean, test and figure (not counted "
                      f"as zero accuracy): " + "; ".join(f"{comp.label(s)} seed {c.seed}: FAILED — {c.error[:160]}"
                                                         for s, c in failed), "warn"))
    pw = pairwise_table(comp, bench)
    if pw is not None:
        out.table(pw)
    else:
        out.text(Text("No paired tests: fewer than two shared seeds with identical streams between strategies.", "note"))
    ok = [s for s in series if s.ok_cells]
    future = " † marks a strategy given future experiences' unlabelled inputs." if any(s.sees_future for s in ok) else ""
    samples = {s.key: seen_curves(s) for s in ok}
    band = resolve_band(opts.band, [len(v) for v in samples.values()], AUTO_CI_SEEDS)
    band_text = band_description(band)
    curves, matrices = [], []
    for s in ok:
        sm = samples[s.key]
        mean, low, high = band_bounds(sm, band)
        curves.append(Curve(comp.label(s), comp.styles[s.key], mean, low, high, len(sm)))
        T = sm.shape[1]
        matrices.append((comp.label(s), mean_matrix([c.accuracy for c in s.ok_cells if c.n_experiences == T]), len(sm)))
    auto = (f" (band choice auto: ci with at least {AUTO_CI_SEEDS} seeds per curve, else std)" if opts.band == "auto" else "")
    if curves:
        out.figure(f"seen_accuracy_{b}", f"{bench.title}: accuracy on the test data of all experiences seen so far, after "
                   f"each experience; line = mean over seeds, band = {band_text}{auto}; n = seeds.{future}",
                   seen_accuracy_figure(bench.title, curves, SHORT_BANDS[band]))
        out.figure(f"accuracy_matrix_{b}", f"{bench.title}: accuracy matrix R[i, j] (%, test set of experience j after "
                   f"training on experience i), mean over seeds, one panel per strategy.{future}",
                   accuracy_matrix_figure(bench.title, matrices))
    spread_text = SPREADS[spread].replace("mean ± ", "")
    head = SHORT_TITLES[bench.headline]
    points = []
    for s in series:
        have = bool(s.ok_cells)
        points.append(SeriesPoint(comp.label(s), comp.styles[s.key], s.agg(bench.headline) if have else None,
                                  s.agg("forgetting") if have else None, s.agg("train_seconds") if have else None,
                                  s.agg("state_bytes") if have else None, s.agg("alloc_peak_mb") if have else None,
                                  len(s.failed_cells), len(s.cells)))
    out.figure(f"final_bars_{b}", f"{bench.title}: {head} and forgetting (%), bars = mean over seeds, whiskers = "
               f"{spread_text}; strategies whose cells all failed are labelled 'failed' (no bar).{future}",
               final_bars_figure(bench.title, points, head, spread, SHORT_BANDS[spread]))
    if curves:
        alloc = any(p.alloc_peak_mb is not None and p.alloc_peak_mb.n and p.alloc_peak_mb.mean > 0 for p in points)
        out.figure(f"cost_{b}", f"{bench.title}: {head} against total train time and against the bytes the strategy keeps "
                   f"after the last experience (its model, buffers and statistics)"
                   + (", and against the memory it allocated while training above the process baseline" if alloc else "")
                   + f"; markers = mean over seeds, accuracy whiskers = {spread_text}, cost whiskers = min–max over "
                   f"seeds; dashed = Pareto front (no other strategy is both cheaper and more accurate); log axes where "
                   f"values span more than 20x.{future}",
                   cost_figure(bench.title, points, head, spread, SHORT_BANDS[spread]))


def build_report(runs: Sequence[RunData], options: ReportOptions | None = None, keep_figures: bool = False,
                 render: bool = True) -> tuple[str, _Out, Comparison]:
    """All blocks and files of the report of ``runs`` (nothing written); ``keep_figures`` keeps the Figure objects,
    ``render=False`` leaves the figures unrendered (no PNG/PDF bytes: for inspecting the figures themselves)."""
    from .plots import critical_difference_figure
    from .tables import main_table, ranking, ranks_table
    from .tune import tune_section

    options = options or ReportOptions()
    spread = options.spread
    out = _Out(tuple(options.formats), keep_figures=keep_figures, render=render)
    comp = build_comparison(runs, options)
    title = "clbench report — " + ", ".join(r.label for r in runs)
    out.blocks.append(Heading("Runs", 2, "runs"))
    _runs_block(out, comp)
    out.blocks.append(Heading("How to read this report", 3))
    out.text(Text(
        f"Each cell is one (benchmark, strategy, seed). Numbers are {SPREADS[spread]}, over the seeds whose cell finished "
        f"(no ± with one seed); the 95% CI would be t·s/√n with t = 12.71 for 2 seeds, 4.30 for 3, 2.78 for 5. ACC = "
        f"mean_j R[T−1, j]; AIA = mean over steps of the accuracy on all seen test data; A_last = accuracy on all seen "
        f"test data after the last experience (sample-weighted); BWT = mean_(i<T−1) R[T−1,i] − R[i,i]; forgetting = "
        f"mean_(j<T−1) max_(l<T−1) R[l,j] − R[T−1,j]; train time summed over experiences; state = bytes the strategy "
        f"keeps after the last experience; alloc. peak = memory the strategy allocated while training above the process "
        f"baseline (CUDA: allocator peak; CPU: RSS growth). Failed cells are listed as failed and left out of every "
        f"statistic. Paired tests use only seeds whose stream (class order, permutations) is identical for both "
        f"strategies. A strategy with an identical configuration in several run folders is one row (seeds pooled).",
        "note"))
    if not comp.benchmarks:
        out.text(Text("No cell to report after the selection.", "warn"))
    else:
        out.blocks.append(Heading("Main results", 2, "main"))
        out.table(main_table(comp, spread, options.main_metrics))
    for bench in comp.benchmarks:
        _benchmark_section(out, comp, bench, spread)
    rank, left, why = ranking(comp)
    out.blocks.append(Heading("Ranking across benchmarks (critical difference)", 2, "ranking"))
    if rank is None:
        out.text(Text(f"No ranking: {why}." + (" Left out: " + "; ".join(f"{n} ({w})" for n, w in left) + "." if left else ""),
                      "note"))
    else:
        out.table(ranks_table(comp, rank))
        labels = {k: comp.label(k) + ("†" if comp.strategy_sees_future(k) else "") for k in rank.result.names}
        lo = "; left out: " + "; ".join(f"{n} ({w})" for n, w in rank.left_out) if rank.left_out else ""
        out.figure("critical_difference", f"Critical-difference diagram: average rank by {rank.metric} over "
                   f"{rank.result.n_blocks} blocks ({rank.result.blocks}); thick bars join strategies whose rank gap is "
                   f"below the Nemenyi CD = {rank.result.cd:.2f}{lo}.",
                   critical_difference_figure(rank.result, labels, rank.left_out, rank.metric))
    colors = {comp.label(k): comp.styles[k].color for k in comp.strategies}
    if any(r.tune is not None or r.tune_table is not None for r in runs):
        out.blocks.append(Heading("Two-phase tuning (clbench tune)", 2, "tune"))
        tune_section(runs, colors, spread, out.table, out.figure, out.text)
    _failed_block(out, comp)
    if comp.any_sees_future:
        out.text(Text(SEES_FUTURE_NOTE, "note"))
    return title, out, comp


def _failed_block(out: _Out, comp: Comparison) -> None:
    failed = [(b, s, c) for b in comp.benchmarks for s in comp.bench_series(b.key) for c in s.failed_cells]
    out.blocks.append(Heading("Failed cells", 2, "failed"))
    fdata = pd.DataFrame([{"run": comp.run_of(c), "benchmark": b.label, "strategy": comp.label(s, mark=False), "seed": c.seed,
                           "status": "failed", "error": c.error} for b, s, c in failed],
                         columns=["run", "benchmark", "strategy", "seed", "status", "error"])
    out.files["tables/failed_cells.csv"] = fdata.to_csv(index=False).encode()
    if failed:
        out.text(Text(f"{len(failed)} cell(s) FAILED; they are not counted as zero accuracy. Rerun them with "
                      f"`clbench run CONFIG --retry-failed`.", "warn"))
        out.table(Table("failed_cells_table", "Failed cells and their recorded reason.",
                        ["Run", "Benchmark", "Strategy", "seed", "status", "reason"],
                        [[r["run"], r["benchmark"], r["strategy"], str(r["seed"]), "FAILED", str(r["error"])[:300]]
                         for r in fdata.to_dict("records")], fdata, failed_rows=set(range(len(failed))), label_cols=6))
    else:
        out.text(Text("None: every recorded cell finished.", "note"))


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


def write_report(run_dirs: str | Path | Sequence[str | Path] | None = None, out: str | Path | None = None,
                 formats: str | Sequence[str] | None = None, options: ReportOptions | None = None) -> Path:
    """Write the report of one or more run folders into ``out``; return the path of the output folder.

    ``run_dirs`` are added to ``options.runs``; ``formats`` (a subset of html, md, png, pdf) and ``out`` override
    the options'. CSV/Markdown/LaTeX tables are always written under ``tables/``; PNG figure files are also
    written when ``md`` is asked (the Markdown links them). Every file is written atomically; a bad folder or
    option raises one :class:`UserError`.
    """
    options = options or ReportOptions()
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    paths = [Path(p) for p in (*options.runs, *(run_dirs or []))]
    paths = list(dict.fromkeys(paths))
    if not paths:
        raise UserError("no run folder given; fix: clbench report RUN [RUN ...] (or runs: in --config), "
                        "e.g. clbench report runs/quickstart")
    fmts = parse_formats(formats) if formats is not None else parse_formats(options.formats)
    options = options.updated(formats=fmts)
    runs = [load_run(p, label) for p, label in zip(paths, run_labels([p.resolve() for p in paths]))]
    out_dir = Path(out) if out is not None else Path(options.out) if options.out else default_out(paths)
    title, built, _ = build_report(runs, options)
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
