"""ACIL on the cached CIFAR-10 features against its floor, and the joint-ridge sanity check.

    CLBENCH_DATA=../shared/data python bench/acil.py [configs/split_cifar10_frozen.yaml] [--buffers 8192 2048]

Needs the config's features in the cache (``clbench features CONFIG`` first). For each buffer width w:

* floor = the float64 Gram X^T X of the whole buffered training set (X = ReLU(f B), computed in chunks,
  numpy GEMM) plus one Cholesky factor-and-solve of (G + gamma I) W = X^T Y per phase; the projection
  time is printed apart and included;
* acil = the ``acil`` strategy trained phase by phase (sum of its train_experience times);
* sanity: W_acil against the joint ridge W of the floor (relative difference) and the final accuracy of
  both on all test data (must agree within 1e-6). Goal: acil within 1.3x of the floor.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg
import torch
import yaml
from clbench.studies import Publication


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/split_cifar10_frozen.yaml")
    ap.add_argument("--buffers", type=int, nargs="+", default=[8192, 2048])
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    pub = Publication.begin(args.publish)

    from clbench.benchmarks.features import feature_stream
    from clbench.benchmarks.registry import build_stream
    from clbench.strategies.analytic import ACIL

    cfg = yaml.safe_load(open(args.config))
    entry = cfg["benchmarks"][0]
    stream = build_stream(entry, args.seed, cfg.get("data_root"))
    t0 = time.perf_counter()
    fs = feature_stream(stream, entry.get("backbone"), args.cache_dir)
    hit = fs.params.get("feature_cache_hit")
    print(f"{entry['name']} {entry.get('backbone')} seed {args.seed}: features in {time.perf_counter() - t0:.1f} s (cache hit {hit}); "
          f"{sum(len(e.train) for e in fs)} train x {fs[0].train.x.shape[1]}-d, torch threads {torch.get_num_threads()}")
    test_x = torch.cat([e.test.x for e in fs])
    test_y = torch.cat([e.test.y for e in fs]).numpy()
    for w in args.buffers:
        acil = ACIL(fs.info, seed=args.seed, buffer_size=w, gamma=args.gamma)
        # ---- floor: projection + float64 GEMM Gram of every buffered training row + one Cholesky solve per phase
        t_proj = t_gram = t_chol = 0.0
        G = np.zeros((w, w))
        H = np.zeros((w, fs.n_classes))
        for e in fs:
            for s in range(0, len(e.train), args.chunk):
                t = time.perf_counter()
                X = acil.buffer(e.train.x[s : s + args.chunk])
                t_proj += time.perf_counter() - t
                t = time.perf_counter()
                G += X.T @ X
                H += X.T @ np.eye(fs.n_classes)[e.train.y[s : s + args.chunk].numpy()]
                t_gram += time.perf_counter() - t
            t = time.perf_counter()
            A = G + args.gamma * np.eye(w)
            W_joint = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, check_finite=False), H, check_finite=False)
            t_chol += time.perf_counter() - t
        floor = t_proj + t_gram + t_chol
        del G, A
        # ---- acil, phase by phase
        t_acil = 0.0
        for e in fs:
            t = time.perf_counter()
            acil.train_experience(e.train_view())
            t_acil += time.perf_counter() - t
        rel = np.linalg.norm(acil.W - W_joint) / np.linalg.norm(W_joint)
        pred_acil = acil.predict(test_x).argmax(1).numpy()
        pred_joint = np.concatenate([(acil.buffer(x) @ W_joint).argmax(1) for x in test_x.split(args.chunk)])
        acc_a, acc_j = (pred_acil == test_y).mean(), (pred_joint == test_y).mean()
        print(f"buffer {w}: floor {floor:.1f} s (projection {t_proj:.1f} + Gram {t_gram:.1f} + 5 Cholesky {t_chol:.1f}); "
              f"acil {t_acil:.1f} s = {t_acil / floor:.2f}x floor (goal <= 1.3x)", flush=True)
        print(f"buffer {w}: ||W_acil - W_joint|| / ||W_joint|| = {rel:.2e}; final accuracy acil {acc_a:.6f} vs joint ridge "
              f"{acc_j:.6f} (|diff| {abs(acc_a - acc_j):.1e}, must be <= 1e-6)", flush=True)
    pub.end(configs=[args.config])


if __name__ == "__main__":
    main()
