"""Blurry (generalized class-incremental) streams in the style of Si-Blurry (Moon et al., ICCV 2023).

Wraps a class-incremental stream with T experiences. The classes (in a seed-drawn order) are split into

* disjoint classes (a fraction ``disjoint_ratio``, round(ratio |C|) classes): every training sample stays in
  the class's *home* experience;
* blurry classes (the rest): a fraction ``blurry_ratio`` of each blurry class's training samples is moved
  to other experiences (for each moved sample an experience other than home, uniformly), the rest stays home.

Home experiences (``split``):

* ``even`` (default): the experience that held the class in the wrapped stream (its own seed-drawn,
  equal-sized class split);
* ``stochastic``: Si-Blurry's stochastic incremental split, so the number of classes per experience is
  random. The disjoint classes, in the drawn order, are cut into T contiguous chunks at T - 1 cut points
  drawn uniformly from {0, ..., n_disjoint - 1} and sorted; chunk t is experience t's. The blurry classes are
  cut the same way, independently. A chunk can be empty; the last one always holds a class (as in Si-Blurry:
  KHU-AGI/Si-Blurry ``utils/online_sampler.py``, ``OnlineSampler.__init__``, the ``varing_NM`` branch, with
  ``torch.randint(0, num, (T - 1,))`` cut points). An experience left without any training sample is refused
  (UserError: another seed, a larger ``blurry_ratio`` or ``split: even``).

So an experience mixes its new classes with samples of classes seen before (or seen again later). Each
experience's training data is shuffled (online order). Test sets stay disjoint: experience j tests the
classes whose first training sample appears in experience j, so the union of test sets up to step i is
exactly the classes seen so far (an experience that brings no new class has an empty test set). ``info``
records each experience's new classes; the stream params record the class split (``disjoint_classes``, and
``home_classes`` per experience with ``split: stochastic``).

Where clbench's blurry stream differs from Si-Blurry's sampler (``online_sampler.py`` at KHU-AGI/Si-Blurry;
the GACL repository's copy is the same):

* class counts: Si-Blurry takes floor(|C| N / 100) disjoint classes rounded down to a multiple of T, and the
  remaining classes rounded down to a multiple of T as blurry classes, *dropping* the leftover classes;
  clbench takes round(disjoint_ratio |C|) disjoint classes and keeps every class;
* blurred samples: Si-Blurry pools M% of *all* blurry-class samples, in stochastic mode split into T
  random-size chunks (randint cut points again): task i hands its first chunk_i blurry samples (dataset order)
  to a pool, the pool is shuffled and task i takes chunk_i back, so a task's size is kept and a sample may
  return to its own task. clbench moves ``blurry_ratio`` of *each* blurry class, each moved sample to an
  experience drawn uniformly among the other T - 1; experiences' sizes change;
* which mode runs: Si-Blurry's trainer passes its arguments positionally, so ``selection_size`` (default 1)
  lands in ``varing_NM`` and the stochastic mode is what its published runs used; clbench's default is
  ``even`` (the i-Blurry-like equal split), ``split: stochastic`` gives the Si-Blurry one;
* evaluation: Si-Blurry evaluates every ``eval_period`` stream samples on the test data of the classes
  exposed so far (anytime accuracy, A_auc), and A_last / A_avg at task ends on exposed classes; clbench's
  loop does the same with ``eval_period`` (strategies that learn online), and its per-experience test sets
  above sum to the exposed classes' test data at every experience end;
* the ratios are fractions here (``disjoint_ratio: 0.5, blurry_ratio: 0.1``), percentages there (N = 50, M = 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from clbench.constraints import Interval, Options, problems
from clbench.errors import UserError

from clbench.stream import Experience, Stream, TensorData

BLURRY_KEYS = ("disjoint_ratio", "blurry_ratio", "split")
SPLITS = ("even", "stochastic")


BLURRY_CONSTRAINTS = {"disjoint_ratio": Interval(float, 0.0, 1.0), "blurry_ratio": Interval(float, 0.0, 1.0),
                      "split": Options(*SPLITS)}


def blurry_problems(block: Any) -> list[str]:
    """Problems of a ``blurry: {disjoint_ratio, blurry_ratio, split}`` config block (empty when valid)."""
    if not isinstance(block, Mapping):
        return [f"blurry must be a mapping such as {{disjoint_ratio: 0.5, blurry_ratio: 0.1}}, got {block!r}"]
    bad = sorted(set(block) - set(BLURRY_KEYS))
    if bad:
        return [f"unknown blurry key(s) {bad}; valid keys: {', '.join(BLURRY_KEYS)}"]
    return [f"blurry {p}" for p in problems(dict(block), BLURRY_CONSTRAINTS)]


def check_blurry(block: Any) -> dict[str, Any]:
    """Validate a ``blurry:`` block (one UserError listing its problems); return it with defaults."""
    bad = blurry_problems(block)
    if bad:
        raise UserError("; ".join(bad))
    return {"disjoint_ratio": float(block.get("disjoint_ratio", 0.5)), "blurry_ratio": float(block.get("blurry_ratio", 0.1)),
            "split": str(block.get("split", "even"))}


def stochastic_chunks(group: list[int], T: int, g: torch.Generator) -> list[list[int]]:
    """Si-Blurry's split of ``group`` into T contiguous chunks of random sizes.

    Cut points c_1 <= ... <= c_{T-1}: T - 1 draws uniform on {0, ..., n - 1} (n = len(group)), sorted;
    chunk t = group[c_t : c_{t+1}] with c_0 = 0, c_T = n. No draw when the group is empty (all chunks empty).
    """
    n = len(group)
    if n == 0:
        return [[] for _ in range(T)]
    cuts = [0] + sorted(torch.randint(0, n, (T - 1,), generator=g).tolist()) + [n]
    return [group[cuts[t]:cuts[t + 1]] for t in range(T)]


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
    extra: dict[str, Any] = {}
    if p["split"] == "stochastic":
        drawn = [classes[i] for i in order]
        chunks = [d + b for d, b in zip(stochastic_chunks(drawn[:n_disjoint], T, g), stochastic_chunks(drawn[n_disjoint:], T, g))]
        home = {c: t for t, chunk in enumerate(chunks) for c in chunk}
        extra["home_classes"] = [sorted(chunk) for chunk in chunks]
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
    empty = [t for t in range(T) if not bool((dest == t).any())]
    if empty:
        raise UserError(f"the blurry split of {stream.name} (seed {seed}) leaves experience(s) {empty} without any training "
                        f"sample; fix: another seed, a larger blurry_ratio, or split: even")
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
    return stream.with_experiences(exps, blurry={**p, "disjoint_classes": disjoint, **extra})
