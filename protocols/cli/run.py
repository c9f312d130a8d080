"""``clbench run``: a matrix of benchmarks x strategies x seeds (resumable), then its report."""

from __future__ import annotations

import argparse

from clbench.studies import record_invocation

from ..config import parse_config
from ..runner import run_matrix
from .common import add_matrix_arguments, apply_overrides, load_config_data
from .tracking import tracker_callbacks


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a matrix of benchmarks x strategies x seeds (resumable)")
    p.add_argument("config", nargs="?", help="YAML config (default: the embedded quick-start matrix)")
    add_matrix_arguments(p)
    p.add_argument("--retry-failed", action="store_true", help="run failed cells again (cells failed for their data always run again)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from clbench.results import format_summary

    data, stem = load_config_data(args.config)
    cfg = parse_config(apply_overrides(data, args), default_name=stem)
    with tracker_callbacks(args, cfg.run_dir) as callbacks:
        records = run_matrix(cfg, quiet=args.quiet, retry_failed=args.retry_failed, callbacks=callbacks)
    record_invocation(cfg.run_dir, getattr(args, "argv", ["run", *([args.config] if args.config else [])]), args.config)
    print(f"\n{cfg.run_dir}\n" + format_summary(records))
    if not args.no_report:
        from clbench.reports.report import report_after_run

        report_after_run(cfg.run_dir, quiet=args.quiet)
    return 0 if all(r.ok for r in records) else 1
