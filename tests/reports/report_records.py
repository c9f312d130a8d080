"""Hand-made cell records and run folders for the report tests (no training).

Each record is what ``clbench run`` writes: a ``spec`` with the benchmark and strategy entries (what the
report pools on), a ``stream`` description (what paired tests pair on), and metrics computed by
:func:`clbench.metrics.summary_metrics` from the record's own accuracy matrix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from clbench.metrics import summary_metrics
from clbench.results import cell_id


def record(bench: str, strategy: str, seed: int, R: np.ndarray | None, *, bench_entry: dict | None = None,
           strat_entry: dict | None = None, test_sizes: list[int] | None = None, error: str = "",
           stream_params: dict | None = None, stream_extra: dict | None = None, train_seconds: float = 1.0,
           state_bytes: int = 2**20, alloc_mb: float = 0.0, scenario: str = "class-il",
           anytime: list[list[float]] | None = None) -> dict[str, Any]:
    """One cell record (ok when ``R`` is given, failed otherwise). ``bench``/``strategy`` are the labels; the
    entries (as a config holds them, default ``{"name": label}``) get a ``label`` key when it differs from the name."""
    bench_entry = dict(bench_entry or {"name": bench})
    strat_entry = dict(strat_entry or {"name": strategy})
    if bench != bench_entry["name"]:
        bench_entry["label"] = bench
    if strategy != strat_entry["name"]:
        strat_entry["label"] = strategy
    T = 3 if R is None else int(np.asarray(R).shape[0])
    test_sizes = test_sizes or [100] * T
    params = {"class_order": [int(c) for c in np.random.default_rng(seed).permutation(2 * T)],
              "source": {"name": "toy", "title": "Toy digits", "n_classes": 2 * T}}
    params.update(stream_params or {})
    stream = {"name": bench_entry["name"], "scenario": scenario, "n_classes": 2 * T, "n_experiences": T, "seed": seed,
              "params": params, **(stream_extra or {})}
    rec: dict[str, Any] = {
        "cell_id": cell_id(bench_entry, strat_entry, seed), "benchmark": bench, "strategy": strategy, "seed": seed,
        "status": "ok" if R is not None else "failed", "error": error, "stream": stream, "versions": {"clbench": "t"},
        "spec": {"benchmark": bench_entry, "strategy": strat_entry, "device": "cpu", "eval_period": None},
        "accuracy": [], "test_sizes": test_sizes, "train_seconds": [], "eval_seconds": [], "peak_memory_mb": [],
        "state_bytes": [], "metrics": {}, "schema": 2, "host": {"device": "cpu: test"}}
    if R is not None:
        R = np.asarray(R, dtype=float)
        per = [train_seconds / T] * T
        rec.update(accuracy=R.tolist(), train_seconds=per, eval_seconds=[0.01] * T, peak_memory_mb=[800.0] * T,
                   alloc_peak_mb=[alloc_mb] * T, state_bytes=[state_bytes] * T, anytime=anytime or [])
        m = summary_metrics(R, test_sizes, anytime=anytime or ())
        rec["metrics"] = {**m, "train_seconds": float(sum(per)), "peak_memory_mb": 800.0, "alloc_peak_mb": alloc_mb,
                          "state_bytes": float(state_bytes)}
    return rec


def lower_triangular(last_row: list[float], diag: float = 0.95) -> np.ndarray:
    """An accuracy matrix whose last row is ``last_row`` (earlier rows: ``diag`` on the diagonal, 0.9 below)."""
    T = len(last_row)
    R = np.zeros((T, T))
    for i in range(T - 1):
        R[i, :i] = 0.9
        R[i, i] = diag
    R[T - 1] = last_row
    return R


def write_run(folder: Path, records: list[dict], name: str | None = None) -> Path:
    """A run folder: config.yaml (the matrix of the records' entries) and cells/<id>.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cells").mkdir(exist_ok=True)
    benches, strats, seeds = [], [], []
    for r in records:
        b, s = r["spec"]["benchmark"], r["spec"]["strategy"]
        if b not in benches:
            benches.append(b)
        if s not in strats:
            strats.append(s)
        if r["seed"] not in seeds:
            seeds.append(r["seed"])
    cfg = {"name": name or folder.name, "benchmarks": benches, "strategies": strats, "seeds": seeds}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for r in records:
        (folder / "cells" / f"{r['cell_id']}.json").write_text(json.dumps(r))
    return folder


def wide_comparison(tmp_path: Path) -> tuple[Path, Path]:
    """Two run folders, 8 strategies with long labels, three benchmarks (one blurry), failed cells, a strategy that saw
    future experiences, a tune record: every kind of table and figure, as wide as a real comparison gets."""
    names = ["finetune", "replay_with_a_long_buffer_label", "ewc", "si", "lwf", "kvb_all_experiences", "acil", "joint"]
    recs_a, recs_b = [], []
    for bi, bench in enumerate(("split_cifar10_resnet18_features", "permuted_mnist", "blurry_split_cifar10")):
        for si, s in enumerate(names):
            for seed in range(3):
                target = recs_a if si < 5 else recs_b
                if s == "lwf" and bench == "permuted_mnist":
                    target.append(record(bench, s, seed, None, error="CellFailure: non-finite training loss " + "x" * 200))
                    continue
                base = 0.3 + 0.08 * si - 0.05 * bi + 0.01 * seed
                extra = {"unlabelled": "all_experiences_unlabelled", "sees_future": True, "samples": 10} if s.startswith("kvb") else None
                params = {"blurry": {"blurry_ratio": 0.1}} if bench.startswith("blurry") else None
                anytime = [[100, base], [200, base + 0.05]] if params else None  # A_auc on the blurry stream
                target.append(record(bench, s, seed, lower_triangular([min(base, 0.99), 0.7, 0.95]), stream_extra=extra,
                                     stream_params=params, test_sizes=[300, 50, 50] if params else None,
                                     train_seconds=10 ** (si % 4 - 1), state_bytes=2 ** (10 + si), alloc_mb=0.5 * si + 0.1 * seed,
                                     anytime=anytime))
    a = write_run(tmp_path / "runs" / "baselines_on_three_benchmarks", recs_a)
    b = write_run(tmp_path / "runs" / "plugins_versus_baselines_second_machine", recs_b)
    tune = {"objective": "acc", "strategies": [{"strategy": n, "phase1_score": 0.5, "phase2_score": 0.4 + 0.01 * i,
                                                "conventional_score": 0.45, "phase2": {"per_seed": {"0": 0.4 + 0.01 * i}}}
                                               for i, n in enumerate(names[:4])],
            "rankings": {"two_phase": names[:4][::-1], "conventional": names[:4]}}
    (b / "tune.json").write_text(json.dumps(tune))
    return a, b
