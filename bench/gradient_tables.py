"""Markdown tables of the issue-4 runs: permuted-MNIST reproductions and the power-law study.

Reads the cell records of finished run folders (``runs/<name>/cells/*.json``) and prints

* the reproduction table: per run folder and strategy, final average accuracy
  ACC = mean_j R[T-1, j], training seconds, epochs and training images per task used;
* the power-law table: per schedule (benchmark label), the accuracy on the union of the test sets
  of the tasks seen so far after each phase p,
      A_p = sum_{j<=p} n_j R[p, j] / sum_{j<=p} n_j,
  as mean ± std (sample std, ddof 1) over seeds, plus the number of seeds found.

    python bench/gradient_tables.py [--runs runs]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from clbench.studies import Publication

REPRO = {"pmnist_ewc": 0.83, "pmnist_si": 0.94, "pmnist_lwf": 0.51, "pmnist_gem": 0.83, "pmnist_agem": 0.81}
POWER_LAW = ("power_law_pmnist", "power_law_pmnist_regularizers")


def records(folder: Path) -> list[dict]:
    out = []
    for f in sorted((folder / "cells").glob("*.json")):
        rec = json.loads(f.read_text())
        if rec.get("status") == "ok":
            out.append(rec)
    return out


def seen_accuracy(rec: dict) -> list[float]:
    """A_p for every phase p (see the module docstring)."""
    n = rec["test_sizes"]
    return [sum(n[j] * row[j] for j in range(p + 1)) / sum(n[: p + 1]) for p, row in enumerate(rec["accuracy"])]


def mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{100 * xs[0]:.1f}"
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}"


def reproduction_table(root: Path) -> str:
    lines = ["| run | strategy | target | measured ACC | epochs | train images/task | seconds (train) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, target in REPRO.items():
        for rec in records(root / name):
            R = rec["accuracy"]
            acc = sum(R[-1]) / len(R[-1])
            hp = rec["spec"]["strategy"]
            per_task = rec["stream"]["params"].get("train_per_task") or 60000
            lines.append(f"| {name} | {hp['name']} | {target:.2f} | {acc:.3f} | {hp.get('epochs', 1)} | {per_task} "
                         f"| {sum(rec['train_seconds']):.0f} |")
    return "\n".join(lines)


def power_law_table(root: Path) -> str:
    by_label: dict[str, list[list[float]]] = defaultdict(list)
    for name in POWER_LAW:
        for rec in records(root / name):
            label = rec["benchmark"] if rec["strategy"] in ("mlp3x1000", "finetune") else f"{rec['strategy']} (no rehearsal)"
            by_label[label].append(seen_accuracy(rec))
    if not by_label:
        return "(no power-law cells finished)"
    T = max(len(v[0]) for v in by_label.values())
    lines = ["| schedule | seeds | " + " | ".join(f"after {p + 1}" for p in range(T)) + " |",
             "| --- | --- | " + " | ".join("---" for _ in range(T)) + " |"]
    order = ["power_law", "exponential", "uniform", "none", "all"]
    for label in sorted(by_label, key=lambda k: (order.index(k) if k in order else len(order), k)):
        runs = by_label[label]
        cols = [mean_std([r[p] for r in runs if len(r) > p]) for p in range(T)]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs", help="parent folder of the run folders")
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    pub = Publication.begin(args.publish)
    root = Path(args.runs)
    print("## Reproductions (permuted MNIST)\n")
    print(reproduction_table(root))
    print("\n## Power-law study: accuracy (%) on all tasks seen so far, after each phase\n")
    print(power_law_table(root))
    pub.end(configs=[c for c in (Path("configs") / f"{n}.yaml" for n in (*REPRO, *POWER_LAW)) if c.is_file()])


if __name__ == "__main__":
    main()
