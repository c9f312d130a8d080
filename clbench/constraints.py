"""Declared value constraints of parameters (strategies, benchmarks, config keys).

A class that takes parameters declares what each accepts, next to its ``search_space``, in the spirit of
scikit-learn's ``_parameter_constraints``::

    parameter_constraints = {"lr": Interval(float, 0, None, closed="neither"),
                             "epochs": Interval(int, 0, None),
                             "optimizer": Options("sgd", "adam"),
                             "hidden": ListOf(Interval(int, 1, None))}

:func:`problems` returns one message per bad value (never raises), so that the config layer can
collect every mistake of a file and report them together before any data is read. Parameters
without a declared constraint are checked against the type annotation of their ``__init__``
(``int``, ``float``, ``bool``, ``str``), when it has one.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


class Constraint:
    """One rule; :meth:`problem` returns why ``value`` breaks it, or None."""

    def problem(self, value: Any) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """A number of ``kind`` (int or float; an int is accepted for float) in [low, high].

    ``closed``: "both" (default), "left", "right" or "neither"; ``None`` bounds are open-ended.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        def num(v: float) -> str:
            return str(v) if is_int(v) else f"{v:g}"

        parts = []
        if self.low is not None:
            parts.append(f"{'>=' if self.closed in ('both', 'left') else '>'} {num(self.low)}")
        if self.high is not None:
            parts.append(f"{'<=' if self.closed in ('both', 'right') else '<'} {num(self.high)}")
        return what + (" " + " and ".join(parts) if parts else "")

    def problem(self, value: Any) -> str | None:
        ok_type = is_int(value) if self.kind is int else is_real(value)
        if not ok_type:
            return f"must be {self.describe()}, got {value!r}"
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return None if lo_ok and hi_ok else f"must be {self.describe()}, got {value!r}"


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", tuple(values))

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)

    def problem(self, value: Any) -> str | None:
        if any(value == v and type(value) is type(v) or (is_int(value) and is_int(v) and value == v) for v in self.values):
            return None
        return f"must be {self.describe()}, got {value!r}"


@dataclass(frozen=True)
class Boolean(Constraint):
    def describe(self) -> str:
        return "true or false"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


@dataclass(frozen=True)
class String(Constraint):
    def describe(self) -> str:
        return "a string"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else f"must be a string, got {value!r}"


@dataclass(frozen=True)
class ListOf(Constraint):
    """A list whose items all satisfy ``item``; ``min_len``/``max_len`` bound its length; ``unique`` forbids repeats."""

    item: Constraint
    min_len: int = 0
    max_len: int | None = None
    unique: bool = False

    def describe(self) -> str:
        return f"a list of items that are each {self.item.describe()}" + (", without repeats" if self.unique else "")

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)):
            return f"must be {self.describe()}, got {value!r}"
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            size = f"at least {self.min_len}" if self.max_len is None else f"{self.min_len} to {self.max_len}"
            return f"must hold {size} items, got {len(value)}"
        for i, v in enumerate(value):
            p = self.item.problem(v)
            if p:
                return f"must be {self.describe()}: item {i} {p.removeprefix('must be ')}".replace(
                    f"item {i} {self.item.describe()}, got", f"item {i} is not, got")
        if self.unique and len(set(map(repr, value))) != len(value):
            dup = sorted({repr(v) for v in value if list(map(repr, value)).count(repr(v)) > 1})
            return f"lists {', '.join(dup)} more than once"
        return None


@dataclass(frozen=True)
class AnyOf(Constraint):
    """Satisfies at least one of the given constraints (e.g. ``AnyOf(NoneValue(), Interval(int, 1))``)."""

    options: tuple[Constraint, ...]

    def __init__(self, *options: Constraint) -> None:
        object.__setattr__(self, "options", tuple(options))

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)

    def problem(self, value: Any) -> str | None:
        if any(o.problem(value) is None for o in self.options):
            return None
        return f"must be {self.describe()}, got {value!r}"


@dataclass(frozen=True)
class NoneValue(Constraint):
    def describe(self) -> str:
        return "null"

    def problem(self, value: Any) -> str | None:
        return None if value is None else f"must be null, got {value!r}"


@dataclass(frozen=True)
class Check(Constraint):
    """A custom rule: ``fn(value) -> message or None`` with a description."""

    fn: Callable[[Any], str | None]
    text: str

    def describe(self) -> str:
        return self.text

    def problem(self, value: Any) -> str | None:
        return self.fn(value)


_ANNOTATION = {int: Interval(int), float: Interval(float), bool: Boolean(), str: String()}


def from_annotation(annotation: Any, default: Any) -> Constraint | None:
    """A type check from an ``__init__`` annotation (int, float, bool, str, optionally ``| None``), else None."""
    if isinstance(annotation, str):
        names = {"int": int, "float": float, "bool": bool, "str": str}
        parts = [p.strip() for p in annotation.split("|")]
        types = [names.get(p) for p in parts if p != "None"]
        optional = "None" in parts
    else:
        args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (annotation,)
        types = [a for a in args if a is not type(None)]
        optional = len(types) != len(args)
    if len(types) != 1 or types[0] not in _ANNOTATION:
        return None
    c = _ANNOTATION[types[0]]
    return AnyOf(NoneValue(), c) if optional or default is None else c


def signature_constraints(fn: Callable[..., Any], skip: Sequence[str] = ()) -> dict[str, Constraint]:
    """Type constraints read from a callable's annotated keyword parameters."""
    try:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError):
        try:
            sig, hints = inspect.signature(fn), {}
        except (TypeError, ValueError):
            return {}
    out: dict[str, Constraint] = {}
    for name, p in sig.parameters.items():
        if name in skip or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        ann = hints.get(name, p.annotation)
        if ann is inspect.Parameter.empty:
            continue
        c = from_annotation(ann, None if p.default is inspect.Parameter.empty else p.default)
        if c is not None:
            out[name] = c
    return out


def problems(params: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> list[str]:
    """``"<name> <why>"`` for every value of ``params`` that breaks its constraint (unconstrained names pass)."""
    out = []
    for name, value in params.items():
        c = constraints.get(name)
        if c is None:
            continue
        p = c.problem(value)
        if p:
            out.append(f"{name} {p}")
    return out
