"""The classic baselines: finetune (lower bound), joint (upper bound), replay."""

from __future__ import annotations

from clbench.stream import StreamInfo, TensorData, TrainView
from clbench.constraints import Boolean, Interval

from .base import tensor_bytes
from .buffers import ClassBalancedBuffer
from .gradient import GradientStrategy
from .models import build_model
from .space import Choice


class Finetune(GradientStrategy):
    """Plain sequential training on each experience (naive / lower bound)."""


class Joint(GradientStrategy):
    """Upper bound: after each experience, retrain on all the training data seen so far.

    With ``reinit`` (default) the model and optimiser start afresh each time, so the model after
    experience i is a joint model of experiences 0..i.
    """

    parameter_constraints = {"reinit": Boolean()}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", reinit: bool = True, **kw) -> None:
        super().__init__(info, seed=seed, device=device, **kw)
        self.reinit = reinit
        self.seen: list[TensorData] = []

    def training_data(self, exp: TrainView) -> TensorData:
        self.seen.append(exp.train.raw)
        if self.reinit:
            self.model = build_model(**self.model_spec).to(self.device)
            self.optimizer = self.make_optimizer()
        return TensorData.concat(self.seen)

    def state_bytes(self) -> int:
        return tensor_bytes(self.model) + sum(d.nbytes() for d in self.seen)


class Replay(GradientStrategy):
    """Experience replay: train on the experience's data plus a class-balanced reservoir buffer.

    The buffer (``buffer_size`` samples) is updated with the experience's data after training on it.
    """

    search_space = {**GradientStrategy.search_space, "buffer_size": Choice([200, 500, 1000, 2000])}
    parameter_constraints = {"buffer_size": Interval(int, 0)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", buffer_size: int = 500, **kw) -> None:
        super().__init__(info, seed=seed, device=device, **kw)
        self.buffer = ClassBalancedBuffer(buffer_size, self.generator)

    def training_data(self, exp: TrainView) -> TensorData:
        old = self.buffer.data()
        return exp.train.raw if old is None else TensorData.concat([exp.train.raw, old])

    def after_experience(self, exp: TrainView) -> None:
        self.buffer.update(exp.train.raw)

    def state_bytes(self) -> int:
        return tensor_bytes(self.model) + self.buffer.nbytes()
