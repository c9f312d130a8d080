"""Declared hyperparameter search spaces.

A strategy class lists its tunable hyperparameters in ``search_space``: a dict of name to
:class:`Float`, :class:`Int` or :class:`Choice`. A config may override a range or fix a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clbench.constraints import is_int, is_real
from clbench.errors import UserError


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
    """Parse a config override: ``[a, b, c]`` -> Choice; ``{low, high, log?, type?}`` -> Float/Int.

    Bad input is one :class:`~clbench.errors.UserError` saying what to write.
    """
    if isinstance(value, (Float, Int, Choice)):
        return value
    if isinstance(value, list):
        return Choice(value)
    if isinstance(value, dict) and list(value) == ["choices"] and isinstance(value["choices"], list):
        return Choice(value["choices"])
    if isinstance(value, dict) and {"low", "high"} <= set(value) and not set(value) - {"low", "high", "log", "type"}:
        low, high, log, kind = value["low"], value["high"], value.get("log", False), value.get("type")
        if not (is_real(low) and is_real(high)):
            raise UserError(f"low and high must be finite numbers, got low={low!r}, high={high!r}")
        if not isinstance(log, bool):
            raise UserError(f"log must be true or false, got {log!r}")
        if kind not in (None, "int", "float"):
            raise UserError(f"type must be int or float, got {kind!r}")
        if kind is None:
            kind = "int" if is_int(low) and is_int(high) else "float"
        if kind == "int":
            if not (is_int(low) or float(low).is_integer()) or not (is_int(high) or float(high).is_integer()):
                raise UserError(f"an int range needs whole-number ends, got low={low!r}, high={high!r}")
            return Int(int(low), int(high), log)
        return Float(float(low), float(high), log)
    raise UserError(f"cannot read search-space entry {value!r}; use a list of choices or {{low: .., high: .., log: true, type: int|float}}")
