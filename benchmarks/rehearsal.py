"""Power-law rehearsal environments (Gandhi et al. 2024, arXiv 2401.10393 v1) over any task sequence.

In phase ``p`` the learner sees task ``p``'s training data plus rehearsal samples of every earlier
task ``j``; the amount depends on the lag ``k = p - j`` through a schedule. The test set of phase ``p``
is task ``p``'s own, so "accuracy on all tasks seen so far" is the sample-weighted mean of row ``p`` of
the accuracy matrix over ``j <= p``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from clbench.constraints import AnyOf, Interval, NoneValue, Options, problems
from clbench.errors import UserError

from clbench.stream import Experience, Stream, TensorData

SCHEDULES = ("power_law", "exponential", "uniform", "none", "all")

PRESETS: dict[str, dict] = {
    # a public third-party reconstruction of the paper's environment: N(k) = 57927 (1 + 0.1 k)^-5.6,
    # no total budget (phase 9 replays more than a whole task). The authors' exact values are unverified.
    "gandhi2024_reconstruction": {"schedule": "power_law", "scale": 57927.0, "offset": 0.1, "exponent": 5.6},
}


@dataclass(frozen=True)
class RehearsalSchedule:
    """How many samples of a task seen ``k`` phases ago are replayed.

    Weight of a lag ``k >= 1``:
      * ``power_law``:   w(k) = (1 + offset * k) ** (-exponent)
      * ``exponential``: w(k) = exp(-k / beta) / beta
      * ``uniform``:     w(k) = 1
    Without a budget the count is ``round(scale * w(k))``. With ``budget`` = r, the phase replays
    ``r * N0`` samples in total (N0 = the size of one task's training set), split across the past
    tasks in proportion to w(k) by largest remainder, so the counts sum exactly to the budget.
    ``none`` replays nothing (lower bound); ``all`` replays every earlier task in full (upper bound).
    """

    schedule: str = "power_law"
    exponent: float = 5.6
    offset: float = 0.1
    scale: float = 57927.0
    beta: float = 2.0
    budget: float | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown rehearsal schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.budget is not None and self.budget < 0:
            raise UserError(f"rehearsal budget must be >= 0 (a fraction of one task), got {self.budget}")
        if self.schedule == "uniform" and self.budget is None:
            raise UserError("the uniform rehearsal schedule needs a budget (e.g. budget: 0.5)")
        if self.beta <= 0 or self.scale < 0 or self.offset < 0:
            raise UserError("rehearsal beta must be > 0, scale and offset >= 0")

    def weight(self, k: int) -> float:
        if self.schedule == "power_law":
            return (1.0 + self.offset * k) ** (-self.exponent)
        if self.schedule == "exponential":
            return math.exp(-k / self.beta) / self.beta
        return 1.0

    def counts(self, phase: int, task_sizes: list[int]) -> list[int]:
        """Samples replayed from each earlier task ``j < phase`` (index j), capped at nothing."""
        lags = [phase - j for j in range(phase)]
        if self.schedule == "none" or phase == 0:
            return [0] * phase
        if self.schedule == "all":
            return [task_sizes[j] for j in range(phase)]
        w = [self.weight(k) for k in lags]
        if self.budget is None:
            return [int(round(self.scale * wk)) for wk in w]
        total = int(round(self.budget * task_sizes[phase]))
        return allocate(total, w)


def allocate(total: int, weights: list[float]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights`` by largest remainder (sums to ``total``)."""
    s = sum(weights)
    if total <= 0 or s <= 0:
        return [0] * len(weights)
    exact = [total * w / s for w in weights]
    base = [math.floor(e) for e in exact]
    left = total - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    return base


def _sample(data: TensorData, n: int, g: torch.Generator) -> TensorData:
    """``n`` samples without replacement; beyond the task's size, whole copies plus a remainder."""
    size = len(data)
    reps, rest = divmod(n, size)
    idx = [torch.randperm(size, generator=g) for _ in range(reps)]
    idx.append(torch.randperm(size, generator=g)[:rest])
    return data.subset(torch.cat(idx))


def with_rehearsal(stream: Stream, schedule: RehearsalSchedule, seed: int) -> Stream:
    """Wrap a stream: phase ``p``'s training data = task ``p`` + rehearsal of each earlier task.

    Sampling is drawn from ``seed`` (independently of the stream's own draws), so the schedule is
    reproducible. Each experience records the replayed counts per earlier task in ``info``.
    """
    g = torch.Generator().manual_seed(seed + 7919)
    sizes = [len(e.train) for e in stream.experiences]
    out = []
    all_counts = []
    for p, exp in enumerate(stream.experiences):
        counts = schedule.counts(p, sizes)
        all_counts.append(counts)
        parts = [exp.train] + [_sample(stream.experiences[j].train, c, g) for j, c in enumerate(counts) if c > 0]
        train = TensorData.concat(parts)
        info = dict(exp.info)
        info["rehearsal_counts"] = counts
        out.append(Experience(exp.index, exp.task_id, exp.classes, train, exp.test, info))
    return stream.with_experiences(out, rehearsal={**schedule.__dict__, "counts": all_counts})


REHEARSAL_CONSTRAINTS = {
    "schedule": Options(*SCHEDULES), "exponent": Interval(float), "offset": Interval(float, 0.0), "scale": Interval(float, 0.0),
    "beta": Interval(float, 0.0, closed="neither"), "budget": AnyOf(NoneValue(), Interval(float, 0.0)),
    "preset": Options(*PRESETS),
}


def rehearsal_problems(block: Any) -> list[str]:
    """Problems of a ``rehearsal:`` config block (empty when valid), found without any data."""
    if not isinstance(block, Mapping):
        return [f"rehearsal must be a mapping such as {{schedule: power_law, budget: 0.5}}, got {block!r}"]
    bad = sorted(set(block) - set(REHEARSAL_CONSTRAINTS))
    if bad:
        return [f"unknown rehearsal key(s) {bad}; valid keys: {', '.join(sorted(REHEARSAL_CONSTRAINTS))}"]
    out = [f"rehearsal {p}" for p in problems(dict(block), REHEARSAL_CONSTRAINTS)]
    if not out:
        try:
            schedule_from_config(dict(block))
        except UserError as exc:
            out.append(str(exc))
    return out


def schedule_from_config(block: dict) -> RehearsalSchedule:
    """Build a schedule from a config block such as ``{schedule: power_law, exponent: 5.6, budget: 0.5}``."""
    block = dict(block)
    preset = block.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown rehearsal preset {preset!r}; valid: {', '.join(PRESETS)}")
        block = {**PRESETS[preset], **block}
    valid = set(RehearsalSchedule.__dataclass_fields__)
    bad = sorted(set(block) - valid)
    if bad:
        raise UserError(f"unknown rehearsal key(s) {bad}; valid keys: preset, {', '.join(sorted(valid))}")
    return RehearsalSchedule(**block)
