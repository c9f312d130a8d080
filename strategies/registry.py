"""Strategy lookup: built-in names, ``module.path:ClassName``, and the ``clbench.strategies`` entry points.

Built-ins are listed as import paths so that nothing heavy (e.g. Avalanche) is imported until a
strategy is asked for. A package adds its own strategies with an entry point::

    [options.entry_points]
    clbench.strategies =
        my_method = my_pkg.my_mod:MyStrategy
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

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
}

ENTRY_POINT_GROUP = "clbench.strategies"


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def strategy_names() -> list[str]:
    return sorted(set(BUILTIN) | set(_entry_points()))


def _load(path: str, name: str) -> type[Strategy]:
    mod, _, attr = path.partition(":")
    if not attr:
        raise UserError(f"strategy {name!r}: give module.path:ClassName")
    try:
        cls = getattr(importlib.import_module(mod), attr)
    except ModuleNotFoundError as exc:
        raise UserError(f"cannot import {mod!r} for strategy {name!r} ({exc}); fix: install it or put it on PYTHONPATH") from None
    except AttributeError:
        raise UserError(f"module {mod!r} has no class {attr!r} (strategy {name!r})") from None
    check_strategy_class(cls, name)
    return cls


def resolve_strategy(name: str) -> type[Strategy]:
    """The class for a strategy name (built-in, entry point, ``avalanche.<Name>``, or ``module:Class``)."""
    if name in BUILTIN:
        return _load(BUILTIN[name], name)
    eps = _entry_points()
    if name in eps:
        cls = eps[name].load()  # type: ignore[attr-defined]
        check_strategy_class(cls, name)
        return cls
    if name.startswith("avalanche."):
        try:
            adapter = importlib.import_module("clbench.strategies.avalanche_adapter")
        except ModuleNotFoundError:
            raise UserError(f"{name}: the Avalanche adapter needs avalanche-lib; fix: pip install avalanche-lib") from None
        return adapter.avalanche_strategy_class(name.split(".", 1)[1])
    if ":" in name:
        return _load(name, name)
    raise unknown_name("strategy", name, strategy_names(), "Or give module.path:ClassName, or avalanche.<StrategyName>.")
