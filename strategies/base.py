"""The Strategy API every continual-learning method implements."""

from __future__ import annotations

import abc
import inspect
from typing import Any, ClassVar

import torch

from clbench.benchmarks.stream import StreamInfo, TrainView

from .space import Param


class Strategy(abc.ABC):
    """A continual learner.

    Constructed with the stream's static facts (``info``: input shape, number of classes,
    scenario), a ``seed`` and a ``device``; its hyperparameters are the keyword arguments of the
    subclass's ``__init__`` (with defaults). It sees one :class:`TrainView` at a time and never a
    test set, a future experience or the stream.

    Class attributes:
      * ``search_space``: tunable hyperparameters (``{name: Float|Int|Choice}``);
      * ``wants_features``: True for frozen-feature methods: the runner hands them the cached
        feature stream of the configured backbone instead of raw inputs.
    """

    search_space: ClassVar[dict[str, Param]] = {}
    wants_features: ClassVar[bool] = False

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu") -> None:
        self.info = info
        self.seed = seed
        self.device = torch.device(device)

    @abc.abstractmethod
    def train_experience(self, exp: TrainView) -> None:
        """Learn from one experience's training data."""

    @abc.abstractmethod
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of shape (N, n_classes) (or predicted labels of shape (N,)) for float inputs."""

    def state_bytes(self) -> int:
        """Bytes the strategy keeps between experiences (model, buffers, statistics)."""
        return 0

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Names and defaults of the hyperparameters (keyword arguments of ``__init__``)."""
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if "__init__" not in vars(klass) or klass is object:
                continue
            for name, p in inspect.signature(klass.__init__).parameters.items():
                if name in ("self", "info", "seed", "device") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                out[name] = p.default
        return out


def tensor_bytes(*objs: Any) -> int:
    """Bytes held by tensors, modules, and (nested) lists/dicts of them."""
    total = 0
    for o in objs:
        if isinstance(o, torch.Tensor):
            total += o.element_size() * o.nelement()
        elif isinstance(o, torch.nn.Module):
            total += sum(t.element_size() * t.nelement() for t in list(o.parameters()) + list(o.buffers()))
        elif isinstance(o, dict):
            total += tensor_bytes(*o.values())
        elif isinstance(o, (list, tuple)):
            total += tensor_bytes(*o)
    return total


REQUIRED_METHODS = ("train_experience", "predict")


def check_strategy_class(cls: Any, name: str) -> None:
    """Refuse a plugged-in class that does not implement the API, naming what is missing."""
    from clbench.errors import UserError

    if not isinstance(cls, type):
        raise UserError(f"{name} is not a class; a strategy is a subclass of clbench.strategies.Strategy")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None)) or getattr(getattr(cls, m), "__isabstractmethod__", False)]
    if not issubclass(cls, Strategy):  # duck-typed classes also need what the runner calls on a Strategy
        missing += [m for m in ("hyperparameters", "state_bytes") if not callable(getattr(cls, m, None))]
    if missing:
        raise UserError(f"strategy {name} does not implement {', '.join(m + '()' for m in missing)}; "
                        "subclass clbench.strategies.Strategy and define it")
