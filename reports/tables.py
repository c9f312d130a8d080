"""Tables: the main table across benchmarks, per-benchmark summaries, paired tests and the critical-difference ranks.

Every mean ± spread comes from :func:`clbench.stats.aggregate` and every caption says which spread it shows
(:data:`clbench.stats.SPREADS`). Best values are in bold and second-best underlined, compared on the values as
printed (two means that print alike tie).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clbench.stats import SPREADS, Aggregate, RankResult, format_aggregate, friedman_nemenyi, holm, paired_test

from .data import METRICS, SEES_FUTURE_MARK, SEES_FUTURE_NOTE, SHORT_TITLES, Benchmark, Comparison, Series, finite
from .document import Table

#: footnote of a p-value that is undefined (shown as "—¹")
P_UNDEFINED = "¹"
P_UNDEFINED_NOTE = (f"—{P_UNDEFINED} the paired t-test is undefined: every paired difference is the same, so their "
                    f"variance is zero and t is 0/0 (Wilcoxon: every difference is zero); such a pair is left out of the Holm "
                    f"correction.")


def fmt_agg(a: Aggregate, spread: str, scale: float, decimals: int) -> str:
    return format_aggregate(a, spread, scale, decimals)


def fmt_p(p: float | None) -> str:
    """A p-value as printed: ``<0.001``, ``0.042``; undefined (NaN) is ``—¹`` (see :data:`P_UNDEFINED_NOTE`)."""
    if p is None or math.isnan(p):
        return "—" + P_UNDEFINED
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def rank_marks(values: Sequence[float], better: str, decimals: int) -> tuple[set[int], set[int]]:
    """Indices of the best and the second-best of ``values`` as printed with ``decimals`` (NaN never ranks)."""
    shown = [round(v, decimals) if finite(v) else None for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=(better == "max"))
    best = {i for i, v in enumerate(shown) if distinct and v == distinct[0]}
    second = {i for i, v in enumerate(shown) if len(distinct) > 1 and v == distinct[1]}
    return best, second


def bench_metrics(bench: Benchmark, series: Sequence[Series], wanted: Sequence[str] | None = None) -> list[str]:
    """The accuracy columns of a benchmark: ``wanted``, else ACC and AIA, and on blurry streams A_last first (and
    A_auc when measured) with ACC last (its experiences hold very different numbers of classes)."""
    if wanted:
        return list(wanted)
    if bench.blurry:
        has_auc = any(finite(v) for s in series for v in s.metric("a_auc"))
        return ["a_last", "aia"] + (["a_auc"] if has_auc else []) + ["acc"]
    return ["acc", "aia"]


def spread_note(spread: str) -> str:
    return SPREADS[spread]


# ---------------------------------------------------------------------------------------------- main table

def main_table(comp: Comparison, spread: str, metrics: Sequence[str] | None = None) -> Table:
    """Strategies as rows, benchmarks as column groups, accuracy metrics mean ± spread in %; per column the best
    in bold and the second underlined; a strategy that did not run on a benchmark shows "—", one whose cells
    all failed "failed"; † marks cells whose strategy saw future experiences' inputs. ``metrics`` default to the
    comparison's ``main_metrics`` option, else :func:`bench_metrics`."""
    metrics = metrics or comp.options.main_metrics
    columns = ["Strategy"]
    groups: list[tuple[str, int]] = [("", 1)]
    per_bench: list[tuple[Benchmark, list[str]]] = []
    for b in comp.benchmarks:
        ms = bench_metrics(b, comp.bench_series(b.key), metrics)
        per_bench.append((b, ms))
        groups.append((b.label, len(ms)))
        columns += [SHORT_TITLES.get(m, m) for m in ms]
    rows = [[comp.label(k)] for k in comp.strategies]
    data: list[dict[str, Any]] = []
    best: set[tuple[int, int]] = set()
    second: set[tuple[int, int]] = set()
    col = 1
    any_future = False
    for b, ms in per_bench:
        for m in ms:
            spec = METRICS[m]
            aggs: list[Aggregate | None] = []
            for r, k in enumerate(comp.strategies):
                s = comp.series.get(b.key, {}).get(k)
                if s is None:
                    rows[r].append("—")
                    aggs.append(None)
                    continue
                a = s.agg(m)
                aggs.append(a)
                if not s.ok_cells:
                    text = "failed"
                else:
                    text = fmt_agg(a, spread, spec.scale, spec.decimals)
                if s.sees_future:
                    text += SEES_FUTURE_MARK
                    any_future = True
                rows[r].append(text)
                data.append({"strategy": comp.label(k), "benchmark": b.label, "benchmark_title": b.title, "metric": m,
                             "mean": spec.scale * a.mean, "std": spec.scale * a.std, "ci95": spec.scale * a.ci,
                             "min": spec.scale * a.min, "max": spec.scale * a.max, "seeds": a.n,
                             "failed": len(s.failed_cells), "sees_future": s.sees_future})
            bi, si = rank_marks([spec.scale * a.mean if a is not None and a.n else float("nan") for a in aggs],
                                spec.better, spec.decimals)
            best |= {(r, col) for r in bi}
            second |= {(r, col) for r in si}
            for rec in data:
                if rec["benchmark"] == b.label and rec["metric"] == m:
                    r = [comp.label(k) for k in comp.strategies].index(rec["strategy"])
                    rec["best"], rec["second"] = r in bi, r in si
            col += 1
    names = "; ".join(f"{b.label} = {b.title}" for b, _ in per_bench if b.label != b.title)
    caption = (f"Main results: {spread_note(spread)}; accuracies in %; best per column in bold, second underlined "
               f"(compared as printed). ACC = mean accuracy over experiences after the last one; AIA = mean over steps "
               f"of the accuracy on all seen test data; A_last = accuracy on all seen test data after the last "
               f"experience (sample-weighted; the headline on blurry streams, where ACC averages experiences of very "
               f"different sizes); A_auc = mean accuracy on the seen classes' test data measured every eval_period "
               f"training samples (strategies evaluated during experiences only). — = not run, or not measured."
               + (f" Benchmarks: {names}." if names else ""))
    notes = [SEES_FUTURE_NOTE] if any_future else []
    frame = pd.DataFrame(data, columns=["strategy", "benchmark", "benchmark_title", "metric", "mean", "std", "ci95", "min",
                                        "max", "seeds", "failed", "sees_future", "best", "second"])
    return Table("main", caption, columns, rows, frame, best, set(), second, groups, notes)


# ---------------------------------------------------------------------------------------------- per benchmark

SUMMARY_METRICS = ("acc", "aia", "a_last", "a_auc", "forgetting", "bwt", "train_seconds", "state_bytes", "alloc_peak_mb")
#: the CSV has these too (FWT; the process RSS peak, which measures the whole process, not the strategy)
CSV_METRICS = SUMMARY_METRICS + ("fwt", "peak_memory_mb")


def _shown(series: Sequence[Series], key: str) -> bool:
    """A column is shown when some strategy has a value (A_auc needs eval_period; alloc. peak a positive one)."""
    vals = [v for s in series for v in s.metric(key) if finite(v)]
    if key == "alloc_peak_mb":
        return any(v > 0 for v in vals)
    return bool(vals)


def summary_table(comp: Comparison, bench: Benchmark, spread: str) -> Table:
    """Strategies x metrics on one benchmark, mean ± spread over seeds, best bold / second underlined per column,
    and paired tests of the headline accuracy against the best row."""
    series = comp.bench_series(bench.key)
    accs = bench_metrics(bench, series)
    keys = accs + [k for k in SUMMARY_METRICS if k not in accs and _shown(series, k)]
    head = bench.headline
    columns = ["Strategy", "seeds ok"] + [METRICS[k].title for k in keys] + ["p vs best (t)", "p vs best (W)"]
    first = 2
    aggs = {k: [s.agg(k) for s in series] for k in CSV_METRICS}
    best: set[tuple[int, int]] = set()
    second: set[tuple[int, int]] = set()
    for ci, k in enumerate(keys):
        spec = METRICS[k]
        bi, si = rank_marks([spec.scale * a.mean if a.n else float("nan") for a in aggs[k]], spec.better, spec.decimals)
        best |= {(r, first + ci) for r in bi}
        second |= {(r, first + ci) for r in si}
    head_means = [a.mean if a.n else float("nan") for a in aggs[head]]
    best_row = int(np.nanargmax(head_means)) if any(finite(v) for v in head_means) else None
    rows, data, failed_rows = [], [], set()
    undefined = False
    for r, s in enumerate(series):
        n_ok = len(s.ok_cells)
        row = [comp.label(s), f"{n_ok}/{len(s.cells)}"]
        rec: dict[str, Any] = {"benchmark": bench.label, "strategy": comp.label(s, mark=False), "runs": "+".join(s.runs),
                               "seeds_ok": n_ok, "failed": len(s.failed_cells), "sees_future": s.sees_future}
        for k in keys:
            spec = METRICS[k]
            row.append("failed" if n_ok == 0 else fmt_agg(aggs[k][r], spread, spec.scale, spec.decimals))
        for k in CSV_METRICS:
            spec, a = METRICS[k], aggs[k][r]
            col = "state_mib" if k == "state_bytes" else k
            rec.update({f"{col}_mean": spec.scale * a.mean, f"{col}_std": spec.scale * a.std,
                        f"{col}_ci95": spec.scale * a.ci, f"{col}_min": spec.scale * a.min, f"{col}_max": spec.scale * a.max})
            if k in keys:
                rec[f"{col}_best"] = (r, first + keys.index(k)) in best
        p_t = p_w = float("nan")
        if best_row is not None and r != best_row and n_ok:
            a, b = s.values(head), series[best_row].values(head)
            shared = sorted(set(a) & set(b))
            if len(shared) >= 2:
                pt = paired_test(comp.label(s), comp.label(series[best_row]), [a[k] for k in shared], [b[k] for k in shared])
                p_t, p_w = pt.p_t, pt.p_wilcoxon
                undefined |= math.isnan(p_t) or math.isnan(p_w)
                row += [fmt_p(p_t), fmt_p(p_w)]
            else:
                row += ["n/a", "n/a"]
        else:
            row += ["best" if r == best_row else "n/a"] * 2
        rec["p_vs_best_t"], rec["p_vs_best_wilcoxon"] = p_t, p_w
        rows.append(row)
        data.append(rec)
        if n_ok == 0:
            failed_rows.add(r)
    notes = ([P_UNDEFINED_NOTE] if undefined else []) + ([SEES_FUTURE_NOTE] if any(s.sees_future for s in series) else [])
    caption = (f"{bench.title}: {spread_note(spread)}; no ± with one seed; seeds ok = finished / recorded cells; "
               f"accuracies in %; best per column in bold, "
               f"second underlined (higher accuracy/BWT/FWT, lower forgetting, time, memory). State = bytes the strategy "
               f"keeps after the last experience; alloc. peak = memory it allocated while training above the process "
               f"baseline. p vs best: paired t-test (t) and exact Wilcoxon signed-rank test (W) on "
               f"{SHORT_TITLES[head]} against the best row over shared seeds with identical streams, uncorrected; "
               f"n/a = fewer than two shared seeds.")
    return Table(f"summary_{bench.slug}", caption, columns, rows, pd.DataFrame(data), best, failed_rows, second, notes=notes)


def pairwise_table(comp: Comparison, bench: Benchmark) -> Table | None:
    """Every pair of strategies on the headline accuracy over their shared (seed, stream) cells: mean difference
    ± 95% CI, paired t-test p with its Holm adjustment over the table (undefined p left out), Wilcoxon p."""
    head = bench.headline
    series = [s for s in comp.bench_series(bench.key) if s.ok_cells]
    tests = []
    for i, a in enumerate(series):
        for b in series[i + 1:]:
            va, vb = a.values(head), b.values(head)
            keys = sorted(set(va) & set(vb))
            if len(keys) >= 2:
                tests.append(paired_test(comp.label(a), comp.label(b), [va[k] for k in keys], [vb[k] for k in keys]))
    if not tests:
        return None
    adj = holm([t.p_t for t in tests])
    rows, data = [], []
    undefined = False
    for t, ph in zip(tests, adj):
        undefined |= math.isnan(t.p_t) or math.isnan(t.p_wilcoxon)
        d = Aggregate(t.diff.mean, float("nan"), t.diff.half_width, t.diff.n, float("nan"), float("nan"))
        rows.append([t.a, t.b, str(t.n), fmt_agg(d, "ci", 100.0, 2), fmt_p(t.p_t),
                     fmt_p(ph) if not math.isnan(t.p_t) else "—", fmt_p(t.p_wilcoxon)])
        data.append({"benchmark": bench.label, "metric": head, "a": t.a, "b": t.b, "pairs": t.n, "diff_mean": 100 * t.diff.mean,
                     "diff_ci95": 100 * t.diff.half_width, "p_t": t.p_t, "p_t_holm": ph, "p_wilcoxon": t.p_wilcoxon})
    title = SHORT_TITLES[head]
    caption = (f"{bench.title}: paired comparisons of {title} (A − B, percentage points, mean ± 95% CI of the "
               f"differences, Student t) over the seeds whose streams are identical for both; paired t-test p, its Holm "
               f"adjustment over this table, and the exact Wilcoxon signed-rank p (its smallest attainable value with n "
               f"pairs is 2/2^n).")
    return Table(f"pairwise_{bench.slug}", caption, ["A", "B", "pairs", f"Δ{title} (pp)", "p (t)", "p (t, Holm)", "p (Wilcoxon)"],
                 rows, pd.DataFrame(data), notes=[P_UNDEFINED_NOTE] if undefined else [], label_cols=2)


# ---------------------------------------------------------------------------------------------- ranks

@dataclass
class Ranking:
    """A Friedman/Nemenyi ranking, the strategy keys it covers, and those left out with the reason."""

    result: RankResult
    left_out: list[tuple[str, str]]
    metric: str


def ranking(comp: Comparison) -> tuple[Ranking | None, list[tuple[str, str]], str]:
    """Critical-difference ranking by each benchmark's headline accuracy (A_last on blurry streams, else ACC).

    Blocks are the benchmarks (mean over seeds) when at least two benchmarks have two or more strategies that
    finished on every one of them; otherwise, with one benchmark, its shared (seed, stream) cells. Returns the
    ranking (or None), the strategies left out with why, and why there is no ranking ("" when there is one).
    """
    benches = [b for b in comp.benchmarks if any(s.ok_cells for s in comp.bench_series(b.key))]
    blurry = [b.blurry for b in benches]
    metric = "A_last" if blurry and all(blurry) else "A_last (blurry streams) / ACC" if any(blurry) else "ACC"
    left: list[tuple[str, str]] = []
    if len(benches) >= 2:
        common = []
        for k in comp.strategies:
            on = [b for b in benches if k in comp.series[b.key] and comp.series[b.key][k].ok_cells]
            if len(on) == len(benches):
                common.append(k)
                continue
            failed = [b.label for b in benches if k in comp.series[b.key] and not comp.series[b.key][k].ok_cells]
            why = f"finished on {len(on)} of {len(benches)} benchmarks"
            if failed:
                why += f"; every cell failed on {', '.join(failed)}"
            left.append((comp.label(k), why))
        if len(common) < 2:
            return None, left, (f"fewer than two strategies finished on all {len(benches)} benchmarks")
        scores = {k: [comp.series[b.key][k].agg(b.headline).mean for b in benches] for k in common}
        res = friedman_nemenyi(scores, True, 0.05, blocks=f"benchmarks: {', '.join(b.label for b in benches)}")
        return Ranking(res, left, metric), left, ""
    if len(benches) == 1:
        b = benches[0]
        series = comp.bench_series(b.key)
        ok = [s for s in series if s.ok_cells]
        left = [(comp.label(s), "every cell failed") for s in series if not s.ok_cells]
        if len(ok) < 2:
            return None, left, "fewer than two strategies finished"
        keys = set.intersection(*(set(s.values(b.headline)) for s in ok))
        if len(keys) < 2:
            return None, left, "fewer than two seeds with identical streams are shared by every strategy"
        keys_s = sorted(keys)
        scores = {s.key: [s.values(b.headline)[k] for k in keys_s] for s in ok}
        res = friedman_nemenyi(scores, True, 0.05, blocks=f"seeds of {b.label}")
        return Ranking(res, left, metric), left, ""
    return None, left, "no benchmark has a finished cell"


def ranks_table(comp: Comparison, rank: Ranking) -> Table:
    res = rank.result
    order = sorted(res.names, key=lambda n: res.avg_rank[n])
    best = res.avg_rank[order[0]]
    rows, data = [], []
    for n in order:
        diff = res.avg_rank[n] - best
        label = comp.label(n) + (SEES_FUTURE_MARK if comp.strategy_sees_future(n) else "")
        rows.append([label, f"{res.avg_rank[n]:.2f}", f"{diff:.2f}", "—" if n == order[0] else ("yes" if diff > res.cd else "no")])
        data.append({"strategy": comp.label(n), "avg_rank": res.avg_rank[n], "diff_to_best": diff, "cd": res.cd,
                     "significant_vs_best": bool(diff > res.cd) if n != order[0] else False, "friedman_chi2": res.chi2,
                     "friedman_p": res.p_friedman, "blocks": res.blocks, "n_blocks": res.n_blocks})
    for name, why in rank.left_out:
        data.append({"strategy": name, "left_out": why})
    caption = (f"Average rank by {rank.metric} (1 = best) over {res.n_blocks} blocks ({res.blocks}); Friedman χ2 = "
               f"{res.chi2:.2f}, p = {fmt_p(res.p_friedman).replace('—' + P_UNDEFINED, 'n/a')}; Nemenyi critical difference "
               f"CD = {res.cd:.2f} at α = {res.alpha} (a rank gap larger than CD is significant).")
    notes = [f"Left out of the ranking: {name} ({why})." for name, why in rank.left_out]
    if any(comp.strategy_sees_future(n) for n in res.names):
        notes.append(SEES_FUTURE_NOTE)
    return Table("ranks", caption, ["Strategy", "avg rank", "gap to best", f"gap > CD ({res.cd:.2f})"], rows,
                 pd.DataFrame(data), {(0, 1)}, notes=notes)
