"""The power-law rehearsal study (Gandhi et al. 2024, arXiv 2401.10393 v1; issue 11 item 8), from its two run folders.

Inputs (read only through clbench's readers, :func:`clbench.results.read_run`):

* ``<runs>/power_law_pmnist`` (``clbench run configs/power_law_pmnist.yaml``): the finetuned MLP on the
  permuted-MNIST subset under five rehearsal schedules -- the arms ``power_law``, ``exponential``,
  ``uniform`` (the same budget, 0.5 of a task per phase), ``none`` (lower bound) and ``all`` (upper bound).
* ``<runs>/power_law_tune`` (``clbench tune configs/power_law_tune.yaml``): EWC and SI with the penalty
  strength chosen on permuted Fashion-MNIST (phase 1, ``tune.json``) and then run once per seed on the
  study's stream without rehearsal (phase 2, the cells of that folder) -- the arms ``EWC`` and ``SI``.

Same seed = same stream (the same images and permutations), so arms are compared paired by seed.

Measures (all from :mod:`clbench.metrics` and :mod:`clbench.stats`):

* per phase p the accuracy on the union of the test sets of the tasks seen so far,
  a_p = \\sum_{j<=p} n_j R[p, j] / \\sum_{j<=p} n_j (:meth:`CellRecord.seen_accuracy`), per arm the mean
  over the ok seeds with a two-sided 95% Student-t CI (:func:`clbench.stats.aggregate`);
* the final seen accuracy a_{T-1} (A_last) and the average over phases (1/T) \\sum_p a_p (AIA);
* paired t-test and Wilcoxon (:func:`clbench.stats.paired_test`) of power_law against every other arm on
  both, Holm-adjusted (:func:`clbench.stats.holm`) within each metric's family of comparisons;
* a verdict per claim of the paper's v1 abstract, computed from the CIs (:func:`verdict`), never typed.

Cells that are not there yet are listed as missing and everything is computed on what exists; a failed
cell is listed as failed and never enters a mean.

Usage::

    python bench/power_law_study.py --runs /work/runs [--publish results/power_law]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from clbench.results import CellRecord, read_run  # noqa: E402
from clbench.stats import Aggregate, aggregate, holm, paired_test  # noqa: E402

REFERENCE = "power_law"
REHEARSAL_ARMS = ("power_law", "exponential", "uniform", "none", "all")
TUNED_ARMS = {"ewc": "EWC", "si": "SI"}
ARMS = (*REHEARSAL_ARMS, *TUNED_ARMS.values())
CONFIGS = ("configs/power_law_pmnist.yaml", "configs/power_law_tune.yaml")
METRICS = {"final": "final-phase seen accuracy (A_last)", "average": "average over phases of the seen accuracy (AIA)"}

#: the claims of Gandhi et al. 2024's v1 abstract, each a conjunction of comparisons of
#: power_law against the arms named; "comparably or better" for every one of them
CLAIMS = {
    "C1": ("power-law rehearsal performs comparably or better than regularisation methods (EWC, SI)", ("EWC", "SI")),
    "C2": ("power-law rehearsal performs comparably or better than non-power-law rehearsal at the same budget "
           "(exponential, uniform)", ("exponential", "uniform")),
}
HOLDS, NOT_HOLD, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"


# ---------------------------------------------------------------- reading


@dataclass
class StudyData:
    """Per arm, per seed the cell record (ok or failed); the seeds the study expects; what is missing and why."""

    cells: dict[str, dict[int, CellRecord]]
    seeds: list[int]
    missing: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tune: dict[str, Any] | None = None

    def ok(self, arm: str) -> dict[int, CellRecord]:
        return {s: r for s, r in sorted(self.cells.get(arm, {}).items()) if r.ok}

    def failed(self) -> list[CellRecord]:
        return [r for arm in ARMS for _, r in sorted(self.cells.get(arm, {}).items()) if not r.ok]


def _read(folder: Path, what: str, notes: list[str]) -> list[CellRecord]:
    if not folder.is_dir():
        notes.append(f"{what}: {folder} does not exist yet")
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        contents = read_run(folder)
    notes.extend(f"{what}: {w.message}" for w in caught)
    if contents.stale():
        notes.append(f"{what}: {len(contents.stale())} record(s) of cells not in the folder's current config left out")
    return contents.current()


def load_study(rehearsal: str | Path, tuned: str | Path, seeds: Sequence[int] | None = None) -> StudyData:
    """Both run folders: arms of the rehearsal folder by benchmark label, of the tuned folder by strategy label.

    The expected seeds are ``seeds``, else those of the rehearsal folder's config, else every seed seen.
    """
    rehearsal, tuned = Path(rehearsal), Path(tuned)
    notes: list[str] = []
    cells: dict[str, dict[int, CellRecord]] = {a: {} for a in ARMS}
    for r in _read(rehearsal, "rehearsal runs", notes):
        if r.benchmark in REHEARSAL_ARMS:
            cells[r.benchmark][r.seed] = r
    for r in _read(tuned, "tuned runs (phase 2)", notes):
        arm = TUNED_ARMS.get(r.strategy)
        if arm is not None:
            cells[arm][r.seed] = r
    if seeds is None:
        cfg = read_run(rehearsal, warn=False).config if rehearsal.is_dir() else None
        seeds = (cfg or {}).get("seeds") or sorted({s for c in cells.values() for s in c})
    seeds = [int(s) for s in seeds]
    missing = [(a, s) for a in ARMS for s in seeds if s not in cells[a]]
    tune = None
    if (tuned / "tune.json").is_file():
        tune = json.loads((tuned / "tune.json").read_text())
    else:
        notes.append(f"tuned runs: {tuned / 'tune.json'} is not written yet (clbench tune writes it when it ends)")
    data = StudyData(cells, seeds, missing, notes, tune)
    data.notes.extend(stream_mismatches(data))
    return data


def stream_mismatches(data: StudyData) -> list[str]:
    """Pairing by seed assumes every arm of a seed has the same test sets: same test sizes and stream seed."""
    out = []
    for s in data.seeds:
        seen = {(tuple(r.test_sizes), r.stream.get("seed"), r.stream.get("name")) for a in ARMS
                for r in [data.ok(a).get(s)] if r is not None}
        if len(seen) > 1:
            out.append(f"seed {s}: the arms' streams differ ({sorted(seen, key=str)}); pairing by seed is not valid")
    return out


# ---------------------------------------------------------------- measures


def seen_curves(data: StudyData, arm: str) -> dict[int, np.ndarray]:
    """Per ok seed the seen-accuracy curve a_p (:meth:`CellRecord.seen_accuracy`)."""
    return {s: r.seen_accuracy() for s, r in data.ok(arm).items()}


def arm_values(data: StudyData, arm: str, metric: str) -> dict[int, float]:
    """Per ok seed: ``final`` = a_{T-1}, ``average`` = (1/T) sum_p a_p (NaN-aware, as AIA)."""
    out = {}
    for s, a in seen_curves(data, arm).items():
        out[s] = float(a[-1]) if metric == "final" else float(np.nanmean(a))
    return out


def per_phase_frame(data: StudyData, confidence: float = 0.95) -> pd.DataFrame:
    """Tidy: arm, phase (1-based), seeds used, mean, CI half-width, low, high (fractions), per-seed values."""
    rows = []
    for arm in ARMS:
        curves = seen_curves(data, arm)
        if not curves:
            continue
        T = max(len(c) for c in curves.values())
        for p in range(T):
            vals = {s: float(c[p]) for s, c in curves.items() if p < len(c)}
            agg = aggregate(list(vals.values()), confidence)
            rows.append({"arm": arm, "phase": p + 1, "n": agg.n, "mean": agg.mean, "ci": agg.ci,
                         "low": agg.mean - agg.ci, "high": agg.mean + agg.ci,
                         "seeds": " ".join(str(s) for s in vals), "values": " ".join(f"{v:.6f}" for v in vals.values())})
    return pd.DataFrame(rows, columns=["arm", "phase", "n", "mean", "ci", "low", "high", "seeds", "values"])


def summary_aggregates(data: StudyData, confidence: float = 0.95) -> dict[str, dict[str, Aggregate]]:
    """Per arm and metric the aggregate over the ok seeds."""
    return {arm: {m: aggregate(list(arm_values(data, arm, m).values()), confidence) for m in METRICS} for arm in ARMS}


def paired_frame(data: StudyData, reference: str = REFERENCE, confidence: float = 0.95) -> pd.DataFrame:
    """power_law against every other arm, paired on the seeds where both cells are ok, per metric;
    Holm over the comparisons of one metric (the family of ``len(ARMS) - 1`` tests; NaN p-values left out)."""
    rows = []
    for metric in METRICS:
        ref = arm_values(data, reference, metric)
        block = []
        for arm in ARMS:
            if arm == reference:
                continue
            other = arm_values(data, arm, metric)
            shared = sorted(set(ref) & set(other))
            t = paired_test(reference, arm, [ref[s] for s in shared], [other[s] for s in shared], confidence)
            block.append({"metric": metric, "a": reference, "b": arm, "n": t.n, "seeds": " ".join(map(str, shared)),
                          "diff": t.diff.mean, "diff_low": t.diff.low, "diff_high": t.diff.high,
                          "p_t": t.p_t, "p_wilcoxon": t.p_wilcoxon})
        for row, p in zip(block, holm([r["p_t"] for r in block])):
            row["p_holm"] = p
        rows.extend(block)
    return pd.DataFrame(rows, columns=["metric", "a", "b", "n", "seeds", "diff", "diff_low", "diff_high", "p_t",
                                       "p_wilcoxon", "p_holm"])


def verdict(ref: Aggregate, other: Aggregate) -> str:
    """"Comparably or better" for one comparison, from the two CIs over seeds.

    holds: the reference's CI lies wholly above the other's (ref.mean - ref.ci > other.mean + other.ci);
    does not hold: wholly below (ref.mean + ref.ci < other.mean - other.ci); inconclusive: the CIs overlap
    (with a handful of seeds overlapping CIs cannot tell "comparable" from "worse"); not measured: an arm
    without ok cells; inconclusive too when either has fewer than 2 seeds (no CI).
    """
    if ref.n == 0 or other.n == 0:
        return NOT_MEASURED
    if ref.n < 2 or other.n < 2 or math.isnan(ref.ci) or math.isnan(other.ci):
        return INCONCLUSIVE
    if ref.mean - ref.ci > other.mean + other.ci:
        return HOLDS
    if ref.mean + ref.ci < other.mean - other.ci:
        return NOT_HOLD
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """A claim that is a conjunction: any clear loss -> does not hold; every part holds -> holds; any part
    not measured (and no loss) -> not measured; else inconclusive."""
    if any(v == NOT_HOLD for v in verdicts):
        return NOT_HOLD
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    return INCONCLUSIVE


def paired_reading(diff: float, p_holm: float, alpha: float = 0.05) -> str:
    """The paired test's reading, shown beside the CI verdict: ``better``/``worse`` when the Holm-adjusted
    paired t-test p < ``alpha`` (sign of the mean difference reference - other), ``n.s.`` otherwise,
    ``—`` when the test is undefined."""
    if p_holm is None or math.isnan(p_holm):
        return "—"
    if p_holm < alpha:
        return "better" if diff > 0 else "worse"
    return "n.s."


def claim_verdicts(aggs: Mapping[str, Mapping[str, Aggregate]], reference: str = REFERENCE,
                   tests: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per claim x compared arm x metric the verdict (:func:`verdict`) and, given the paired ``tests``, the
    paired reading (:func:`paired_reading`); per claim the combined verdict (:func:`combine`, CIs only)."""
    rows, overall = [], {}
    for cid, (_, arms) in CLAIMS.items():
        parts = []
        for arm in arms:
            for metric in METRICS:
                v = verdict(aggs[reference][metric], aggs[arm][metric])
                parts.append(v)
                paired = "—"
                if tests is not None:
                    sel = tests[(tests["metric"] == metric) & (tests["a"] == reference) & (tests["b"] == arm)]
                    if len(sel):
                        paired = paired_reading(float(sel["diff"].iloc[0]), float(sel["p_holm"].iloc[0]))
                rows.append({"claim": cid, "vs": arm, "metric": metric, "verdict": v, "paired": paired})
        overall[cid] = combine(parts)
    return pd.DataFrame(rows, columns=["claim", "vs", "metric", "verdict", "paired"]), overall


def power_note(n: int, m: int, alpha: float = 0.05) -> str:
    """What n paired seeds can detect: Wilcoxon's smallest two-sided p (2 / 2^n), the |t| a paired t-test
    needs for p < alpha and for Holm's first step p < alpha / m, and the power of the t-test (noncentral t,
    nc = d_z sqrt(n)) for standardized differences d_z = mean(d) / sd(d) of 1 and 2."""
    from scipy import stats

    if n < 2:
        return f"with {n} paired seed(s) no paired test is possible."
    df = n - 1
    t1 = stats.t.ppf(1 - alpha / 2, df)
    tm = stats.t.ppf(1 - alpha / (2 * m), df)

    def power(dz: float) -> float:
        nc = dz * math.sqrt(n)
        return float(stats.nct.sf(t1, df, nc) + stats.nct.cdf(-t1, df, nc))

    return (f"**Power with n = {n} paired seeds.** A paired t-test has {df} degrees of freedom: p < {alpha} needs "
            f"|t| > {t1:.2f}, i.e. a mean difference above {t1 / math.sqrt(n):.2f} standard deviations of the "
            f"per-seed differences; Holm's first step over {m} comparisons needs p < {alpha / m:.4f}, |t| > {tm:.2f}. "
            f"Its power at α = {alpha} is {100 * power(1.0):.0f}% for a difference of one standard deviation of the "
            f"differences and {100 * power(2.0):.0f}% for two. The smallest two-sided Wilcoxon p with {n} pairs is "
            f"2/2^{n} = {2 / 2 ** n:.3f}: it cannot reach {alpha}. A non-significant test here is no evidence of "
            f"equality, and the verdicts below rest on non-overlapping CIs, which is stricter still.")


def replay_budget(data: StudyData) -> dict[str, str]:
    """Per rehearsal arm the replayed samples per phase (from the stream's recorded rehearsal counts), if recorded."""
    out = {}
    for arm in REHEARSAL_ARMS:
        totals = set()
        for r in data.ok(arm).values():
            counts = ((r.stream.get("params") or {}).get("rehearsal") or {}).get("counts")
            if counts is not None:
                totals.add(tuple(int(sum(c)) for c in counts))
        if len(totals) == 1:
            out[arm] = " ".join(map(str, next(iter(totals))))
        elif totals:
            out[arm] = "differs between seeds"
    return out


# ---------------------------------------------------------------- formatting


def md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def pct(v: float, d: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{d}f}"


def mean_pm(a: Aggregate) -> str:
    if a.n == 0:
        return "—"
    return pct(a.mean) if math.isnan(a.ci) else f"{pct(a.mean)} ± {pct(a.ci)}"


def pval(p: float) -> str:
    return "—" if p is None or math.isnan(p) else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")


def status_table(data: StudyData) -> pd.DataFrame:
    rows = []
    for arm in ARMS:
        cells = data.cells.get(arm, {})
        rows.append({"arm": arm, "ok seeds": " ".join(str(s) for s, r in sorted(cells.items()) if r.ok) or "—",
                     "failed seeds": " ".join(str(s) for s, r in sorted(cells.items()) if not r.ok) or "—",
                     "missing seeds": " ".join(str(s) for a, s in data.missing if a == arm) or "—"})
    return pd.DataFrame(rows)


def tune_tables(tune: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Chosen values and phase-1 scores per strategy, and every trial (through clbench's own tune_summary frames)."""
    from clbench.protocols.tune_summary import short_values, trials_frame

    chosen = pd.DataFrame([{"strategy": r["strategy"], "chosen": short_values(r["chosen"]),
                            f"phase-1 {tune.get('objective', '')} on {(tune.get('tuning_benchmark') or {}).get('name', 'D_HT')} (%)":
                                pct(r["phase1_score"]),
                            "trials": len((r.get("tuning") or {}).get("trials") or []),
                            "failed trials": sum(t.get("state") == "FAIL" for t in ((r.get("tuning") or {}).get("trials") or []))}
                           for r in tune.get("strategies", [])])
    trials = trials_frame(dict(tune))
    trials = trials[trials["protocol"] == "tuning"]
    if len(trials):
        trials = pd.DataFrame({"strategy": trials["strategy"], "trial": trials["trial"],
                               "params": [short_values(json.loads(p)) for p in trials["params"]],
                               "state": trials["state"], "value (%)": [pct(v) for v in trials["value"]],
                               "seconds": [("—" if s is None or (isinstance(s, float) and math.isnan(s)) else f"{s:.0f}")
                                           for s in trials["seconds"]]})
    return chosen, trials


@dataclass
class Report:
    text: str
    per_phase: pd.DataFrame
    tests: pd.DataFrame
    verdicts: pd.DataFrame
    overall: dict[str, str]
    aggregates: dict[str, dict[str, Aggregate]]


def build_report(data: StudyData, confidence: float = 0.95) -> Report:
    """Every table of the study as Markdown, and the frames behind them."""
    conf = f"{100 * confidence:g}%"
    pp = per_phase_frame(data, confidence)
    aggs = summary_aggregates(data, confidence)
    tests = paired_frame(data, confidence=confidence)
    vt, overall = claim_verdicts(aggs, tests=tests)
    out = ["# Power-law rehearsal study (Gandhi et al. 2024 v1) at the clbench scale", "",
           "Permuted MNIST subset, 10 tasks x 1500 training / 500 test images, MLP 3x1000 (BatchNorm, dropout 0.5), "
           "Adam 1e-3, batch 64, 1 epoch per phase (configs/power_law_pmnist.yaml); EWC and SI tuned on permuted "
           "Fashion-MNIST, run without rehearsal (configs/power_law_tune.yaml). Accuracies in %; "
           f"mean ± {conf} CI over seeds (Student t, n−1 d.o.f.); same seed = same stream.", "",
           "## Cells", "", md_table(status_table(data))]
    if data.missing:
        out += ["", f"{len(data.missing)} cell(s) missing (not run yet or not written): "
                + ", ".join(f"{a}/seed {s}" for a, s in data.missing) + ". Everything below uses the ok cells only."]
    for r in data.failed():
        out += [f"- FAILED: {r.benchmark}/{r.strategy}/seed {r.seed}: {r.error} (left out of every mean)"]
    if data.notes:
        out += [""] + [f"- note: {n}" for n in data.notes]

    # per-phase table: phases as rows, arms as columns
    arms = [a for a in ARMS if a in set(pp["arm"])]
    table = []
    for p in sorted(set(pp["phase"])):
        row = {"phase": p}
        for a in arms:
            sel = pp[(pp["arm"] == a) & (pp["phase"] == p)]
            row[a] = "—" if sel.empty else mean_pm(Aggregate(sel["mean"].iloc[0], float("nan"), sel["ci"].iloc[0],
                                                             int(sel["n"].iloc[0]), float("nan"), float("nan")))
        table.append(row)
    out += ["", f"## Accuracy on the tasks seen so far, per phase (mean ± {conf} CI)", "",
            "a_p = sample-weighted accuracy on the union of the test sets of tasks 1..p after phase p.", "",
            md_table(pd.DataFrame(table)) if table else "no ok cells yet"]
    out += ["", "seeds per arm: " + ", ".join(f"{a} {aggs[a]['final'].n}" for a in ARMS)]

    summ = pd.DataFrame([{"arm": a, "seeds": aggs[a]["final"].n,
                          "final a_T": mean_pm(aggs[a]["final"]),
                          f"final {conf} CI": "—" if math.isnan(aggs[a]["final"].ci) else
                          f"[{pct(aggs[a]['final'].mean - aggs[a]['final'].ci)}, {pct(aggs[a]['final'].mean + aggs[a]['final'].ci)}]",
                          "average over phases": mean_pm(aggs[a]["average"]),
                          f"average {conf} CI": "—" if math.isnan(aggs[a]["average"].ci) else
                          f"[{pct(aggs[a]['average'].mean - aggs[a]['average'].ci)}, {pct(aggs[a]['average'].mean + aggs[a]['average'].ci)}]"}
                         for a in ARMS])
    out += ["", "## Final and average seen accuracy", "", md_table(summ)]
    budget = replay_budget(data)
    if budget:
        out += ["", "Replayed samples per phase (recorded rehearsal counts): "
                + "; ".join(f"{a}: {v}" for a, v in budget.items())]

    m = len(ARMS) - 1
    tt = pd.DataFrame([{"metric": r.metric, "comparison": f"{r.a} − {r.b}", "n": r.n,
                        "mean diff (pp)": pct(r.diff), f"{conf} CI of diff": "—" if math.isnan(r.diff_low) else
                        f"[{pct(r.diff_low)}, {pct(r.diff_high)}]",
                        "p (paired t)": pval(r.p_t), "p Holm": pval(r.p_holm), "p Wilcoxon": pval(r.p_wilcoxon)}
                       for r in tests.itertuples()])
    n_pairs = int(tests["n"].max()) if len(tests) else 0
    out += ["", "## Paired tests across seeds: power_law against each arm", "",
            f"Differences in percentage points (power_law minus the other arm) on the seeds both have ok; Holm over the "
            f"{m} comparisons of each metric; p = — where the test is undefined (fewer than 2 pairs, or all differences equal).",
            "", md_table(tt), "", power_note(max(n_pairs, len(data.seeds)), m)]

    if data.tune is not None:
        chosen, trials = tune_tables(data.tune)
        out += ["", "## Tuned penalty strengths (tune.json)", "",
                f"Protocol {data.tune.get('protocol')}, sampler {data.tune.get('sampler')}, objective "
                f"{data.tune.get('objective')}, tuning seeds {data.tune.get('tuning_seeds')}; D_HT "
                f"{(data.tune.get('tuning_benchmark') or {}).get('name')}, D_E "
                f"{(data.tune.get('evaluation_benchmark') or {}).get('name')}.", "", md_table(chosen)]
        if len(trials):
            out += ["", "Trials of phase 1:", "", md_table(trials)]
    else:
        out += ["", "## Tuned penalty strengths", "", "tune.json is not written yet: no chosen values to show."]

    out += ["", "## The paper's claims at this scale (Gandhi et al. 2024, v1 abstract)", "",
            "Per comparison: holds = power_law's CI wholly above the other arm's; does not hold = wholly below; "
            "inconclusive = the CIs overlap (or fewer than 2 seeds); not measured = no ok cell of an arm. A claim holds "
            "when every comparison on both metrics holds and fails when any fails. The paired column is the "
            "Holm-adjusted paired t-test's reading (better / worse at p < 0.05, n.s. otherwise): it uses the pairing "
            "by seed and can separate arms whose CIs overlap, but rests on 2 degrees of freedom.", ""]
    for cid, (text, _) in CLAIMS.items():
        out += [f"- **{cid}** {text}: **{overall[cid]}**"]
    rows = [{"claim": r.claim, "power_law vs": r.vs, "metric": r.metric,
             "power_law": mean_pm(aggs[REFERENCE][r.metric]), "other": mean_pm(aggs[r.vs][r.metric]),
             "verdict (CIs)": r.verdict, "paired (Holm)": r.paired} for r in vt.itertuples()]
    out += ["", md_table(pd.DataFrame(rows)), ""]
    out += ["- Forward facilitation is only \"examined\" in the abstract (no direction stated): "
            "no verdict. FWT per arm (R[p-1, p] minus the untrained model's accuracy), mean ± CI: "
            + ", ".join(f"{a} {mean_pm(aggregate([r.metrics.get('fwt', np.nan) for r in data.ok(a).values()], confidence))}"
                        for a in ARMS if data.ok(a)) + "."]
    return Report("\n".join(out) + "\n", pp, tests, vt, overall, aggs)


def figure_png(per_phase: pd.DataFrame, confidence: float = 0.95) -> bytes:
    """Per-phase seen-accuracy curves with CI bands, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for arm in ARMS:
        d = per_phase[per_phase["arm"] == arm]
        if d.empty:
            continue
        x, y, h = d["phase"].to_numpy(), 100 * d["mean"].to_numpy(), 100 * d["ci"].to_numpy()
        line, = ax.plot(x, y, marker="o", ms=3, label=f"{arm} (n={int(d['n'].min())})",
                        ls="--" if arm in TUNED_ARMS.values() else "-")
        ok = ~np.isnan(h)
        ax.fill_between(x[ok], (y - h)[ok], (y + h)[ok], color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("phase (tasks seen)")
    ax.set_ylabel("accuracy on tasks seen so far (%)")
    ax.set_title(f"Permuted MNIST subset: mean and {100 * confidence:g}% CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def publish(folder: str | Path, report: Report, command: str, confidence: float = 0.95, runs: str = "runs") -> Path:
    """output.md, per_phase.csv, tests.csv, verdicts.csv and per_phase.png, recorded as a study (the commands:
    the two runs with ``--output <runs>``, then this script's)."""
    from clbench.host import host_facts
    from clbench.studies import write_study

    files = {"output.md": report.text.encode(), "per_phase.csv": report.per_phase.to_csv(index=False).encode(),
             "tests.csv": report.tests.to_csv(index=False).encode(),
             "verdicts.csv": report.verdicts.to_csv(index=False).encode(),
             "per_phase.png": figure_png(report.per_phase, confidence)}
    return write_study(folder, command=[f"clbench run configs/power_law_pmnist.yaml --output {runs}",
                                        f"clbench tune configs/power_law_tune.yaml --output {runs}", command],
                       configs=[REPO / c for c in CONFIGS], host=host_facts(), files=files, repo_root=REPO,
                       notes="Power-law rehearsal study (issue 11 item 8); verdicts computed by bench/power_law_study.py.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs", help="folder holding power_law_pmnist/ and power_law_tune/ (default runs)")
    ap.add_argument("--rehearsal", help="the rehearsal run folder (default <runs>/power_law_pmnist)")
    ap.add_argument("--tuned", help="the clbench tune run folder (default <runs>/power_law_tune)")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--publish", metavar="FOLDER", help="also write the study files there (e.g. results/power_law)")
    args = ap.parse_args(argv)
    if not 0 < args.confidence < 1:
        ap.error("--confidence must lie in (0, 1)")
    data = load_study(args.rehearsal or Path(args.runs) / "power_law_pmnist", args.tuned or Path(args.runs) / "power_law_tune")
    report = build_report(data, args.confidence)
    print(report.text)
    if args.publish:
        command = "python bench/power_law_study.py " + " ".join(sys.argv[1:] if argv is None else argv)
        print(f"published: {publish(args.publish, report, command, args.confidence, str(args.runs))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
