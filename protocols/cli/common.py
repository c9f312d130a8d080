"""Options and config handling shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clbench.errors import UserError
from clbench.files import load_yaml_text

from ..config import load_yaml, quickstart


def number(text: str) -> float:
    """A command-line number as people write it (``1e-3``, ``2``); argparse reports a bad one."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_matrix_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``tune``."""
    p.add_argument("--seeds", type=int, nargs="+", help="replace the config's seeds")
    p.add_argument("--strategy", action="append", metavar="NAME",
                   help="replace the config's strategies (repeatable; NAME, avalanche.X or module:Class)")
    p.add_argument("--add-strategy", dest="add_strategy", action="append", metavar="'NAME [key=value ...]'",
                   help="add a strategy next to the config's (repeatable), e.g. --add-strategy my_pkg.mod:MyStrategy "
                        "or 'my_pkg.mod:MyStrategy lr=1e-3'")
    p.add_argument("--benchmark", action="append", metavar="NAME", help="replace the config's benchmarks (repeatable)")
    p.add_argument("--output", help="parent folder of run folders (default runs)")
    p.add_argument("--name", help="run folder name (default: config name or file stem)")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--data-root", dest="data_root", help="dataset folder (default $CLBENCH_DATA)")
    p.add_argument("--cache-dir", dest="cache_dir", help="cache folder (default $CLBENCH_CACHE or ~/.cache/clbench)")
    p.add_argument("--workers", type=int, help="cells (or tuning trials) run in parallel")
    p.add_argument("--executor", choices=["local", "ray"], help="local process pool or a Ray cluster")
    p.add_argument("--address", help="Ray cluster address for --executor ray (as printed by `ray start --head`)")
    p.add_argument("--timeout", type=number, metavar="SECONDS", help="per-cell time limit; a cell over it is recorded failed")
    p.add_argument("--eval-period", dest="eval_period", type=int, metavar="N",
                   help="evaluate online strategies every N training samples (anytime accuracy A_auc)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-report", dest="no_report", action="store_true", help="do not write <run>/report at the end")
    p.add_argument("--track", choices=["tensorboard", "mlflow", "wandb"], action="append",
                   help="log every finished cell to an experiment tracker (repeatable; see clbench export)")
    p.add_argument("--track-uri", dest="track_uri", help="tracker location: TensorBoard/W&B folder or MLflow tracking URI")


def parse_strategy_option(text: str) -> dict[str, Any]:
    """``NAME`` or ``NAME key=value key=value`` (values read as YAML: numbers, lists, booleans) -> an entry."""
    parts = text.split()
    if not parts:
        raise UserError("--add-strategy needs a strategy name")
    entry: dict[str, Any] = {"name": parts[0]}
    for item in parts[1:]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--add-strategy {text!r}: write parameters as key=value (e.g. 'lr=1e-3'), got {item!r}")
        entry[key] = load_yaml_text(value)
    return entry


def apply_overrides(data: dict, args: argparse.Namespace) -> dict:
    """The config mapping with the command line's options applied."""
    data = dict(data)
    if getattr(args, "seeds", None):
        data["seeds"] = args.seeds
    if getattr(args, "strategy", None):
        data["strategies"] = [parse_strategy_option(s) for s in args.strategy]
    if getattr(args, "add_strategy", None):
        base = data.get("strategies") or []
        base = base if isinstance(base, list) else [base]
        data["strategies"] = base + [parse_strategy_option(s) for s in args.add_strategy]
    if getattr(args, "benchmark", None):
        data["benchmarks"] = [{"name": b} for b in args.benchmark]
    for key in ("output", "device", "data_root", "cache_dir", "workers", "executor", "address", "timeout", "eval_period"):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    if getattr(args, "name", None):
        data["name"] = args.name
    return data


def load_config_data(config: str | None) -> tuple[dict, str]:
    """The config mapping (the embedded quick start when no file is given) and the default run name."""
    if config is None:
        return quickstart(), "quickstart"
    return load_yaml(config), Path(config).stem
