"""Power-law rehearsal environments (Gandhi et al. 2024, arXiv 2401.10393 v1) over any task sequence.

In phase ``p`` the learner sees task ``p``'s training data in full plus rehearsal samples of every earlier
task ``j``; the amount depends on the lag ``k = p - j >= 1`` through a schedule. The test set of phase ``p``
is task ``p``'s own, so "accuracy on all tasks seen so far" is the sample-weighted mean of row ``p`` of
the accuracy matrix over ``j <= p``.

Sampling: in every phase, each earlier task's count is drawn *without replacement* from that task's
training set, independently across phases (as the reconstruction's ``np.random.choice(..., replace=False)``
per phase, ``environments.py`` L209-218). A count is never more than the task has: a schedule that asks for more replays the whole task
once (never whole copies) and :func:`with_rehearsal` warns once per stream, naming the largest request.

The lag convention, checked against the one public reconstruction of the paper's environment
(archana53/power-law-for-CI at 39ec2f8, ``environments.py`` L84-114; not the authors' code, none was found):
it hard-codes 21 counts 57927, 44078, 33969, ... (within 1 of 57927 (20 / x)^5.6 for x = 20..40), keeps every
second one (L107-108: 57927, 33969, 20867, ..., 1592) and sets Matrix[task j, phase p] = freq[p - j]
(L109-113). So the task introduced in phase p (lag 0) gets freq[0] = 57927 samples out of a pool of
``MAX_TASK_EXAMPLES`` = 57927 images (``run.py`` L32): the whole task. Lag k >= 1 gets
freq[k] = 57927 (20 / (20 + 2k))^5.6 = 57927 (1 + 0.1 k)^-5.6. clbench's schedule is the same: the current
task in full (N(0) = the task size, 57927 there) and N(k) = scale (1 + offset k)^-exponent for earlier tasks,
k = p - j >= 1, with the preset ``gandhi2024_reconstruction`` (scale 57927, offset 0.1, exponent 5.6).
N(0) is thus used, as the current task's count; it is not the count of the task seen one phase ago.

Scaling the preset to smaller tasks (``scale_to_task``): the reconstruction's counts are absolute numbers
for 57927-image tasks; on a subset (e.g. 1500 images per task) they would ask for 38x a task at lag 0 and
whole copies after. With ``scale_to_task: true`` (set by the preset) the scale of task j is
S_j = min(scale, n_j), n_j its training-set size, so N_j(k) = round(min(scale, n_j) (1 + offset k)^-exponent):
the counts are multiplied by n_j / 57927 on a subset (N(0) stays the whole task, N(1) = 0.586 n_j, ...,
N(9) = 0.0275 n_j), and are the reconstruction's own on tasks of 57927 images or more (e.g. all 60000
MNIST training images).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from clbench.constraints import AnyOf, Boolean, Interval, NoneValue, Options, problems
from clbench.errors import UserError

from clbench.stream import Experience, Stream, TensorData

SCHEDULES = ("power_law", "exponential", "uniform", "none", "all")

PRESETS: dict[str, dict] = {
    # a public third-party reconstruction of the paper's environment: N(k) = 57927 (1 + 0.1 k)^-5.6,
    # no total budget (phase 9 replays more than a whole task), scaled by n / 57927 on tasks of n < 57927
    # samples (see the module docstring). The authors' exact values are unverified.
    "gandhi2024_reconstruction": {"schedule": "power_law", "scale": 57927.0, "offset": 0.1, "exponent": 5.6,
                                  "scale_to_task": True},
}


@dataclass(frozen=True)
class RehearsalSchedule:
    """How many samples of a task seen ``k`` phases ago are replayed.

    Weight of a lag ``k >= 1``:
      * ``power_law``:   w(k) = (1 + offset * k) ** (-exponent)
      * ``exponential``: w(k) = exp(-k / beta) / beta
      * ``uniform``:     w(k) = 1
    Without a budget the count of task j is ``round(S_j * w(k))`` with S_j = ``scale``, or
    min(``scale``, n_j) when ``scale_to_task`` (n_j = task j's training-set size; see the module docstring).
    With ``budget`` = r, the phase replays ``r * N0`` samples in total (N0 = the size of the current task's
    training set), split across the past tasks in proportion to w(k) by largest remainder, so the counts sum
    exactly to the budget. ``none`` replays nothing (lower bound); ``all`` replays every earlier task in full
    (upper bound). :meth:`requested` is what the schedule asks for; :meth:`counts` caps it at n_j.
    """

    schedule: str = "power_law"
    exponent: float = 5.6
    offset: float = 0.1
    scale: float = 57927.0
    beta: float = 2.0
    budget: float | None = None
    scale_to_task: bool = False

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

    def requested(self, phase: int, task_sizes: list[int]) -> list[int]:
        """Samples the schedule asks for from each earlier task ``j < phase`` (index j, lag phase - j), uncapped."""
        lags = [phase - j for j in range(phase)]
        if self.schedule == "none" or phase == 0:
            return [0] * phase
        if self.schedule == "all":
            return [task_sizes[j] for j in range(phase)]
        w = [self.weight(k) for k in lags]
        if self.budget is None:
            scales = [min(self.scale, task_sizes[j]) if self.scale_to_task else self.scale for j in range(phase)]
            return [int(round(s * wk)) for s, wk in zip(scales, w)]
        total = int(round(self.budget * task_sizes[phase]))
        return allocate(total, w)

    def counts(self, phase: int, task_sizes: list[int]) -> list[int]:
        """Samples replayed from each earlier task ``j < phase``: :meth:`requested`, capped at the task's size."""
        return [min(c, task_sizes[j]) for j, c in enumerate(self.requested(phase, task_sizes))]


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
    """``n <= len(data)`` samples drawn without replacement (the first ``n`` of a random permutation)."""
    if n > len(data):
        raise ValueError(f"cannot draw {n} samples without replacement from {len(data)}")
    return data.subset(torch.randperm(len(data), generator=g)[:n])


def with_rehearsal(stream: Stream, schedule: RehearsalSchedule, seed: int) -> Stream:
    """Wrap a stream: phase ``p``'s training data = task ``p`` + rehearsal of each earlier task.

    Sampling is drawn from ``seed`` (independently of the stream's own draws), without replacement within a
    phase, so the schedule is reproducible. Each experience records the replayed counts per earlier task in
    ``info`` (``rehearsal_counts``). When the schedule asks for more samples of a task than it has, the whole
    task is replayed once, one warning names the largest request, and the stream's ``rehearsal`` params
    record ``capped: true`` and the ``requested`` counts.
    """
    g = torch.Generator().manual_seed(seed + 7919)
    sizes = [len(e.train) for e in stream.experiences]
    out = []
    all_counts, all_requested = [], []
    worst: tuple[int, int, int] | None = None  # (phase, task, requested) of the largest request relative to the task
    for p, exp in enumerate(stream.experiences):
        asked = schedule.requested(p, sizes)
        counts = schedule.counts(p, sizes)
        all_counts.append(counts)
        all_requested.append(asked)
        for j, (a, c) in enumerate(zip(asked, counts)):
            if a > c and (worst is None or a / sizes[j] > worst[2] / sizes[worst[1]]):
                worst = (p, j, a)
        parts = [exp.train] + [_sample(stream.experiences[j].train, c, g) for j, c in enumerate(counts) if c > 0]
        train = TensorData.concat(parts)
        info = dict(exp.info)
        info["rehearsal_counts"] = counts
        out.append(Experience(exp.index, exp.task_id, exp.classes, train, exp.test, info))
    params = {**schedule.__dict__, "counts": all_counts, "capped": worst is not None}
    if worst is not None:
        p, j, a = worst
        params["requested"] = all_requested
        warnings.warn(f"rehearsal schedule asks for more samples than a task has (up to {a} of task {j}'s {sizes[j]} in "
                      f"phase {p}); those tasks are replayed once in full, without replacement. Fix: a budget "
                      f"(budget: 0.5) or scale_to_task: true", UserWarning, stacklevel=2)
    return stream.with_experiences(out, rehearsal=params)


REHEARSAL_CONSTRAINTS = {
    "schedule": Options(*SCHEDULES), "exponent": Interval(float), "offset": Interval(float, 0.0), "scale": Interval(float, 0.0),
    "beta": Interval(float, 0.0, closed="neither"), "budget": AnyOf(NoneValue(), Interval(float, 0.0)),
    "preset": Options(*PRESETS), "scale_to_task": Boolean(),
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
