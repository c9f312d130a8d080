"""The ``clbench`` command line: one module per subcommand, the parser and error handling here.

A :class:`~clbench.errors.UserError` prints ``error: <message>`` and exits 2, without a traceback
(``--debug`` prints it); a failed cell makes ``run`` exit 1; Ctrl-C exits 130 (finished cells are kept).
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from clbench.errors import UserError

from . import check, export, features, listing, report, run, tune


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clbench", description="Continual-learning benchmarking suite")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors (e.g. a plug-in failing at import)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, tune, report, export, check, features, listing):
        module.add_parser(sub)
    return parser


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as typed (run.yaml, study.yaml)
    formatted = warnings.formatwarning
    if not args.debug:  # one line per warning, without the source line that raised it
        warnings.formatwarning = _warning_line
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            for cause in getattr(exc, "causes", []):
                traceback.print_exception(cause)
            traceback.print_exception(exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished cells are recorded, rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatted
