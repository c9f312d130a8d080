"""Class-incremental split streams: the classes of a dataset partitioned into experiences.

:func:`split_problems` checks a split's parameters against the number of classes before any data is
read (the config layer collects its messages); :func:`split_stream` builds the stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from clbench.constraints import AnyOf, Boolean, Interval, ListOf, NoneValue, Options, problems
from clbench.errors import UserError
from clbench.stream import Experience, Stream, TensorData

from .sources import SourceData

SPLIT_SCENARIOS = ("class-il", "task-il")

#: value constraints of a split's parameters (cross-parameter rules are in :func:`split_problems`)
SPLIT_CONSTRAINTS = {
    "n_experiences": AnyOf(NoneValue(), Interval(int, 1)),
    "base": AnyOf(NoneValue(), Interval(int, 1)),
    "increment": AnyOf(NoneValue(), Interval(int, 1)),
    "class_order": AnyOf(NoneValue(), ListOf(Interval(int, 0), min_len=1, unique=True)),
    "shuffle_classes": Boolean(),
    "classes": AnyOf(NoneValue(), ListOf(Interval(int, 0), min_len=1, unique=True)),
    "scenario": Options(*SPLIT_SCENARIOS),
}


def class_increments(n_classes: int, n_experiences: int | None, base: int | None, increment: int | None) -> list[int]:
    """Sizes of the class groups: ``n_experiences`` equal groups, or ``base`` then ``increment``-sized steps.

    ``B50+5x10`` on 100 classes is ``base=50, increment=10`` (5 steps) or ``base=50, n_experiences=6``.
    """
    if base is None:
        if increment is not None and n_experiences is None:
            n_experiences = n_classes // increment
        if not n_experiences or n_experiences < 1:
            raise UserError(f"n_experiences must be a positive integer, got {n_experiences}")
        if n_experiences > n_classes:
            raise UserError(f"n_experiences={n_experiences} is more than the {n_classes} classes; fix: use at most {n_classes}")
        if n_classes % n_experiences:
            raise UserError(f"{n_classes} classes do not split into {n_experiences} equal experiences; fix: pick a divisor of {n_classes} or set base/increment")
        return [n_classes // n_experiences] * n_experiences
    if not 0 < base < n_classes:
        raise UserError(f"base must be between 1 and {n_classes - 1}, got {base}")
    rest = n_classes - base
    if increment is None:
        if not n_experiences or n_experiences < 2:
            raise UserError("with base, give increment or n_experiences >= 2")
        steps = n_experiences - 1
        if rest % steps:
            raise UserError(f"the {rest} classes after the base do not split into {steps} equal steps")
        increment = rest // steps
    if increment < 1 or rest % increment:
        raise UserError(f"increment={increment} must be positive and divide the {rest} classes after the base")
    sizes = [base] + [increment] * (rest // increment)
    if n_experiences is not None and n_experiences != len(sizes):
        raise UserError(f"base={base}, increment={increment} gives {len(sizes)} experiences, not n_experiences={n_experiences}")
    return sizes


def split_problems(params: Mapping[str, Any], n_classes: int | None) -> list[str]:
    """Every problem of a split's parameters, given the dataset's class count (None: unknown), without data."""
    out = problems(params, SPLIT_CONSTRAINTS)
    if out or n_classes is None:
        return out
    classes = params.get("classes")
    if classes is not None:
        bad = sorted(c for c in classes if c >= n_classes)
        if bad:
            return [f"classes {bad} are not in the dataset (it has classes 0..{n_classes - 1})"]
        n_classes = len(classes)
    order = params.get("class_order")
    if order is not None and sorted(order) != list(range(n_classes)):
        what = "the selected classes' new labels" if classes is not None else "the class labels"
        return [f"class_order must be a permutation of {what} 0..{n_classes - 1}, got {list(order)}"]
    base, inc, n_exp = params.get("base"), params.get("increment"), params.get("n_experiences", 5)
    try:
        class_increments(n_classes, n_exp if base is None or inc is None else None, base, inc)
    except UserError as exc:
        return [str(exc)]
    return []


def split_stream(
    name: str,
    data: SourceData | tuple[TensorData, TensorData],
    *,
    seed: int,
    n_experiences: int | None = 5,
    base: int | None = None,
    increment: int | None = None,
    class_order: Sequence[int] | None = None,
    shuffle_classes: bool = True,
    classes: Sequence[int] | None = None,
    scenario: str = "class-il",
    params: dict | None = None,
) -> Stream:
    """Partition the classes of a dataset into experiences.

    ``classes`` selects a subset of the dataset's classes and remaps their labels to
    ``0..len(classes)-1`` in the order given (used for tuning/evaluation halves). The class order is
    ``class_order`` when given, otherwise a permutation drawn from ``seed`` (``shuffle_classes``) or the
    natural order. ``scenario`` is ``class-il`` (one head over all classes) or ``task-il`` (evaluation
    restricted to the experience's classes). ``data`` is a loaded source (recorded in the stream's
    parameters) or a plain ``(train, test)`` pair.
    """
    train, test = (data.train, data.test) if isinstance(data, SourceData) else data
    present = sorted(torch.unique(train.y).tolist())
    n_all = data.source.n_classes if isinstance(data, SourceData) else (max(present) + 1 if present else 0)
    problems_ = split_problems({"n_experiences": n_experiences, "base": base, "increment": increment,
                                "class_order": None if class_order is None else list(class_order),
                                "shuffle_classes": shuffle_classes,
                                "classes": None if classes is None else list(classes), "scenario": scenario}, n_all)
    if problems_:
        raise UserError("; ".join(problems_))
    if classes is not None:
        classes = [int(c) for c in classes]
        missing = sorted(set(classes) - set(present))
        if missing:
            raise UserError(f"classes {missing} have no training sample in {name}")
        lut = torch.full((max(max(present), max(classes)) + 1,), -1, dtype=torch.int64)
        lut[torch.tensor(classes)] = torch.arange(len(classes))

        def remap(d: TensorData) -> TensorData:
            keep = torch.isin(d.y, torch.tensor(classes))
            kept = d.subset(keep.nonzero().squeeze(1))
            return TensorData(kept.x, lut[kept.y], kept.origin)

        train, test = remap(train), remap(test)
        present = list(range(len(classes)))
    n_classes = len(present)
    sizes = class_increments(n_classes, n_experiences if base is None or increment is None else None, base, increment)
    if class_order is not None:
        order = [int(c) for c in class_order]
    elif shuffle_classes:
        g = torch.Generator().manual_seed(seed)
        order = [present[i] for i in torch.randperm(n_classes, generator=g).tolist()]
    else:
        order = list(present)
    experiences = []
    start = 0
    for i, size in enumerate(sizes):
        group = tuple(order[start : start + size])
        start += size
        sel = torch.tensor(group)
        tr_idx = torch.isin(train.y, sel).nonzero().squeeze(1)
        te_idx = torch.isin(test.y, sel).nonzero().squeeze(1)
        experiences.append(Experience(i, i if scenario == "task-il" else 0, group, train.subset(tr_idx), test.subset(te_idx)))
    rec = dict(params or {})
    rec["class_order"] = order
    sources = {}
    if isinstance(data, SourceData):
        rec["source"] = data.describe()
        sources = {"train": data.train, "test": data.test}
    return Stream(name=name, scenario=scenario, n_classes=n_classes, experiences=tuple(experiences), params=rec,
                  seed=seed, sources=sources)
