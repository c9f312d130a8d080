"""Blurry (generalized class-incremental) streams in the style of Si-Blurry (Moon et al., ICCV 2023).

Wraps a class-incremental stream with T experiences. The classes (in the stream's own, seed-drawn class
order, each with the experience that held it as its *home*) are split by the seed into

* disjoint classes (a fraction ``disjoint_ratio``): every training sample stays in the home experience;
* blurry classes (the rest): a fraction ``blurry_ratio`` of each blurry class's training samples is moved
  to other experiences (uniformly at random), the rest stays home.

So an experience mixes its new classes with samples of classes seen before (or seen again later). Each
experience's training data is shuffled (online order). Test sets stay disjoint: experience j tests the
classes whose first training sample appears in experience j, so the union of test sets up to step i is
exactly the classes seen so far. ``info`` records each experience's new classes and the class split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from clbench.constraints import Interval, problems
from clbench.errors import UserError

from clbench.stream import Experience, Stream, TensorData

BLURRY_KEYS = ("disjoint_ratio", "blurry_ratio")


BLURRY_CONSTRAINTS = {"disjoint_ratio": Interval(float, 0.0, 1.0), "blurry_ratio": Interval(float, 0.0, 1.0)}


def blurry_problems(block: Any) -> list[str]:
    """Problems of a ``blurry: {disjoint_ratio, blurry_ratio}`` config block (empty when valid)."""
    if not isinstance(block, Mapping):
        return [f"blurry must be a mapping such as {{disjoint_ratio: 0.5, blurry_ratio: 0.1}}, got {block!r}"]
    bad = sorted(set(block) - set(BLURRY_KEYS))
    if bad:
        return [f"unknown blurry key(s) {bad}; valid keys: {', '.join(BLURRY_KEYS)}"]
    return [f"blurry {p}" for p in problems(dict(block), BLURRY_CONSTRAINTS)]


def check_blurry(block: Any) -> dict[str, float]:
    """Validate a ``blurry:`` block (one UserError listing its problems); return it with defaults."""
    bad = blurry_problems(block)
    if bad:
        raise UserError("; ".join(bad))
    return {"disjoint_ratio": float(block.get("disjoint_ratio", 0.5)), "blurry_ratio": float(block.get("blurry_ratio", 0.1))}


def with_blurry(stream: Stream, block: Mapping[str, Any], seed: int) -> Stream:
    """The blurry version of a class-incremental ``stream`` (see the module docstring)."""
    p = check_blurry(block)
    if stream.scenario != "class-il":
        raise UserError(f"blurry streams are class-incremental; {stream.name} is {stream.scenario}")
    T = len(stream)
    if T < 2:
        raise UserError("a blurry stream needs at least 2 experiences")
    g = torch.Generator().manual_seed(seed + 104729)
    home = {c: e.index for e in stream.experiences for c in e.classes}
    classes = [c for e in stream.experiences for c in e.classes]
    order = torch.randperm(len(classes), generator=g).tolist()
    n_disjoint = round(p["disjoint_ratio"] * len(classes))
    disjoint = sorted(classes[i] for i in order[:n_disjoint])
    train = TensorData.concat([e.train for e in stream.experiences])
    test = TensorData.concat([e.test for e in stream.experiences])
    dest = torch.empty(len(train), dtype=torch.int64)
    for c in classes:
        idx = (train.y == c).nonzero().squeeze(1)
        dest[idx] = home[c]
        if c in disjoint:
            continue
        n_move = round(p["blurry_ratio"] * len(idx))
        moved = idx[torch.randperm(len(idx), generator=g)[:n_move]]
        shift = torch.randint(1, T, (n_move,), generator=g)  # another experience, uniformly
        dest[moved] = (home[c] + shift) % T
    first: dict[int, int] = {}
    for t in range(T):
        for c in train.y[dest == t].unique().tolist():
            first.setdefault(c, t)
    exps = []
    for t in range(T):
        sel = (dest == t).nonzero().squeeze(1)
        sel = sel[torch.randperm(len(sel), generator=g)]
        new = tuple(sorted(c for c, f in first.items() if f == t))
        te = torch.isin(test.y, torch.tensor(new, dtype=torch.int64)).nonzero().squeeze(1)
        present = tuple(sorted(train.y[sel].unique().tolist()))
        exps.append(Experience(t, 0, present, train.subset(sel), test.subset(te), {"new_classes": new}))
    return stream.with_experiences(exps, blurry={**p, "disjoint_classes": disjoint})
