"""``clbench report``: tables, figures and statistics of one or more run folders."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="tables, plots, statistics and report.html of one or more run folders")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by clbench run / tune; several are compared")
    p.add_argument("--out", help="output folder (default RUN/report; several runs: report-<a>+<b> next to the first)")
    p.add_argument("--format", default="html,md,png,pdf", help="comma-separated subset of html,md,png,pdf (default all)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from clbench.reports.report import parse_formats, write_report

    out = write_report(args.runs, args.out, args.format)
    print(f"report: {out / 'report.html' if 'html' in parse_formats(args.format) else out}")
    return 0
