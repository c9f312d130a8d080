"""The tune section: conventional vs two-phase scores and rankings of a ``clbench tune`` run.

``tune.json`` (written by ``clbench tune``) holds per strategy ``phase1_score``, ``phase2_score``,
``conventional_score`` and ``phase2.per_seed`` as fractions of 1 (the objective's own unit: ACC, AIA or
A_last are accuracies in [0, 1]); nothing here guesses units. ``tune.csv`` has the same scores and the ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from clbench.stats import SPREADS, aggregate, format_aggregate

from .data import RunData, slug
from .document import Table, Text
from .options import SHORT_BANDS
from .plots import TuneEntry


def _num(v: Any) -> float:
    if isinstance(v, bool):
        return float("nan")
    try:
        return float("nan") if v is None else float(v)
    except (TypeError, ValueError):
        return float("nan")


def tune_entries(run: RunData) -> list[TuneEntry] | None:
    """Conventional vs two-phase score and rank per strategy of a ``clbench tune`` run; None if absent/unreadable.

    Read from ``tune.json`` (``strategies[i]``: ``strategy``, ``phase1_score``, ``phase2_score``,
    ``conventional_score``, ``phase2.per_seed`` {seed: score}, ``phase2.failed``; ``rankings.two_phase`` /
    ``rankings.conventional`` best first), else from ``tune.csv`` (same scores, ``rank_two_phase``,
    ``rank_conventional``). Scores are fractions. Missing ranks are computed (1 = best, ties share the lower rank).
    """
    entries: list[TuneEntry] = []
    tune = run.tune if isinstance(run.tune, dict) else {}
    rows = tune.get("strategies") if isinstance(tune.get("strategies"), list) else None
    if rows:
        rankings = tune.get("rankings") if isinstance(tune.get("rankings"), dict) else {}
        for r in rows:
            if not isinstance(r, dict) or not r.get("strategy"):
                continue
            p2 = r.get("phase2") if isinstance(r.get("phase2"), dict) else {}
            per_seed = p2.get("per_seed") if isinstance(p2.get("per_seed"), dict) else {}
            e = TuneEntry(str(r["strategy"]), _num(r.get("conventional_score")), _num(r.get("phase2_score")))
            for key, attr in (("conventional", "rank_conventional"), ("two_phase", "rank_two_phase")):
                order = rankings.get(key) if isinstance(rankings.get(key), list) else []
                if e.name in order:
                    setattr(e, attr, float(order.index(e.name) + 1))
            failed = p2.get("failed") if isinstance(p2.get("failed"), list) else []
            e.extra = {"phase1": _num(r.get("phase1_score")), "per_seed": [_num(v) for v in per_seed.values()],
                       "failed": len(failed), "chosen": r.get("chosen")}
            entries.append(e)
    elif run.tune_table is not None and "strategy" in run.tune_table:
        for r in run.tune_table.to_dict("records"):
            e = TuneEntry(str(r["strategy"]), _num(r.get("conventional_score")), _num(r.get("phase2_score")),
                          _num(r.get("rank_conventional")), _num(r.get("rank_two_phase")))
            e.extra = {"phase1": _num(r.get("phase1_score")), "per_seed": [], "failed": 0, "chosen": r.get("chosen")}
            entries.append(e)
    entries = [e for e in entries if not (math.isnan(e.conventional) and math.isnan(e.two_phase))]
    if not entries:
        return None
    from scipy.stats import rankdata

    for attr, rattr in (("conventional", "rank_conventional"), ("two_phase", "rank_two_phase")):
        if all(not math.isnan(getattr(e, rattr)) for e in entries):
            continue
        v = np.array([getattr(e, attr) for e in entries], dtype=float)
        r = rankdata(np.where(np.isnan(v), np.inf, -v), method="min")
        for e, ri, vi in zip(entries, r, v):
            setattr(e, rattr, float("nan") if math.isnan(vi) else float(ri))
    return entries


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{100 * v:.2f}"


def tune_section(runs: Sequence[RunData], colors: dict[str, str], spread: str,
                 table: Callable[[Table], None], figure: Callable[[str, str, Any], None], text: Callable[[Text], None]) -> bool:
    """Add a table and two figures per tune run through the callbacks; False when no run is a tune run."""
    from .plots import tune_rankings_figure, tune_scores_figure

    tune_runs = [r for r in runs if r.tune is not None or r.tune_table is not None]
    if not tune_runs:
        return False
    for run in tune_runs:
        entries = tune_entries(run)
        if not entries:
            text(Text(f"{run.label}: tune.json/tune.csv found but no per-strategy conventional and two-phase scores could "
                      f"be read from it; the phase-2 cells are reported above.", "note"))
            continue
        entries.sort(key=lambda e: (math.isnan(e.rank_two_phase), e.rank_two_phase, e.name))
        cmap = dict(colors)
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        extra = [e.name for e in entries if e.name not in cmap]
        for i, n in enumerate(extra):
            cmap[n] = to_hex(colormaps["tab20"](i % 20))
        tune = run.tune if isinstance(run.tune, dict) else {}
        objective = str(tune.get("objective", "score")).upper().replace("A_LAST", "A_last")
        name = "tune" if len(tune_runs) == 1 else f"tune_{slug(run.label)}"
        rows, data = [], []
        for e in entries:
            agg = aggregate(e.extra.get("per_seed") or [])
            consistent = agg.n > 0 and abs(agg.mean - e.two_phase) < 1e-9
            e.extra["spread"] = agg.spread(spread) if consistent else float("nan")
            two_text = format_aggregate(agg, spread, 100.0, 2) if consistent else _pct(e.two_phase)
            failed = int(e.extra.get("failed") or 0)
            diff = e.conventional - e.two_phase
            rows.append([e.name, _pct(e.extra.get("phase1", np.nan)), two_text,
                         "—" if math.isnan(e.rank_two_phase) else f"{e.rank_two_phase:.0f}", _pct(e.conventional),
                         "—" if math.isnan(e.rank_conventional) else f"{e.rank_conventional:.0f}",
                         "—" if math.isnan(diff) else f"{100 * diff:+.2f}", f"{failed} FAILED" if failed else "0"])
            data.append({"strategy": e.name, "phase1": e.extra.get("phase1"), "two_phase": e.two_phase,
                         "two_phase_std": agg.std if consistent else np.nan, "two_phase_ci95": agg.ci if consistent else np.nan,
                         "two_phase_seeds": agg.n, "rank_two_phase": e.rank_two_phase, "conventional": e.conventional,
                         "rank_conventional": e.rank_conventional, "conventional_minus_two_phase": diff,
                         "phase2_failed_cells": failed})
        changed = sum(e.rank_conventional != e.rank_two_phase for e in entries
                      if not (math.isnan(e.rank_conventional) or math.isnan(e.rank_two_phase)))
        tau = ((tune.get("kendall_tau") or {}).get("two_phase_vs_conventional") or {}).get("tau")
        tau_text = f"; Kendall tau between the two rankings = {tau:.3f}" if isinstance(tau, (int, float)) else ""
        table(Table(name, f"{run.label}: {objective} (%) — phase 1 = best trial on the tuning stream D_HT; two-phase = the "
                          f"chosen values run once per seed on the evaluation stream D_E ({SPREADS[spread]}); conventional = "
                          f"best trial of a search tuned directly on D_E (the number a paper tuning on its test stream "
                          f"reports). {changed} of {len(entries)} strategies change rank{tau_text}. clbench tune scores a "
                          f"failed phase-2 cell 0; such cells are counted in the last column.",
                    ["Strategy", "phase 1 (%)", "two-phase (%)", "rank", "conventional (%)", "rank",
                     "conv. − two-phase (pp)", "failed phase-2 cells"], rows, pd.DataFrame(data)))
        spread_text = SPREADS[spread].replace("mean ± ", "")
        figure(f"{name}_scores", f"{run.label}: {objective} per strategy under the conventional protocol (hatched) and the "
               f"two-phase protocol (whiskers: {spread_text}).", tune_scores_figure(run.label, entries, cmap, SHORT_BANDS[spread]))
        figure(f"{name}_rankings", f"{run.label}: the ranking of the strategies under each protocol (1 = best), a line "
               f"per strategy.", tune_rankings_figure(run.label, entries, cmap))
    return True
