"""The record of a ``clbench tune`` run: per-strategy choices and scores, rankings, and the files it writes.

``tune.json`` holds everything (:func:`summarise`); ``tune.csv`` one row per strategy; ``trials.csv`` one row
per trial of every study, failed trials with their reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clbench.files import atomic_write_json, atomic_write_text
from clbench.results import CellRecord
from clbench.stats import aggregate

from .search import describe_space
from .tune_config import TuneConfig


def phase2_scores(records: list[CellRecord], objective: str) -> dict[str, dict[str, Any]]:
    """Per strategy label: mean and standard deviation over seeds of the objective (a failed cell scores 0, as
    a failed trial would have), per-seed values, ACC and AIA over the ok cells, and the failures."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        d = out.setdefault(r.strategy, {"per_seed": {}, "acc": [], "aia": [], "failed": [], "cell_ids": []})
        d["per_seed"][r.seed] = float(r.metrics[objective]) if r.ok else 0.0
        d["cell_ids"].append(r.cell_id)
        if r.ok:
            d["acc"].append(r.metrics["acc"])
            d["aia"].append(r.metrics["aia"])
        else:
            d["failed"].append({"seed": r.seed, "error": r.error})
    for d in out.values():
        agg = aggregate(list(d["per_seed"].values()))
        d["score"] = agg.mean
        d["std"] = 0.0 if math.isnan(agg.std) else agg.std
        d["acc"] = float(np.mean(d["acc"])) if d["acc"] else float("nan")
        d["aia"] = float(np.mean(d["aia"])) if d["aia"] else float("nan")
    return out


def ranking(scores: dict[str, float | None]) -> list[str]:
    """Strategy labels from best to worst score (labels without a score are left out)."""
    have = {k: v for k, v in scores.items() if v is not None and not math.isnan(v)}
    return sorted(have, key=lambda k: (-have[k], k))


def kendall(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, Any]:
    """Kendall's tau-b (``scipy.stats.kendalltau``) between two scorings of the strategies both score.

    tau = (P - Q) / sqrt((P + Q + T_a)(P + Q + T_b)) over strategy pairs (P concordant, Q discordant,
    T ties in one scoring only); 1 = same ranking, -1 = reversed. None with fewer than 2 strategies.
    """
    from scipy.stats import kendalltau

    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None and not math.isnan(a[k]) and not math.isnan(b[k])]
    if len(keys) < 2:
        return {"tau": None, "p_value": None, "n": len(keys)}
    res = kendalltau([a[k] for k in keys], [b[k] for k in keys])
    tau, p = float(res.statistic), float(res.pvalue)
    return {"tau": None if math.isnan(tau) else tau, "p_value": None if math.isnan(p) else p, "n": len(keys)}


def summarise(tc: TuneConfig, tuning: dict[str, dict[str, Any]], records: list[CellRecord],
              conventional: dict[str, dict[str, Any]], storage: str) -> dict[str, Any]:
    """The ``tune.json`` record: per strategy search space, trials, choice and the three scores;
    rankings under each protocol and Kendall's tau between them."""
    objective = tc.search.objective
    p2 = phase2_scores(records, objective)
    rows = []
    for ts in tc.strategies:
        t, c = tuning.get(ts.label), conventional.get(ts.label)
        two = p2.get(ts.label)
        row = {
            "strategy": ts.label, "name": ts.entry["name"], "fixed": ts.fixed, "search_space": describe_space(ts.space),
            "budget": ts.budget,
            "tuning": t, "chosen": t["best"]["params"] if t and t["best"] else None,
            "phase1_score": t["best"]["value"] if t and t["best"] else None,
            "phase2": two, "phase2_score": two["score"] if two else None,
            "conventional": c,
            "conventional_score": c["best"]["value"] if c and c["best"] else None,
            "conventional_choice": c["best"]["params"] if c and c["best"] else None,
        }
        if row["phase2_score"] is not None and row["conventional_score"] is not None:
            row["conventional_minus_phase2"] = row["conventional_score"] - row["phase2_score"]
        rows.append(row)
    scores = {k: {r["strategy"]: r[f"{k}_score"] for r in rows} for k in ("phase1", "phase2", "conventional")}
    return {
        "run": tc.run.name, "objective": objective, "sampler": tc.search.sampler, "protocol": tc.search.protocol,
        "storage": storage, "tuning_benchmark": tc.tuning, "evaluation_benchmark": tc.evaluation,
        "tuning_seeds": list(tc.search.seeds), "evaluation_seeds": list(tc.run.seeds),
        "strategies": rows,
        "rankings": {"phase1": ranking(scores["phase1"]), "two_phase": ranking(scores["phase2"]),
                     "conventional": ranking(scores["conventional"])},
        "kendall_tau": {"two_phase_vs_conventional": kendall(scores["phase2"], scores["conventional"]),
                        "phase1_vs_two_phase": kendall(scores["phase1"], scores["phase2"])},
    }


def strategy_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """``tune.csv``: one row per strategy with the chosen values, the three scores and both ranks."""
    rank = {k: {s: i + 1 for i, s in enumerate(v)} for k, v in summary["rankings"].items()}
    rows = []
    for r in summary["strategies"]:
        p2 = r["phase2"] or {}
        rows.append({
            "strategy": r["strategy"], "objective": summary["objective"], "n_trials": r["budget"],
            "chosen": json.dumps(r["chosen"], sort_keys=True, default=str) if r["chosen"] is not None else "",
            "phase1_score": r["phase1_score"], "phase2_score": r["phase2_score"], "phase2_std": p2.get("std"),
            "phase2_seeds": len(p2.get("per_seed", {})), "conventional_score": r["conventional_score"],
            "conventional_choice": json.dumps(r["conventional_choice"], sort_keys=True, default=str) if r["conventional_choice"] is not None else "",
            "conventional_minus_phase2": r.get("conventional_minus_phase2"),
            "rank_two_phase": rank["two_phase"].get(r["strategy"]), "rank_conventional": rank["conventional"].get(r["strategy"]),
        })
    return pd.DataFrame(rows)


def trials_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """``trials.csv``: one row per trial of every study (protocol, strategy, number, state, value, params, error)."""
    rows = []
    for r in summary["strategies"]:
        for protocol in ("tuning", "conventional"):
            study = r.get(protocol)
            for t in (study or {}).get("trials", []):
                rows.append({"protocol": protocol, "strategy": r["strategy"], "data": study["data"], "trial": t["number"],
                             "state": t["state"], "value": t["value"], "params": json.dumps(t["params"], sort_keys=True, default=str),
                             "seconds": t.get("seconds"), "retry_of": t.get("retry_of"), "error": t.get("error", "")})
    return pd.DataFrame(rows, columns=["protocol", "strategy", "data", "trial", "state", "value", "params", "seconds",
                                       "retry_of", "error"])


def write_outputs(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(path / "tune.json", summary)
    atomic_write_text(path / "tune.csv", strategy_frame(summary).to_csv(index=False))
    atomic_write_text(path / "trials.csv", trials_frame(summary).to_csv(index=False))


def short_values(params: dict[str, Any] | None) -> str:
    """``lr=0.0123, epochs=3``: chosen values with 3 significant digits."""
    if not params:
        return "—"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def format_tune_summary(summary: dict[str, Any]) -> str:
    """The printed table: chosen values, phase-1 / phase-2 / conventional scores, ranks, Kendall's tau."""
    if not summary["strategies"]:
        return "no strategies"
    rank = {k: {s: i + 1 for i, s in enumerate(v)} for k, v in summary["rankings"].items()}

    def pct(v: Any) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"

    rows = []
    for r in summary["strategies"]:
        p2 = r["phase2"] or {}
        two = "—" if r["phase2_score"] is None else pct(r["phase2_score"]) + (f" ± {100 * p2['std']:.2f}" if p2.get("std") else "")
        rows.append({"strategy": r["strategy"], "chosen": short_values(r["chosen"]), "phase 1 (%)": pct(r["phase1_score"]),
                     "two-phase (%)": two, "conventional (%)": pct(r["conventional_score"]),
                     "rank two-phase": rank["two_phase"].get(r["strategy"], "—"),
                     "rank conventional": rank["conventional"].get(r["strategy"], "—"),
                     "failed trials": sum(t["state"] == "FAIL" for t in ((r["tuning"] or {}).get("trials") or []))})
    text = pd.DataFrame(rows).to_string(index=False)
    text = ("two-phase: mean ± std over evaluation seeds (sample standard deviation); a failed phase-2 cell scores 0\n" + text)
    for k, v in summary["kendall_tau"].items():
        text += f"\nKendall tau {k.replace('_', ' ')}: " + ("n/a" if v["tau"] is None else f"{v['tau']:.3f} (p={v['p_value']:.3f}, {v['n']} strategies)")
    return f"objective {summary['objective']}\n" + text


