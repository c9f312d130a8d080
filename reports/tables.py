"""Tidy tables built from cell records."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

RESULT_COLUMNS = [
    "benchmark", "strategy", "seed", "trained_exp", "evaluated_exp", "accuracy", "n_test",
    "train_seconds", "eval_seconds", "peak_memory_mb", "state_bytes", "cell_id",
]
METRIC_COLUMNS = ["acc", "aia", "final_seen_acc", "bwt", "fwt", "forgetting", "train_seconds", "peak_memory_mb", "state_bytes"]
CELL_COLUMNS = ["benchmark", "strategy", "seed", "status", "error", *METRIC_COLUMNS, "cell_id"]


def results_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per ok cell x trained experience x evaluated experience (failed cells have no rows)."""
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        for i, row in enumerate(r["accuracy"]):
            for j, acc in enumerate(row):
                rows.append({
                    "benchmark": r["benchmark"], "strategy": r["strategy"], "seed": r["seed"],
                    "trained_exp": i, "evaluated_exp": j, "accuracy": acc, "n_test": r["test_sizes"][j],
                    "train_seconds": r["train_seconds"][i], "eval_seconds": r["eval_seconds"][i],
                    "peak_memory_mb": r["peak_memory_mb"][i], "state_bytes": r["state_bytes"][i], "cell_id": r["cell_id"],
                })
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return df.sort_values(["benchmark", "strategy", "seed", "trained_exp", "evaluated_exp"], kind="stable").reset_index(drop=True)


def cells_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell: status, error and the scalar metrics (NaN for failed cells)."""
    rows = []
    for r in records:
        row = {k: r.get(k) for k in ("benchmark", "strategy", "seed", "status", "error", "cell_id")}
        for m in METRIC_COLUMNS:
            row[m] = (r.get("metrics") or {}).get(m, np.nan) if r.get("status") == "ok" else np.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=CELL_COLUMNS)
    return df.sort_values(["benchmark", "strategy", "seed"], kind="stable").reset_index(drop=True)


SUMMARY_METRICS = {"acc": "ACC", "aia": "AIA", "forgetting": "Forget", "bwt": "BWT", "train_seconds": "train s"}


def summary_table(cells: pd.DataFrame, metrics: dict[str, str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Mean ± standard deviation over seeds per benchmark x strategy (ok cells only), as strings.

    Accuracies are shown in percent; the ``failed`` column counts failed cells.
    """
    rows = []
    for (b, s), g in cells.groupby(["benchmark", "strategy"], sort=True):
        ok = g[g.status == "ok"]
        row: dict[str, Any] = {"benchmark": b, "strategy": s, "seeds": len(ok)}
        for m, title in metrics.items():
            v = ok[m].astype(float).to_numpy()
            scale = 100.0 if m in ("acc", "aia", "forgetting", "bwt", "fwt", "final_seen_acc") else 1.0
            if len(v) == 0:
                row[title] = "—"
            elif len(v) == 1:
                row[title] = f"{scale * v[0]:.2f}"
            else:
                row[title] = f"{scale * v.mean():.2f} ± {scale * v.std(ddof=1):.2f}"
        row["failed"] = int((g.status != "ok").sum())
        rows.append(row)
    return pd.DataFrame(rows)
