"""The data types every stream generator produces and every strategy consumes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class TensorData:
    """Samples held in memory as tensors.

    ``x`` is either ``uint8`` images of shape (N, C, H, W) (decoded once, scaled to [0, 1] floats
    batch by batch with :meth:`float_x`) or ``float32`` features/inputs of any shape (N, ...).
    ``y`` holds int64 labels of shape (N,).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")
        if self.y.dtype != torch.int64:
            object.__setattr__(self, "y", self.y.long())

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def float_x(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Inputs as float32; uint8 images are divided by 255."""
        x = self.x if index is None else self.x[index]
        if x.dtype == torch.uint8:
            return x.float().div_(255.0)
        return x.float()

    def subset(self, index: torch.Tensor) -> "TensorData":
        return TensorData(self.x[index], self.y[index])

    @staticmethod
    def concat(parts: list["TensorData"]) -> "TensorData":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("nothing to concatenate")
        return TensorData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(float inputs, labels)`` minibatches by tensor indexing (no DataLoader, no PIL)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            xb = self.float_x(idx)
            yb = self.y[idx]
            if str(device) != "cpu":
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            yield xb, yb

    def nbytes(self) -> int:
        return self.x.element_size() * self.x.nelement() + self.y.element_size() * self.y.nelement()


@dataclass(frozen=True)
class TrainView:
    """What a strategy is given for one experience: the training data and public facts, nothing else.

    It carries no test data and no reference to the stream, so a strategy cannot see the future.
    """

    index: int
    task_id: int
    classes: tuple[int, ...]
    train: TensorData


@dataclass(frozen=True)
class Experience:
    """One step of a stream: training and test data of the same task/classes."""

    index: int
    task_id: int
    classes: tuple[int, ...]
    train: TensorData
    test: TensorData
    info: dict[str, Any] = field(default_factory=dict)

    def train_view(self) -> TrainView:
        return TrainView(self.index, self.task_id, self.classes, self.train)


@dataclass(frozen=True)
class StreamInfo:
    """The static facts a strategy is constructed with."""

    input_shape: tuple[int, ...]
    n_classes: int
    scenario: str  # "class-il" | "domain-il" | "task-il"


SCENARIOS = ("class-il", "domain-il", "task-il")


@dataclass(frozen=True)
class Stream:
    """A sequence of experiences plus how it was made (for the record)."""

    name: str
    scenario: str
    n_classes: int
    experiences: tuple[Experience, ...]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; valid: {', '.join(SCENARIOS)}")

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    @property
    def info(self) -> StreamInfo:
        return StreamInfo(
            input_shape=self.experiences[0].train.sample_shape,
            n_classes=self.n_classes,
            scenario=self.scenario,
        )
