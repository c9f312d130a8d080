"""Tuning closed-form heads at the cost of one fit: trials re-solve a cached fit instead of refitting.

A head that is :class:`~clbench.strategies.closed_form.Resolvable` for every searched hyperparameter (acil,
gacil: ``gamma``; dsal: ``comp_gamma``, ``comp_scale``; ranpac: ``ridge`` (each trial fixes one); slda:
``shrinkage``; fecam with per-class covariances: ``gamma1``, ``gamma2``) accumulates statistics that do not depend on those values. For each
(stream, seed, fixed values) :class:`ResolvedTrials` therefore trains the head once, taking a snapshot after
every experience (``solver_state``: for the ridge heads the eigendecomposition of G_t when the study has
:data:`FACTOR_MIN_TRIALS` trials or more, so that every value costs M^2 C flops, else a copy of (G_t, Q_t)
re-solved by Cholesky), and every trial then runs through
the ordinary evaluation loop (:func:`~clbench.protocols.loop.run_stream`, the same accuracy matrix, metrics
and record as a refit) with a stand-in strategy whose "training" on experience t is ``resolve(snapshot_t,
**trial values)``. The projections of the test inputs (random layers) are computed once and shared by all
trials (``feature_memo``).

Before the first experience the stand-in predicts with a freshly built head (the untrained model of a refit,
for the FWT baseline). The shared head is trained by the first trial to reach an experience, on that trial's
own training view, so the first trial's ``train_seconds`` are those of a fit and the later trials' are their
re-solves. A head whose instance turns out not to be re-solvable for the searched names (fecam with a common
covariance) is refitted per trial, as without this module.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from clbench.stream import Stream, TrainView
from clbench.strategies.base import Strategy
from clbench.strategies.closed_form import Resolvable

from .config import CellSpec
from .runner import new_strategy

#: at or above this many trials a study snapshots eigendecompositions (one eigh per experience, then M^2 C flops
#: per value) instead of copies of (G, Q) (one Cholesky factorisation, M^3 / 3 flops, per value and experience):
#: LAPACK's eigh costs about 14 Cholesky factorisations of the same 2048 x 2048 matrix (``bench/tune_closed_form.py``)
FACTOR_MIN_TRIALS = 15


def resolvable_class(cls: type, searched: set[str]) -> bool:
    """Whether trials of ``cls`` over ``searched`` may be re-solved (instances may still decline: ranpac)."""
    if not (isinstance(cls, type) and issubclass(cls, Resolvable)) or not searched:
        return False
    names = inspect.getattr_static(cls, "retunable", ())
    return isinstance(names, property) or searched <= set(names)


@dataclass
class _Fit:
    """One head trained through the experiences met so far, with a snapshot after each of them."""

    head: Any
    kw: dict[str, Any]
    states: list[Any] = field(default_factory=list)
    memo: dict = field(default_factory=dict)
    broken: bool = False

    def state(self, exp: TrainView) -> Any:
        """The snapshot after experience ``exp``: taken now (the head trains on it) if no trial got this far."""
        if exp.index < len(self.states):
            return self.states[exp.index]
        if exp.index != len(self.states):
            raise RuntimeError(f"experience {exp.index} before experience {len(self.states)}: snapshots are taken in order")
        self.head.feature_memo = None  # training inputs are not kept
        try:
            self.head.train_experience(exp)
            self.states.append(self.head.solver_state(**self.kw))
        except BaseException:
            self.broken = True
            raise
        finally:
            self.head.feature_memo = self.memo
        return self.states[-1]


class Replayed(Strategy):
    """Stands in for a head trained with the trial's values: experience t re-solves the snapshot after t.

    The first trial to reach experience t trains the shared head on it (so that trial costs one fit); later
    trials only re-solve.
    """

    def __init__(self, fresh: Strategy, fit: _Fit, params: dict[str, Any]) -> None:
        super().__init__(fit.head.info, seed=fit.head.seed, device=str(fit.head.device))
        self.fresh, self.fit, self.params = fresh, fit, params
        self.done = 0

    def train_experience(self, exp: TrainView) -> None:
        self.fit.head.resolve(self.fit.state(exp), **self.params)
        self.done += 1

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fit.head if self.done else self.fresh).predict(x)

    def state_bytes(self) -> int:
        return int(self.fit.head.state_bytes())


class ResolvedTrials:
    """A ``make_strategy`` for :func:`~clbench.protocols.runner.execute_cell` that reuses one fit per
    (benchmark, seed, fixed values) for the trials of one study (see the module docstring).

    ``searched``: the names the study varies; ``factor``: snapshot eigendecompositions (many trials) or
    copies of the statistics (few trials).
    """

    def __init__(self, searched: set[str], factor: bool) -> None:
        self.searched, self.factor = set(searched), factor
        self.fits: dict[str, _Fit | None] = {}  # None: this instance is not re-solvable, trials refit

    def _key(self, cell: CellSpec, fixed: dict[str, Any]) -> str:
        return json.dumps([cell.benchmark, cell.strategy.get("name"), fixed, cell.seed, cell.device],
                          sort_keys=True, default=str)

    def __call__(self, cls: type, stream: Stream, cell: CellSpec) -> Strategy:
        params = {k: v for k, v in cell.hyperparameters.items() if k in self.searched}
        fixed = {k: v for k, v in cell.hyperparameters.items() if k not in self.searched}
        key = self._key(cell, fixed)
        fit = self.fits.get(key)
        if key not in self.fits or (fit is not None and fit.broken):
            head = new_strategy(cls, stream, cell)
            if not set(params) <= set(head.retunable):
                self.fits[key] = None
                return head
            kw = {"factor": self.factor} if "factor" in inspect.signature(head.solver_state).parameters else {}
            fit = self.fits[key] = _Fit(head, kw)
        if fit is None:
            return new_strategy(cls, stream, cell)
        fresh = new_strategy(cls, stream, cell)
        fresh.feature_memo = fit.memo  # same seed and fixed values: the same random layer
        return Replayed(fresh, fit, params)
