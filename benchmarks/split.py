"""Class-incremental split streams: classes partitioned into experiences."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clbench.errors import UserError

from .stream import Experience, Stream, TensorData


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


def split_stream(
    name: str,
    train: TensorData,
    test: TensorData,
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
    restricted to the experience's classes).
    """
    if scenario not in ("class-il", "task-il"):
        raise UserError(f"a split stream's scenario must be 'class-il' or 'task-il', got {scenario!r}")
    present = sorted(torch.unique(train.y).tolist())
    if classes is not None:
        classes = [int(c) for c in classes]
        bad = sorted(set(classes) - set(present))
        if bad:
            raise UserError(f"classes {bad} are not in the dataset (it has {present[0]}..{present[-1]})")
        if len(set(classes)) != len(classes):
            raise UserError("classes lists a class twice")
        lut = torch.full((max(present) + 1,), -1, dtype=torch.int64)
        lut[torch.tensor(classes)] = torch.arange(len(classes))

        def remap(d: TensorData) -> TensorData:
            keep = torch.isin(d.y, torch.tensor(classes))
            return TensorData(d.x[keep], lut[d.y[keep]])

        train, test = remap(train), remap(test)
        present = list(range(len(classes)))
    n_classes = len(present)
    sizes = class_increments(n_classes, n_experiences if base is None or increment is None else None, base, increment)
    if class_order is not None:
        order = [int(c) for c in class_order]
        if sorted(order) != present:
            raise UserError(f"class_order must be a permutation of the {n_classes} class labels {present[0]}..{present[-1]}")
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
    return Stream(name=name, scenario=scenario, n_classes=n_classes, experiences=tuple(experiences), params=rec, seed=seed)
