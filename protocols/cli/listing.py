"""``clbench list``: benchmarks, strategies and backbones with their parameters."""

from __future__ import annotations

import argparse
import inspect


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="benchmarks, strategies and backbones with their parameters")
    p.set_defaults(func=cmd_list)


def _value(v) -> str:
    return "(required)" if v is inspect.Parameter.empty else repr(v)


def cmd_list(args: argparse.Namespace) -> int:
    from clbench.benchmarks.backbones import BACKBONES
    from clbench.benchmarks.registry import benchmark_names, resolve_benchmark
    from clbench.strategies.registry import available_strategies

    print("benchmarks:")
    for name in benchmark_names():
        spec = resolve_benchmark(name)
        print(f"  {name:18s} {spec.doc}")
        params = ", ".join(f"{k}={_value(v)}" for k, v in spec.defaults.items())
        print(f"  {'':18s} params: {params}; wrappers: rehearsal, blurry, backbone")
    print("\nstrategies:")
    for name, cls in available_strategies().items():
        if not isinstance(cls, type):
            print(f"  {name:18s} (unavailable: {cls})")
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        hp = ", ".join(f"{k}={_value(v)}" for k, v in cls.hyperparameters().items())
        print(f"  {name:18s} {doc}{'  [frozen features]' if cls.wants_features else ''}")
        print(f"  {'':18s} hyperparameters: {hp}")
    print("  avalanche.<Name>   any avalanche.training strategy, through the adapter (needs avalanche-lib)")
    print("  module.path:Class  your own Strategy subclass")
    print("\nbackbones:")
    for name, doc in BACKBONES.items():
        print(f"  {name:18s} {doc}")
    return 0
