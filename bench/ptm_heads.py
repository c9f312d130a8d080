"""Time per seed of the closed-form heads on cached CIFAR-10 features, RanPAC against its float64 floor, and
re-solving a ridge head from snapshots against refitting it (the building block of issue 16 item 1).

    CLBENCH_DATA=../shared/data python bench/ptm_heads.py [configs/split_cifar10_frozen.yaml]
        [--heads ranpac slda fecam randumb simplecil] [--ranpac-dim 10000] [--tuning-dim 2000] [--trials 20]

Needs the config's features in the cache (``clbench features CONFIG`` first). All in one run:

* **heads**: each head with its defaults (ranpac with ``--ranpac-dim``) through clbench's evaluation loop
  (``run_stream``: train every experience, evaluate on every test set after each), on the config's first
  benchmark and ``--seed``; prints train, evaluation and total seconds and the final accuracy. Goal: total
  under 30 s per seed on 2 cores.
* **ranpac floor** (at ``--ranpac-dim`` M): the float64 work any implementation must do once: the projection
  H = ReLU(F W) of every training row and the Gram H^T H (numpy ``H.T @ H``, chunked, accumulated), plus one
  M x M eigendecomposition (``scipy.linalg.eigh``, ``evd``) of the result. Prints ranpac's total / floor.
* **tuning** (at ``--tuning-dim``, fixed lambda): a ``--trials``-value study of ranpac's ``ridge`` (log grid
  1e-6..1e6) done three ways: refitting ranpac per value (the plain study), and one fit that keeps a
  snapshot per experience (``solver_state``: an eigendecomposition, or a copy of (G, Q)) then re-solves per
  value (``resolve``), evaluating from test embeddings computed once; each evaluates the full accuracy matrix
  per value. Prints the times, their ratio to
  one fit, the chosen values and the largest accuracy difference to the plain study.

The machine's load (``os.getloadavg``) is printed before and after; timings on a busy machine are not
comparable across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.linalg
import torch
import yaml
from clbench.studies import Publication

HEADS = ("ranpac", "slda", "fecam", "randumb", "simplecil")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class PhaseTimer:
    """Wall seconds spent in named functions (wrapped on their module or class for the duration of a run)."""

    def __init__(self, targets: dict[str, tuple[object, str]]) -> None:
        self.targets, self.seconds, self.saved = targets, {k: 0.0 for k in targets}, {}

    def __enter__(self) -> "PhaseTimer":
        for label, (owner, attr) in self.targets.items():
            fn = getattr(owner, attr)
            self.saved[label] = fn

            def timed(*a, _fn=fn, _label=label, **kw):
                t = time.perf_counter()
                try:
                    return _fn(*a, **kw)
                finally:
                    self.seconds[_label] += time.perf_counter() - t

            setattr(owner, attr, timed)
        return self

    def __exit__(self, *exc) -> None:
        for label, (owner, attr) in self.targets.items():
            setattr(owner, attr, self.saved[label])


def ranpac_phases() -> PhaseTimer:
    from clbench.strategies import ranpac
    from clbench.strategies.closed_form import RidgeStatistics

    return PhaseTimer({"projection": (ranpac.RanPAC, "_embed_all"), "Gram": (RidgeStatistics, "add"),
                       "lambda choice": (ranpac, "validation_losses"), "Cholesky solve": (RidgeStatistics, "solve")})


def run_head(name: str, fs, seed: int, params: dict) -> tuple[float, float, float, object, dict]:
    """(train s, eval s, final accuracy, strategy, phase seconds) of one cell through the evaluation loop."""
    from clbench.protocols.loop import run_stream
    from clbench.results import CellRecord
    from clbench.strategies.registry import resolve_strategy

    strategy = resolve_strategy(name)(fs.info, seed=seed, **params)
    timer = ranpac_phases() if name == "ranpac" else PhaseTimer({})
    with timer:
        record = run_stream(strategy, fs, CellRecord("bench", fs.name, name, seed))
    return (float(sum(record.train_seconds)), float(sum(record.eval_seconds)), float(record.metrics["acc"]), strategy,
            timer.seconds)


def ranpac_floor(fs, W: torch.Tensor, chunk: int) -> tuple[float, float, float]:
    """(projection s, Gram s, eigh s): float64 H = ReLU(F W), G = sum H^T H, one eigh(G)."""
    M = W.shape[1]
    G = np.zeros((M, M))
    t_proj = t_gram = 0.0
    for e in fs:
        for s in range(0, len(e.train), chunk):
            t = time.perf_counter()
            H = torch.relu_(e.train.x[s : s + chunk].double() @ W).numpy()
            t_proj += time.perf_counter() - t
            t = time.perf_counter()
            G += H.T @ H
            t_gram += time.perf_counter() - t
    t = time.perf_counter()
    scipy.linalg.eigh(G, driver="evd", overwrite_a=True, check_finite=False)
    return t_proj, t_gram, time.perf_counter() - t


def tuning(fs, seed: int, dim: int, trials: int) -> None:
    from clbench.metrics import final_accuracy
    from clbench.protocols.loop import accuracy
    from clbench.strategies.ranpac import RanPAC

    grid = [float(v) for v in np.logspace(-6, 6, trials)]
    tests = [(e.test, None) for e in fs]

    def matrix_row(s) -> list[float]:
        return [accuracy(s, t, m, "cpu") for t, m in tests]

    # plain study: one fit per value
    t0 = time.perf_counter()
    plain = {}
    one_fit = None
    for lam in grid:
        t = time.perf_counter()
        s = RanPAC(fs.info, seed=seed, projection_dim=dim, ridge=lam)
        R = []
        for e in fs:
            s.train_experience(e.train_view())
            R.append(matrix_row(s))
        plain[lam] = final_accuracy(np.array(R))
        one_fit = one_fit or time.perf_counter() - t
    t_plain = time.perf_counter() - t0
    # one fit with a snapshot per experience, then a re-solve per value: from eigendecompositions, or from (G, Q);
    # the test embeddings ReLU(f W) do not depend on lambda and are computed once
    reuse = {}
    for factor in (True, False):
        t0 = time.perf_counter()
        s = RanPAC(fs.info, seed=seed, projection_dim=dim, ridge=1.0)
        states = []
        for e in fs:
            s.train_experience(e.train_view())
            states.append(s.solver_state(factor=factor))
        t_snap = time.perf_counter() - t0
        H_test = [(s.embed(t.x), t.y) for t, _ in tests]

        def cached_row(s) -> list[float]:
            return [float((s.mask_unseen(torch.from_numpy(H @ s.W_o).float()).argmax(1) == y).float().mean())
                    for H, y in H_test]

        accs = {}
        for lam in grid:
            R = []
            for state in states:
                s.resolve(state, ridge=lam)
                R.append(cached_row(s))
            accs[lam] = final_accuracy(np.array(R))
        reuse[factor] = (time.perf_counter() - t0, t_snap, accs)
        del states, H_test
    t_reuse, t_snap, reused = reuse[True]
    best_plain, best_reuse = max(grid, key=plain.get), max(grid, key=reused.get)
    diff = max(abs(plain[v] - acc[v]) for v in grid for _, _, acc in reuse.values())
    print(f"\ntuning ranpac ridge, M = {dim}, {trials} values 1e-6..1e6 (full accuracy matrix per value):")
    print(f"  one fit (with evaluation)        {one_fit:8.1f} s")
    print(f"  plain study (refit per value)    {t_plain:8.1f} s = {t_plain / one_fit:5.2f} x one fit")
    for factor, label in ((True, "eigendecompositions"), (False, "(G, Q) copies, Cholesky re-solves")):
        t_all, t_fit, _ = reuse[factor]
        print(f"  fit + snapshots + re-solves      {t_all:8.1f} s = {t_all / one_fit:5.2f} x one fit "
              f"(fit + {len(fs)} snapshots: {label}, {t_fit:.1f} s)")
    print(f"  chosen ridge: plain {best_plain:.3g} (acc {plain[best_plain]:.4f}), re-solved {best_reuse:.3g} "
          f"(acc {reused[best_reuse]:.4f}); largest accuracy difference over the grid {diff:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/split_cifar10_frozen.yaml")
    ap.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    ap.add_argument("--ranpac-dim", type=int, default=10000)
    ap.add_argument("--no-floor", action="store_true", help="skip the RanPAC floor")
    ap.add_argument("--tuning-dim", type=int, default=2000, help="RanPAC width of the tuning comparison (0: skip)")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    pub = Publication.begin(args.publish)

    from clbench.benchmarks.features import feature_stream
    from clbench.benchmarks.registry import build_stream

    cfg = yaml.safe_load(open(args.config))
    entry = cfg["benchmarks"][0]
    stream = build_stream(entry, args.seed, cfg.get("data_root"))
    t0 = time.perf_counter()
    fs = feature_stream(stream, entry.get("backbone"), args.cache_dir)
    print(f"{entry['name']} {entry.get('backbone')} seed {args.seed}: features in {time.perf_counter() - t0:.1f} s "
          f"(cache hit {fs.params.get('feature_cache_hit')}); {sum(len(e.train) for e in fs)} train x "
          f"{fs[0].train.x.shape[1]}-d, {len(fs)} experiences; torch threads {torch.get_num_threads()}, "
          f"{len(os.sched_getaffinity(0))} cores; load {load()}")
    print(f"\n{'head':<10} {'params':<24} {'train s':>8} {'eval s':>8} {'total s':>8} {'acc':>7}")
    totals = {}
    for name in args.heads:
        params = {"projection_dim": args.ranpac_dim} if name == "ranpac" else {}
        tr, ev, acc, strategy, phases = run_head(name, fs, args.seed, params)
        totals[name] = (tr + ev, tr, strategy)
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        print(f"{name:<10} {shown:<24} {tr:8.1f} {ev:8.1f} {tr + ev:8.1f} {acc:7.4f}", flush=True)
        if phases:
            print(f"{'':<10} training phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
                  + (f"; lambda per experience {strategy.chosen_ridges}" if name == "ranpac" else ""), flush=True)
    print(f"load {load()}")
    if "ranpac" in totals and not args.no_floor:
        total, train, strategy = totals["ranpac"]
        W = strategy.W_rand
        del strategy, totals
        t_proj, t_gram, t_eig = ranpac_floor(fs, W, args.chunk)
        floor = t_proj + t_gram + t_eig
        print(f"\nranpac floor at M = {args.ranpac_dim} (float64): projection {t_proj:.1f} s + Gram {t_gram:.1f} s "
              f"+ one eigh {t_eig:.1f} s = {floor:.1f} s; ranpac training / floor = {train / floor:.2f}, "
              f"total (with evaluation) / floor = {total / floor:.2f}; load {load()}")
    if args.tuning_dim:
        tuning(fs, args.seed, args.tuning_dim, args.trials)
        print(f"load {load()}")
    pub.end(configs=[args.config])


if __name__ == "__main__":
    main()
