"""``clbench features CONFIG``: precompute the frozen-backbone feature cache of a config's benchmarks."""

from __future__ import annotations

import argparse
import time


def add_parser(sub) -> None:
    p = sub.add_parser("features", help="precompute (cache) the backbone features of a config's benchmarks, with a progress bar")
    p.add_argument("config", help="YAML config whose benchmarks name a backbone: (e.g. configs/split_cifar10_frozen.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", help="replace the config's seeds")
    p.add_argument("--data-root", dest="data_root", help="dataset folder (default $CLBENCH_DATA)")
    p.add_argument("--cache-dir", dest="cache_dir", help="cache folder (default $CLBENCH_CACHE or ~/.cache/clbench)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_features)


def cmd_features(args: argparse.Namespace) -> int:
    from clbench.benchmarks.backbones import parse_backbone
    from clbench.benchmarks.features import feature_stream
    from clbench.benchmarks.registry import build_stream

    from ..config import parse_config
    from ..runner import preflight
    from .common import load_config_data

    data, stem = load_config_data(args.config)
    data = dict(data)
    for key in ("seeds", "data_root", "cache_dir"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    cfg = parse_config(data, default_name=stem)
    entries = [b for b in cfg.benchmarks if b.get("backbone") and parse_backbone(str(b["backbone"]))[0] != "flatten"]
    if not entries:
        print(f"{args.config}: no benchmark names a pretrained backbone (backbone: efficientnet_lite0@64, ...); nothing to cache")
        return 0
    preflight(cfg)
    for entry in entries:
        label = entry.get("label") or entry["name"]
        for seed in cfg.seeds:
            t0 = time.perf_counter()
            stream = build_stream(entry, seed, cfg.data_root, cfg.cache_dir)
            fs = feature_stream(stream, str(entry["backbone"]), cfg.cache_dir, progress=not args.quiet)
            hits = fs.params.get("feature_cache_hit", {})
            state = "cached" if all(hits.values()) else "computed"
            print(f"{label} seed {seed} {entry['backbone']}: {state} ({time.perf_counter() - t0:.1f} s), "
                  f"{sum(len(e.train) for e in fs)} train + {sum(len(e.test) for e in fs)} test samples, dim {fs[0].train.x.shape[1]}")
    return 0
