"""The data types every stream generator produces and every strategy consumes.

* :class:`TensorData` holds samples as tensors, in their stored form: ``uint8`` images (N, C, H, W), decoded
  once, or ``float32`` inputs/features (N, ...). ``origin`` (optional) is each sample's index in the split of
  the dataset source it came from, kept through subsets, permutations and concatenations, so that two
  streams can be compared by which source samples they hold.
* :class:`TrainData` is what a strategy receives: ``x`` is float32 in the same domain as ``predict``'s input
  (uint8 images divided by 255), ``raw`` the stored form (compact, for buffers).
* :class:`Experience`, :class:`Stream` and :class:`StreamInfo` describe a stream and its static facts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch

SCENARIOS = ("class-il", "domain-il", "task-il")


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Inputs in the domain strategies see: uint8 images divided by 255, anything else as float32."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@dataclass(frozen=True)
class TensorData:
    """Samples held in memory as tensors (see the module docstring)."""

    x: torch.Tensor
    y: torch.Tensor
    origin: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")
        if self.y.dtype != torch.int64:
            object.__setattr__(self, "y", self.y.long())
        if self.origin is not None and self.origin.shape[0] != self.y.shape[0]:
            raise ValueError(f"origin has {self.origin.shape[0]} entries for {self.y.shape[0]} samples")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def float_x(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Inputs as float32; uint8 images are divided by 255."""
        return as_float(self.x if index is None else self.x[index])

    def subset(self, index: torch.Tensor) -> "TensorData":
        return TensorData(self.x[index], self.y[index], None if self.origin is None else self.origin[index])

    def with_x(self, x: torch.Tensor) -> "TensorData":
        """The same samples (labels, origins) with other inputs, e.g. permuted pixels or features."""
        return TensorData(x, self.y, self.origin)

    @staticmethod
    def concat(parts: list["TensorData"]) -> "TensorData":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("nothing to concatenate")
        origin = torch.cat([p.origin for p in parts]) if all(p.origin is not None for p in parts) else None
        return TensorData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]), origin)

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


class TrainData:
    """One experience's training data as a strategy sees it.

    * ``x``: float32 inputs in the same domain as ``predict``'s input (images scaled to [0, 1]), converted on
      first access;
    * ``y``: int64 labels; ``raw``: the stored :class:`TensorData` (uint8 images: 4x smaller, for buffers);
    * ``batches(batch_size, shuffle, generator, device)``: float minibatches without converting everything.
    """

    def __init__(self, data: TensorData) -> None:
        self.raw = data

    @cached_property
    def x(self) -> torch.Tensor:
        return self.raw.float_x()

    @property
    def y(self) -> torch.Tensor:
        return self.raw.y

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.raw.sample_shape

    def float_x(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        return self.raw.float_x(index)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.raw.batches(batch_size, shuffle, generator, device)

    def nbytes(self) -> int:
        return self.raw.nbytes()


@dataclass(frozen=True)
class TrainView:
    """What a strategy is given for one experience: the training data and public facts, nothing else.

    It carries no test data and no reference to the stream, so a strategy cannot see the future.
    """

    index: int
    task_id: int
    classes: tuple[int, ...]
    train: TrainData


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
        return TrainView(self.index, self.task_id, self.classes, TrainData(self.train))


@dataclass(frozen=True)
class StreamInfo:
    """The static facts a strategy is constructed with."""

    input_shape: tuple[int, ...]
    n_classes: int
    scenario: str  # "class-il" | "domain-il" | "task-il"


@dataclass(frozen=True)
class Stream:
    """A sequence of experiences plus how it was made (for the record).

    ``params`` describe how the stream was built (its dataset ``source`` among them) and go into every cell
    record. ``sources`` maps a split name to the source split the samples' ``origin`` indices point into
    (not part of the record; used to compare streams by content).
    """

    name: str
    scenario: str
    n_classes: int
    experiences: tuple[Experience, ...]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    sources: dict[str, TensorData] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; valid: {', '.join(SCENARIOS)}")

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    def with_experiences(self, experiences: tuple[Experience, ...] | list[Experience], **params: Any) -> "Stream":
        """The same stream (name, scenario, seed, sources) with other experiences and extra ``params``."""
        return replace(self, experiences=tuple(experiences), params={**self.params, **params})

    @property
    def info(self) -> StreamInfo:
        return StreamInfo(
            input_shape=self.experiences[0].train.sample_shape,
            n_classes=self.n_classes,
            scenario=self.scenario,
        )
