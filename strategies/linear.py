"""Linear heads on frozen features: ``linear`` (finetune-style lower bound) and ``joint_linear`` (upper bound)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clbench.stream import StreamInfo, TensorData, TrainView
from clbench.constraints import Boolean, Interval

from .base import tensor_bytes
from .frozen import FrozenFeatureStrategy, as_features, l2_normalize
from .space import Choice, Float, Int


class LinearHead(FrozenFeatureStrategy):
    """A linear softmax head on frozen features trained by SGD on each experience only (lower bound).

    Inputs are L2-normalised (``normalize``) and scaled by ``scale`` (so that logits can be large):
    logits = W (s z) + b, loss = cross-entropy over all ``n_classes`` outputs, SGD with momentum,
    ``epochs`` passes per experience, no protection against forgetting.
    """

    search_space = {"lr": Float(1e-3, 1.0, log=True), "epochs": Int(1, 30), "batch_size": Choice([64, 128, 256])}
    parameter_constraints = {"lr": Interval(float, 0, None, "neither"), "epochs": Interval(int, 0), "batch_size": Interval(int, 1),
                             "momentum": Interval(float, 0, 1, "left"), "normalize": Boolean(),
                             "scale": Interval(float, 0, None, "neither")}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", lr: float = 0.05, epochs: int = 10,
                 batch_size: int = 128, momentum: float = 0.9, normalize: bool = True, scale: float = 10.0) -> None:
        super().__init__(info, seed=seed, device=device)
        self.lr, self.epochs, self.batch_size, self.momentum = lr, epochs, batch_size, momentum
        self.normalize, self.scale = normalize, scale
        self.generator = torch.Generator().manual_seed(seed)
        self.layer = self._new_layer()

    def _new_layer(self) -> torch.nn.Linear:
        layer = torch.nn.Linear(self.dim, self.info.n_classes)
        with torch.no_grad():
            layer.weight.normal_(0, 0.01, generator=self.generator)
            layer.bias.zero_()
        return layer

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        z = as_features(x)
        return self.scale * l2_normalize(z) if self.normalize else z

    def fit(self, data: TensorData) -> None:
        x, y = self.inputs(data.x), data.y
        opt = torch.optim.SGD(self.layer.parameters(), lr=self.lr, momentum=self.momentum)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(y), generator=self.generator).split(self.batch_size):
                loss = F.cross_entropy(self.layer(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def train_experience(self, exp: TrainView) -> None:
        self.observe_labels(exp.train.y)
        self.fit(exp.train)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.inputs(x))

    def state_bytes(self) -> int:
        return tensor_bytes(self.layer)


class JointLinear(LinearHead):
    """Upper bound: the same linear head retrained from scratch on all training features seen so far.

    After experience i the head is a joint model of experiences 0..i (it stores every feature seen).
    """

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", **kw) -> None:
        super().__init__(info, seed=seed, device=device, **kw)
        self.data: list[TensorData] = []

    def train_experience(self, exp: TrainView) -> None:
        self.observe_labels(exp.train.y)
        self.data.append(TensorData(as_features(exp.train.x), exp.train.y))
        self.layer = self._new_layer()
        self.fit(TensorData.concat(self.data))

    def state_bytes(self) -> int:
        return tensor_bytes(self.layer) + sum(d.nbytes() for d in self.data)
