"""The ``clbench`` command line: run, list (tune, report, features join here).

A :class:`UserError` prints ``error: <message>`` and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from clbench.errors import UserError


def _apply_overrides(data: dict, args: argparse.Namespace) -> dict:
    data = dict(data)
    if args.seeds:
        data["seeds"] = args.seeds
    if args.strategy:
        data["strategies"] = [{"name": s} for s in args.strategy]
    if args.benchmark:
        data["benchmarks"] = [{"name": b} for b in args.benchmark]
    for key in ("output", "device", "data_root", "cache_dir", "workers", "executor", "address", "timeout"):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    if getattr(args, "name", None):
        data["name"] = args.name
    return data


def add_matrix_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``tune``."""
    p.add_argument("--seeds", type=int, nargs="+", help="replace the config's seeds")
    p.add_argument("--strategy", action="append", metavar="NAME", help="replace the config's strategies (repeatable; NAME, avalanche.X or module:Class)")
    p.add_argument("--benchmark", action="append", metavar="NAME", help="replace the config's benchmarks (repeatable)")
    p.add_argument("--output", help="parent folder of run folders (default runs)")
    p.add_argument("--name", help="run folder name (default: config name or file stem)")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--data-root", dest="data_root", help="dataset folder (default $CLBENCH_DATA)")
    p.add_argument("--cache-dir", dest="cache_dir", help="cache folder (default $CLBENCH_CACHE or ~/.cache/clbench)")
    p.add_argument("--workers", type=int, help="cells run in parallel")
    p.add_argument("--executor", choices=["local", "ray"], help="local process pool or a Ray cluster")
    p.add_argument("--address", help="Ray cluster address for --executor ray (as printed by `ray start --head`)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="per-cell time limit; a cell over it is recorded failed")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-report", dest="no_report", action="store_true", help="do not write <run>/report at the end")


def load_config_data(config: str | None) -> tuple[dict, str]:
    from .config import load_yaml, quickstart

    if config is None:
        return quickstart(), "quickstart"
    return load_yaml(config), Path(config).stem


def cmd_run(args: argparse.Namespace) -> int:
    from .config import parse_config
    from .runner import format_summary, run_matrix

    data, stem = load_config_data(args.config)
    cfg = parse_config(_apply_overrides(data, args), default_name=stem)
    records = run_matrix(cfg, quiet=args.quiet, retry_failed=args.retry_failed)
    print(f"\n{cfg.run_dir}\n" + format_summary(records))
    if not args.no_report:
        from clbench.reports.report import report_after_run

        report_after_run(cfg.run_dir, quiet=args.quiet)
    return 0 if all(r["status"] == "ok" for r in records) else 1


def cmd_report(args: argparse.Namespace) -> int:
    from clbench.reports.report import parse_formats, write_report

    out = write_report(args.runs, args.out, args.format)
    print(f"report: {out / 'report.html' if 'html' in parse_formats(args.format) else out}")
    return 0


def _params_text(fn) -> str:
    parts = []
    for k, p in inspect.signature(fn).parameters.items():
        if k in ("self", "seed", "data_root", "info", "device") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        parts.append(f"{k}={p.default!r}" if p.default is not p.empty else k)
    return ", ".join(parts)


def cmd_list(args: argparse.Namespace) -> int:
    from clbench.benchmarks.backbones import BACKBONES
    from clbench.benchmarks.registry import benchmark_names, resolve_benchmark
    from clbench.strategies.registry import resolve_strategy, strategy_names

    print("benchmarks:")
    for name in benchmark_names():
        fn = resolve_benchmark(name)
        print(f"  {name:18s} {(fn.__doc__ or '').strip().splitlines()[0]}")
        print(f"  {'':18s} params: {_params_text(fn)}, rehearsal: {{schedule: ...}}, backbone")
    print("\nstrategies:")
    for name in strategy_names():
        try:
            cls = resolve_strategy(name)
        except UserError as exc:
            print(f"  {name:18s} (unavailable: {exc})")
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        hp = ", ".join(f"{k}={v!r}" for k, v in cls.hyperparameters().items())
        print(f"  {name:18s} {doc}{'  [frozen features]' if cls.wants_features else ''}")
        print(f"  {'':18s} hyperparameters: {hp}")
    print("  avalanche.<Name>   any avalanche.training strategy, through the adapter (needs avalanche-lib)")
    print("  module.path:Class  your own Strategy subclass")
    print("\nbackbones:")
    for name, doc in BACKBONES.items():
        print(f"  {name:18s} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clbench", description="Continual-learning benchmarking suite")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a matrix of benchmarks x strategies x seeds (resumable)")
    p.add_argument("config", nargs="?", help="YAML config (default: the embedded quick-start matrix)")
    add_matrix_arguments(p)
    p.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    p.set_defaults(func=cmd_run)
    from .tune import add_tune_arguments, cmd_tune  # light module: heavy imports happen in cmd_tune

    p = sub.add_parser("tune", help="two-phase protocol: tune on D_HT (Optuna), evaluate once on D_E; conventional for comparison")
    p.add_argument("config", help="YAML config with tuning:, evaluation:, strategies:, search: (see configs/tune_*.yaml)")
    add_matrix_arguments(p)
    add_tune_arguments(p)
    p.set_defaults(func=cmd_tune)
    p = sub.add_parser("report", help="tables, plots, statistics and report.html of one or more run folders")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by clbench run / tune; several are compared")
    p.add_argument("--out", help="output folder (default RUN/report; several runs: report-<a>+<b> next to the first)")
    p.add_argument("--format", default="html,md,png,pdf", help="comma-separated subset of html,md,png,pdf (default all)")
    p.set_defaults(func=cmd_report)
    from .features_cmd import add_features_parser  # light module: heavy imports happen when it runs

    add_features_parser(sub)
    p = sub.add_parser("list", help="benchmarks, strategies and backbones with their parameters")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished cells are recorded, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
