"""A 20-trial gamma study of a closed-form head: refitting every trial against re-solving one fit.

    CLBENCH_DATA=../shared/data python bench/tune_closed_form.py [--buffer 2048] [--trials 20] [--publish DIR]

On cached EfficientNet-Lite0 (64 px) features of split CIFAR-10 (5 x 2 classes, tuning seed 0), ``acil``'s
gamma is searched over a log grid of ``--trials`` values from 1e-3 to 1e3 (objective AIA) three ways, in this
order, in one process: one plain fit (one cell through the runner), the plain study (``search.resolve: false``:
every trial refits), and the study re-solving one fit (``resolve: true``; snapshot copies below
FACTOR_MIN_TRIALS values, eigendecompositions from there on). Only phase 1 runs (the studies are driven by
the same function ``clbench tune`` uses). Prints wall seconds, the ratios to one fit, both chosen values and
the largest difference between the two studies' trial values; then the cost of one eigendecomposition
against one Cholesky factorisation of the final Gram matrix (what FACTOR_MIN_TRIALS rests on).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import scipy.linalg

from clbench.host import host_facts
from clbench.protocols.config import CellSpec
from clbench.protocols.executors import SerialExecutor
from clbench.protocols.resolve import FACTOR_MIN_TRIALS
from clbench.protocols.runner import StreamCache, execute_cell
from clbench.protocols.search import open_storage
from clbench.protocols.tune import search_strategy
from clbench.protocols.tune_config import parse_tune_config
from clbench.studies import Publication

HT = {"name": "split_cifar10", "n_experiences": 5, "backbone": "efficientnet_lite0@64"}
DE = {"name": "split_fmnist", "n_experiences": 5, "backbone": "efficientnet_lite0@64"}  # not run (phase 1 only)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def study(out: Path, buffer: int, gammas: list[float], resolve: bool):
    tc = parse_tune_config({
        "name": f"resolve_{resolve}", "output": str(out), "seeds": [0], "tuning": dict(HT), "evaluation": dict(DE),
        "strategies": [{"name": "acil", "buffer_size": buffer, "search_space": {"gamma": gammas}}],
        "search": {"sampler": "grid", "objective": "aia", "seeds": [0], "protocol": "two-phase", "resolve": resolve}})
    tc.run_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{tc.run_dir / 'tune.db'}")
    t0 = time.perf_counter()
    rec = search_strategy(tc, tc.strategies[0], "tuning", storage, local=True, executor=SerialExecutor(),
                          cache=StreamCache(), echo=None)
    return time.perf_counter() - t0, rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buffer", type=int, default=2048, help="acil buffer size (the official 8192 takes 4x longer per fit)")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    pub = Publication.begin(args.publish)
    warnings.filterwarnings("ignore", module="optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gammas = [float(g) for g in np.logspace(-3, 3, args.trials)]
    host = host_facts()
    print(f"host: {host.get('cpu')}, {host.get('cores')} cores; acil buffer {args.buffer}, {args.trials} gamma values "
          f"1e-3..1e3; load {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        cell = CellSpec(dict(HT), {"name": "acil", "buffer_size": args.buffer, "gamma": 0.1}, 0)
        execute_cell(cell)  # features into the cache: not timed
        t0 = time.perf_counter()
        record = execute_cell(cell)
        one_fit = time.perf_counter() - t0
        assert record.ok, record.error
        print(f"one fit (one cell: train {sum(record.train_seconds):.1f} s + eval {sum(record.eval_seconds):.1f} s) "
              f"{one_fit:8.1f} s; load {load()}")
        t_plain, plain = study(Path(tmp), args.buffer, gammas, False)
        print(f"plain study (refit per trial)        {t_plain:8.1f} s = {t_plain / one_fit:5.2f} x one fit; load {load()}")
        t_res, res = study(Path(tmp), args.buffer, gammas, True)
        how = "eigendecompositions" if args.trials >= FACTOR_MIN_TRIALS else "copies of (G, Q)"
        print(f"re-solving study (one fit, {how})  {t_res:8.1f} s = {t_res / one_fit:5.2f} x one fit; "
              f"{t_plain / t_res:.1f}x faster than the plain study; load {load()}")
        values = {t["params"]["gamma"]: t["value"] for t in plain["trials"]}
        diff = max(abs(t["value"] - values[t["params"]["gamma"]]) for t in res["trials"])
        print(f"chosen gamma: plain {plain['best']['params']['gamma']:.4g} (AIA {plain['best']['value']:.4f}), "
              f"re-solved {res['best']['params']['gamma']:.4g} (AIA {res['best']['value']:.4f}); "
              f"largest trial-value difference {diff:.1e}")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2 * args.buffer, args.buffer))
    G = X.T @ X
    t0 = time.perf_counter()
    scipy.linalg.cho_factor(G + 0.1 * np.eye(args.buffer), check_finite=False)
    t_chol = time.perf_counter() - t0
    t0 = time.perf_counter()
    scipy.linalg.eigh(G, driver="evd", check_finite=False)
    t_eig = time.perf_counter() - t0
    print(f"one {args.buffer} x {args.buffer} eigendecomposition {t_eig:.2f} s = {t_eig / t_chol:.1f} Cholesky "
          f"factorisations ({t_chol:.2f} s); FACTOR_MIN_TRIALS = {FACTOR_MIN_TRIALS}; load {load()}")
    pub.end()


if __name__ == "__main__":
    main()
