"""The minibatch-gradient strategy template shared by finetune, replay, joint and the regularisers.

Device path: the data of an experience is moved to the strategy's device once (:class:`ResidentData`) and
minibatches are cut there by indexing; each epoch's order is ``torch.randperm(n, generator)`` drawn on the
CPU from the strategy's generator, so a run on a GPU sees the same minibatches as on the CPU. No DataLoader.
``precision: bfloat16`` runs the forward pass and the loss under ``torch.autocast`` (bfloat16 on the device);
parameters, gradients and optimiser state stay float32. The default ``float32`` changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from clbench.stream import StreamInfo, TensorData, TrainView, as_float
from clbench.constraints import Boolean, Interval, ListOf, Options
from clbench.errors import CellFailure

from .base import Strategy, tensor_bytes
from .models import MODELS, build_model
from .space import Choice, Float, Int

OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "bfloat16")


class ResidentData:
    """An experience's training data moved to ``device`` once, cut into minibatches there.

    Inputs stay in their stored form on the device (uint8 images: 4x less memory) and are converted per
    minibatch with :func:`clbench.stream.as_float`, the conversion of :meth:`TensorData.batches`. The
    order of an epoch is ``torch.randperm(n, generator=generator)`` with the strategy's CPU generator
    (then moved to the device), so every device sees the minibatches of a CPU run, in the same order.
    On the CPU nothing is copied.
    """

    def __init__(self, data: TensorData, device: torch.device) -> None:
        self.n = len(data)
        self.device = device
        self.x = data.x.to(device)
        self.y = data.y.to(device)

    def __len__(self) -> int:
        return self.n

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """One epoch's order: drawn on the CPU from ``generator``, then placed on the device."""
        order = torch.randperm(self.n, generator=generator)
        return order if self.device.type == "cpu" else order.to(self.device, non_blocking=True)

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(generator)
        for start in range(0, self.n, batch_size):
            idx = order[start : start + batch_size]
            yield as_float(self.x[idx]), self.y[idx]


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op context for float32)."""
    if precision == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class GradientStrategy(Strategy):
    """Train a model with minibatch SGD/Adam on each experience's data.

    Subclasses change *what* is trained on (:meth:`training_data`), add a loss term
    (:meth:`penalty`), or act around an experience (:meth:`before_experience`,
    :meth:`after_experience`). Loss = cross-entropy over all ``n_classes`` outputs (+ penalty).
    A non-finite loss fails the cell with a message naming the experience and epoch.
    The experience's data is moved to the device once (:class:`ResidentData`); ``precision: bfloat16`` runs
    forward and loss under autocast (see the module docstring). Several seeds can train as one vectorised
    ensemble (:mod:`clbench.strategies.ensemble`; finetune, replay, ewc, lwf).
    """

    search_space = {
        "lr": Float(1e-4, 0.3, log=True),
        "epochs": Int(1, 10),
        "batch_size": Choice([32, 64, 128, 256]),
    }
    parameter_constraints = {
        "lr": Interval(float, 0, None, "neither"), "epochs": Interval(int, 0), "batch_size": Interval(int, 1),
        "optimizer": Options(*OPTIMIZERS), "momentum": Interval(float, 0, 1, "left"), "weight_decay": Interval(float, 0),
        "model": Options(*MODELS), "hidden": ListOf(Interval(int, 1)), "dropout": Interval(float, 0, 1, "left"),
        "batchnorm": Boolean(), "width": Interval(int, 1), "reset_optimizer": Boolean(),
        "precision": Options(*PRECISIONS),
    }

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", lr: float = 0.01, epochs: int = 1,
                 batch_size: int = 64, optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
                 model: str = "auto", hidden: Sequence[int] = (1000, 1000), dropout: float = 0.0,
                 batchnorm: bool = False, width: int = 20, reset_optimizer: bool = False,
                 precision: str = "float32") -> None:
        super().__init__(info, seed=seed, device=device)
        self.lr, self.epochs, self.batch_size = lr, epochs, batch_size
        self.optimizer_name, self.momentum, self.weight_decay = optimizer, momentum, weight_decay
        self.model_spec = dict(kind=model, input_shape=info.input_shape, n_classes=info.n_classes,
                               hidden=tuple(hidden), dropout=dropout, batchnorm=batchnorm, width=width)
        self.reset_optimizer = reset_optimizer
        self.precision = precision
        self.generator = torch.Generator().manual_seed(seed)
        self.model = build_model(**self.model_spec).to(self.device)
        self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    # ---- hooks
    def training_data(self, exp: TrainView) -> TensorData:
        return exp.train.raw

    def before_experience(self, exp: TrainView) -> None:
        if self.reset_optimizer:
            self.optimizer = self.make_optimizer()

    def after_experience(self, exp: TrainView) -> None:
        pass

    def penalty(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        return None

    def loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        extra = self.penalty(x, y, logits)
        return loss if extra is None else loss + extra

    # ---- API
    def train_experience(self, exp: TrainView) -> None:
        self.before_experience(exp)
        data = self.training_data(exp)
        self.fit(data, exp.index)
        self.after_experience(exp)

    #: hyperparameters that scale a penalty, named in the divergence message when the strategy has them
    PENALTY_KNOBS = ("ewc_lambda", "si_lambda", "alpha", "lambda_reg", "memory_strength")
    #: the last epoch's mean cross-entropy above this many times ln(n_classes) (a uniform guess) is divergence
    DIVERGENCE_FACTOR = 10.0

    def divergence_hint(self) -> str:
        """``lower lr (now 0.1)`` plus the penalty strengths this strategy has, with their values."""
        knobs = [f"lr (now {self.lr:g})"] + [f"{k} (now {getattr(self, k):g})" for k in self.PENALTY_KNOBS
                                            if k in self.hyperparameters() and isinstance(getattr(self, k, None), (int, float))]
        return "lower " + " or ".join(knobs)

    def fit(self, data: TensorData, exp_index: int) -> None:
        """Minibatch training for ``epochs`` epochs; divergence fails the cell whatever the optimiser.

        Divergence: a non-finite loss in an epoch, or a last epoch whose mean cross-entropy (without the
        penalty) is above ``DIVERGENCE_FACTOR`` x ln(n_classes), the loss of a uniform guess (healthy training
        ends far below it; an exploded model, e.g. Adam at lr 1e6, far above).
        """
        self.model.train()
        mean_ce = float("nan")
        resident = ResidentData(data, self.device)  # moved once; minibatches cut on the device
        for epoch in range(self.epochs):
            total = torch.zeros((), device=self.device)
            ce_sum = torch.zeros((), device=self.device)
            n = 0
            for x, y in resident.batches(self.batch_size, self.generator):
                with autocast(self.device, self.precision):
                    logits = self.model(x)
                    loss = self.loss(x, y, logits)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += loss.detach()
                ce_sum += F.cross_entropy(logits.detach().float(), y) * len(y)
                n += len(y)
            if not torch.isfinite(total):
                raise CellFailure(f"training diverged: non-finite loss at experience {exp_index}, epoch {epoch}; "
                                  f"fix: {self.divergence_hint()}")
            mean_ce = float(ce_sum) / max(1, n)
            self.callbacks.on_epoch_end(exp_index, epoch, mean_ce)
        limit = self.DIVERGENCE_FACTOR * math.log(max(2, self.info.n_classes))
        if mean_ce > limit:
            raise CellFailure(f"training diverged at experience {exp_index}: the last epoch's mean cross-entropy {mean_ce:.3g} "
                              f"is above {limit:.3g} ({self.DIVERGENCE_FACTOR:g} x ln {self.info.n_classes}, the loss of a "
                              f"uniform guess); fix: {self.divergence_hint()}")

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with autocast(self.device, self.precision):
            return self.model(x.to(self.device)).float()

    def state_bytes(self) -> int:
        return tensor_bytes(self.model)
