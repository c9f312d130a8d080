"""Feature-cache benchmark: first (cold) vs second (cached) feature request of a config's benchmark.

    CLBENCH_DATA=../shared/data python bench/features.py [configs/split_cifar10_frozen.yaml] [--cache-dir DIR]

Decodes the benchmark (the decoded-image cache is separate and is timed apart), then times
``feature_stream`` twice with the config's backbone. The first call computes and stores the features
(unless the cache already holds them: the script says so; give an empty --cache-dir for a cold
measurement); the second reads them from disk. Goal: the cached run at least 20x faster.
"""

from __future__ import annotations

import argparse
import time

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/split_cifar10_frozen.yaml")
    ap.add_argument("--cache-dir", default=None, help="feature cache folder (default $CLBENCH_CACHE or ~/.cache/clbench)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--benchmark-index", type=int, default=0)
    args = ap.parse_args()

    from clbench.benchmarks.features import feature_stream
    from clbench.benchmarks.registry import build_stream

    cfg = yaml.safe_load(open(args.config))
    entry = cfg["benchmarks"][args.benchmark_index]
    if isinstance(entry, str):
        entry = {"name": entry}
    backbone = entry.get("backbone")
    t0 = time.perf_counter()
    stream = build_stream(entry, args.seed, cfg.get("data_root"))
    t_build = time.perf_counter() - t0
    n = sum(len(e.train) + len(e.test) for e in stream)
    print(f"benchmark {entry['name']} (seed {args.seed}): {n} images, stream built in {t_build:.1f} s (decoded-image cache included)")
    times, hits = [], []
    for run in ("first", "second"):
        t0 = time.perf_counter()
        fs = feature_stream(stream, backbone, args.cache_dir, progress=True)
        times.append(time.perf_counter() - t0)
        hits.append(fs.params.get("feature_cache_hit"))
        print(f"{run} feature request ({backbone}): {times[-1]:.2f} s, cache hit {hits[-1]}, "
              f"feature dim {fs[0].train.x.shape[1]}", flush=True)
    if all(hits[0].values()):
        print("note: the first request was already cached; use an empty --cache-dir for a cold measurement")
    else:
        print(f"cold encode throughput: {n / times[0]:.1f} images/s")
    print(f"speed-up cached vs first: {times[0] / times[1]:.1f}x (goal >= 20x)")


if __name__ == "__main__":
    main()
