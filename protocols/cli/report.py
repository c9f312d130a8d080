"""``clbench report``: tables, figures and statistics of one or more run folders."""

from __future__ import annotations

import argparse

from clbench.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="tables, plots, statistics and report.html of one or more run folders",
                       description="Compare the cells of one or more run folders: a main table across benchmarks "
                                   "(LaTeX, Markdown, CSV), per-benchmark tables and paired tests, figures (PDF and "
                                   "PNG) and one self-contained report.html. The same strategy with an identical "
                                   "configuration in several folders is one row with its seeds pooled.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folder(s) written by clbench run / tune; several are compared")
    p.add_argument("--config", metavar="YAML", help="report config: runs, strategies, benchmarks, rename, merge, spread, "
                                                    "band, main_metrics, formats, out (the options below override it)")
    p.add_argument("--out", help="output folder (default RUN/report; several runs: report-<a>+<b> next to the first)")
    p.add_argument("--format", default=None, help="comma-separated subset of html,md,png,pdf (default all)")
    p.add_argument("--strategies", metavar="A,B,...", help="strategies to show, in this order (labels as shown, configured or renamed)")
    p.add_argument("--benchmarks", metavar="X,Y,...", help="benchmarks to show, in this order")
    p.add_argument("--rename", action="append", metavar="OLD=NEW", help="rename a strategy or benchmark (repeatable)")
    p.add_argument("--separate-runs", dest="separate_runs", action="store_true",
                   help="keep every run folder's cells apart instead of pooling identical configurations "
                        "(e.g. the same config run on two machines)")
    p.add_argument("--spread", choices=["std", "ci"], help="what ± shows in tables and whiskers (default std)")
    p.add_argument("--band", choices=["auto", "std", "ci", "minmax", "none"],
                   help="band of the seen-accuracy curves (default auto: ci with 5 or more seeds, else std)")
    p.add_argument("--main-metrics", dest="main_metrics", metavar="M,...",
                   help="columns of the main table per benchmark, e.g. acc,aia,a_last (default acc,aia; blurry streams a_last first)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from clbench.reports.options import ReportOptions, load_report_config, parse_formats, parse_rename, split_names
    from clbench.reports.report import write_report

    options = load_report_config(args.config) if args.config else ReportOptions()
    rename = parse_rename(args.rename)
    options = options.updated(strategies=split_names(args.strategies), benchmarks=split_names(args.benchmarks),
                              rename={**options.rename, **rename} if rename else None,
                              merge=False if args.separate_runs else None, spread=args.spread, band=args.band,
                              main_metrics=split_names(args.main_metrics),
                              formats=parse_formats(args.format) if args.format is not None else None)
    if not args.runs and not options.runs:
        raise UserError("no run folder given; fix: clbench report RUN [RUN ...] or a --config with runs:, "
                        "e.g. clbench report runs/quickstart")
    out = write_report(args.runs, args.out, None, options)
    print(f"report: {out / 'report.html' if 'html' in options.formats else out}")
    return 0
