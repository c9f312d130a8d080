"""A strategy that records what it is given (used by tests as module.path:ClassName)."""

import torch

from clbench.strategies import Strategy


class Spy(Strategy):
    """Records every call; predicts class 0."""

    calls: list = []  # replaced per instance

    def __init__(self, info, *, seed=0, device="cpu", note: str = ""):
        super().__init__(info, seed=seed, device=device)
        self.calls = []
        self.note = note

    def train_experience(self, exp):
        self.calls.append(exp)

    def predict(self, x):
        return torch.zeros(len(x), self.info.n_classes)


class NotAStrategy:
    def predict(self, x):
        return x
