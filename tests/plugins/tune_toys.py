"""Toy strategies for the tune tests: their best hyperparameters are known by construction.

``ToyNCM`` is a nearest-class-mean classifier (fast, deterministic) whose answers are spoiled on
purpose: predicted labels are shifted by ``shift`` (so ``shift=0`` is the only good value) and a
fraction ``min(1, 2 |knob - 0.3|)`` of the answers is replaced by a wrong label (so ``knob=0.3`` is
the best value). ``delay`` sleeps after each experience, to make a trial last long enough to be
killed in the middle.
"""

from __future__ import annotations

import time

import torch

from clbench.stream import StreamInfo, TrainView
from clbench.strategies import Choice, Float, Strategy

BEST_KNOB = 0.3


class ToyNCM(Strategy):
    """Nearest class mean with a label shift and a noise knob (best: shift 0, knob 0.3)."""

    search_space = {"shift": Choice([-1, 0, 1, 2]), "knob": Float(0.0, 1.0)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", shift: int = 1, knob: float = 0.0,
                 delay: float = 0.0) -> None:
        super().__init__(info, seed=seed, device=device)
        self.shift, self.knob, self.delay = int(shift), float(knob), float(delay)
        self.means: dict[int, torch.Tensor] = {}

    def train_experience(self, exp: TrainView) -> None:
        x = exp.train.float_x().flatten(1)
        for c in exp.classes:
            self.means[int(c)] = x[exp.train.y == c].mean(0)
        if self.delay:
            time.sleep(self.delay)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        classes = torch.tensor(sorted(self.means))
        centres = torch.stack([self.means[int(c)] for c in classes])
        x = x.flatten(1)
        dist = (centres * centres).sum(1) - 2 * x @ centres.T  # squared distance up to |x|^2
        labels = classes[dist.argmin(1)]
        n = self.info.n_classes
        labels = (labels + self.shift) % n
        spoil = min(1.0, 2 * abs(self.knob - BEST_KNOB))
        idx = torch.arange(len(labels), dtype=torch.float64)
        wrong = (idx * 0.6180339887) % 1.0 < spoil  # a deterministic, evenly spread fraction `spoil`
        return torch.where(wrong, (labels + 1) % n, labels)

