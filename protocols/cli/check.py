"""``clbench check MODULE:CLASS``: the conformance check of a strategy class (see :mod:`clbench.protocols.check`)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="conformance check of a strategy class on tiny streams of every scenario it claims")
    p.add_argument("strategy", help="module.path:ClassName, a built-in name or an entry-point name")
    p.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter values to check with (repeatable; values read as YAML)")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from clbench.files import load_yaml_text
    from clbench.errors import UserError

    from ..check import check_strategy, format_results

    params = {}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: write KEY=VALUE, e.g. --set lr=1e-3")
        params[key] = load_yaml_text(value)
    results = check_strategy(args.strategy, params)
    print(format_results(args.strategy, results))
    return 0 if all(r.ok for r in results) else 1
