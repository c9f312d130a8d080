"""Strategy lookup: built-in names, ``module.path:ClassName``, and the ``clbench.strategies`` entry points.

Built-ins are listed as import paths so that nothing heavy (e.g. Avalanche) is imported until a
strategy is asked for. A package adds its own strategies with an entry point (``pyproject.toml``)::

    [project.entry-points."clbench.strategies"]
    my_method = "my_pkg.my_mod:MyStrategy"

A broken entry point (its module fails to import, or the name is missing) is reported as a warning naming
the distribution, and the others stay usable; an entry point named like a built-in is ignored, with a warning.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import EntryPoint, entry_points

from clbench.errors import UserError, unknown_name

from .base import Strategy, check_strategy_class

BUILTIN: dict[str, str] = {
    "nmc": "clbench.strategies.nmc:NMC",
    "fetril": "clbench.strategies.fetril:FeTrIL",
    "acil": "clbench.strategies.analytic:ACIL",
    "dsal": "clbench.strategies.analytic:DSAL",
    "gacil": "clbench.strategies.analytic:GACIL",
    "kvb": "clbench.strategies.kvb:KVB",
    "linear": "clbench.strategies.linear:LinearHead",
    "joint_linear": "clbench.strategies.linear:JointLinear",
    "finetune": "clbench.strategies.baselines:Finetune",
    "joint": "clbench.strategies.baselines:Joint",
    "replay": "clbench.strategies.baselines:Replay",
    "ewc": "clbench.strategies.regularization:EWC",
    "si": "clbench.strategies.regularization:SI",
    "lwf": "clbench.strategies.regularization:LwF",
    "ranpac": "clbench.strategies.ranpac:RanPAC",
    "slda": "clbench.strategies.slda:SLDA",
    "fecam": "clbench.strategies.fecam:FeCAM",
    "randumb": "clbench.strategies.randumb:RanDumb",
    "simplecil": "clbench.strategies.simplecil:SimpleCIL",
}

ENTRY_POINT_GROUP = "clbench.strategies"


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed distribution"


def plugin_entry_points() -> dict[str, EntryPoint]:
    """The ``clbench.strategies`` entry points, minus those named like a built-in (warned about)."""
    out = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            warnings.warn(f"entry point {ep.name!r} of {_distribution(ep)} ({ep.value}) has the name of a built-in strategy "
                          f"and is ignored; fix: rename it in that package's entry points", stacklevel=2)
            continue
        out[ep.name] = ep
    return out


def strategy_names() -> list[str]:
    return sorted(set(BUILTIN) | set(plugin_entry_points()))


def import_class(path: str, name: str) -> type[Strategy]:
    """The class at ``module.path:ClassName``, checked against the Strategy API; one UserError naming the problem."""
    mod, _, attr = path.partition(":")
    if not attr or not mod:
        raise UserError(f"strategy {name!r}: give module.path:ClassName")
    try:
        module = importlib.import_module(mod)
    except ModuleNotFoundError as exc:
        if exc.name and (mod == exc.name or mod.startswith(exc.name + ".")):
            raise UserError(f"cannot import {mod!r} for strategy {name!r} ({exc}); fix: install it or put it on PYTHONPATH") from exc
        raise UserError(f"importing {mod!r} for strategy {name!r} failed: ModuleNotFoundError: {exc} "
                        f"(a module it imports is missing; rerun with --debug for the traceback)") from exc
    except Exception as exc:  # noqa: BLE001 - the plug-in's own code failed at import
        raise UserError(f"importing {mod!r} for strategy {name!r} failed: {type(exc).__name__}: {exc} "
                        f"(rerun with --debug for the traceback)") from exc
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise UserError(f"module {mod!r} has no class {attr!r} (strategy {name!r})") from None
    check_strategy_class(cls, name)
    return cls


def load_entry_point(ep: EntryPoint) -> type[Strategy]:
    try:
        return import_class(ep.value, ep.name)
    except UserError as exc:
        raise UserError(f"entry point {ep.name!r} of {_distribution(ep)}: {exc}") from exc.__cause__


def resolve_strategy(name: str) -> type[Strategy]:
    """The class for a strategy name (built-in, entry point, ``avalanche.<Name>``, or ``module:Class``)."""
    if name in BUILTIN:
        return import_class(BUILTIN[name], name)
    eps = plugin_entry_points()
    if name in eps:
        return load_entry_point(eps[name])
    if name.startswith("avalanche."):
        try:
            adapter = importlib.import_module("clbench.strategies.avalanche_adapter")
        except ModuleNotFoundError:
            raise UserError(f"{name}: the Avalanche adapter needs avalanche-lib; fix: pip install avalanche-lib") from None
        return adapter.avalanche_strategy_class(name.split(".", 1)[1])
    if ":" in name:
        return import_class(name, name)
    raise unknown_name("strategy", name, strategy_names(), "Or give module.path:ClassName, or avalanche.<StrategyName>.")


def available_strategies() -> dict[str, type[Strategy] | UserError]:
    """Every registered name with its class, or the error that makes it unusable (``clbench list``, the docs)."""
    out: dict[str, type[Strategy] | UserError] = {}
    for name in strategy_names():
        try:
            out[name] = resolve_strategy(name)
        except UserError as exc:
            if name not in BUILTIN:
                warnings.warn(str(exc), stacklevel=2)
            out[name] = exc
    return out
