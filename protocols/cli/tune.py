"""``clbench tune CONFIG``: the two-phase protocol (tune on D_HT, evaluate once on D_E), and the conventional one."""

from __future__ import annotations

import argparse

from clbench.studies import record_invocation

from .common import add_matrix_arguments, apply_overrides, load_config_data, number
from .tracking import tracker_callbacks

SEARCH_OPTIONS = (("protocol", "protocol"), ("sampler", "sampler"), ("n_trials", "n_trials"), ("objective", "objective"),
                  ("seeds", "tuning_seeds"), ("storage", "storage"), ("heartbeat", "heartbeat"))


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="two-phase protocol: tune on D_HT (Optuna), evaluate once on D_E; conventional for comparison")
    p.add_argument("config", help="YAML config with tuning:, evaluation:, strategies:, search: (see configs/tune_*.yaml)")
    add_matrix_arguments(p)
    p.add_argument("--protocol", help="both (default): phase 1 + phase 2 + conventional; two-phase; conventional")
    p.add_argument("--sampler", help="tpe | random | grid")
    p.add_argument("--n-trials", dest="n_trials", type=int, help="trial budget per strategy")
    p.add_argument("--objective", help="acc | aia")
    p.add_argument("--tuning-seeds", dest="tuning_seeds", type=int, nargs="+", help="seeds of each phase-1 trial on D_HT")
    p.add_argument("--storage", help="Optuna storage URL (SQLAlchemy), shared by several processes; default sqlite in the run folder")
    p.add_argument("--heartbeat", type=number, metavar="SECONDS",
                   help="heartbeat interval of trials in a shared storage (a dead process's trial is retried after 2x this)")
    p.add_argument("--retry-failed", action="store_true", help="run failed phase-2 cells again")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    """Parse, run (or resume) the protocol, print the summary, write the report of the phase-2 cells."""
    from ..tune import run_tune
    from ..tune_config import parse_tune_config
    from ..tune_summary import format_tune_summary

    data, stem = load_config_data(args.config)
    data = apply_overrides(data, args)
    search = data.get("search")
    search = {} if search is None else search
    if isinstance(search, dict):
        search = dict(search)
        for key, arg in SEARCH_OPTIONS:
            if getattr(args, arg, None) is not None:
                search[key] = getattr(args, arg)
    data["search"] = search
    tc = parse_tune_config(data, default_name=stem)
    with tracker_callbacks(args, tc.run_dir) as callbacks:
        summary = run_tune(tc, quiet=args.quiet, retry_failed=args.retry_failed, callbacks=callbacks)
    record_invocation(tc.run_dir, getattr(args, "argv", ["tune", args.config]), args.config)
    print(f"\n{tc.run_dir}\n" + format_tune_summary(summary))
    if tc.search.protocol != "conventional" and not args.no_report:
        from clbench.reports.report import report_after_run  # the phase-2 cells, as after clbench run

        report_after_run(tc.run_dir, quiet=args.quiet)
    if tc.search.protocol == "conventional":
        return 0
    return 0 if all(r["phase2"] and not r["phase2"]["failed"] for r in summary["strategies"]) else 1
