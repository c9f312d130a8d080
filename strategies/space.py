"""Declared hyperparameter search spaces.

A strategy class lists its tunable hyperparameters in ``search_space``: a dict of name to
:class:`Float`, :class:`Int` or :class:`Choice`. A config may override a range or fix a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"float[{self.low}, {self.high}]{' log' if self.log else ''}"


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False

    def describe(self) -> str:
        return f"int[{self.low}, {self.high}]{' log' if self.log else ''}"


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def __init__(self, values) -> None:  # accept any sequence
        object.__setattr__(self, "values", tuple(values))

    def describe(self) -> str:
        return f"choice{list(self.values)}"


Param = Float | Int | Choice


def param_from_config(value: Any) -> Param:
    """Parse a config override: ``[a, b, c]`` -> Choice; ``{low, high, log?, type?}`` -> Float/Int."""
    from clbench.errors import UserError

    if isinstance(value, (Float, Int, Choice)):
        return value
    if isinstance(value, list):
        return Choice(value)
    if isinstance(value, dict):
        if "choices" in value:
            return Choice(value["choices"])
        if {"low", "high"} <= set(value):
            kind = value.get("type") or ("int" if isinstance(value["low"], int) and isinstance(value["high"], int) else "float")
            cls = Int if kind == "int" else Float
            return cls(value["low"], value["high"], bool(value.get("log", False)))
    raise UserError(f"cannot read search-space entry {value!r}; use a list of choices or {{low: .., high: .., log: true}}")
