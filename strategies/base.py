"""The Strategy API every continual-learning method implements, and the checks of its contract.

What a strategy receives and must return:

* ``__init__(info, *, seed, device, **hyperparameters)``: ``info`` is a :class:`~clbench.stream.StreamInfo`
  (``input_shape`` of one sample, ``n_classes``, ``scenario``); the hyperparameters are the keyword arguments
  of the subclass's ``__init__`` with their defaults.
* ``train_experience(exp)``: ``exp`` is a :class:`~clbench.stream.TrainView` (``index``, ``task_id``,
  ``classes``, ``train``); ``exp.train.x`` is float32 in the same domain as ``predict``'s input (images in
  [0, 1]), ``exp.train.y`` int64 labels, ``exp.train.raw`` the stored form (uint8 images, for compact buffers),
  ``exp.train.batches(...)`` float minibatches. No test data, no later experience, no stream object.
* ``predict(x)``: ``x`` float32 of shape (N, *input_shape); returns scores (N, n_classes) (finite) or labels
  (N,) in 0..n_classes-1. The loop checks this (:func:`predicted_labels`) and fails the cell otherwise.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from clbench.callbacks import NO_CALLBACKS, Callbacks
from clbench.constraints import Constraint, problems, signature_constraints
from clbench.errors import CellFailure, UserError
from clbench.stream import SCENARIOS, StreamInfo, TrainView

from .space import Param

RESERVED_ARGS = ("self", "info", "seed", "device")


class Strategy(abc.ABC):
    """A continual learner (see the module docstring for the contract).

    Class attributes:
      * ``search_space``: tunable hyperparameters (``{name: Float|Int|Choice}``);
      * ``parameter_constraints``: valid values of hyperparameters (``{name: Constraint}``, see
        :mod:`clbench.constraints`), checked before anything runs; hyperparameters without one are checked
        against their ``__init__`` annotation;
      * ``wants_features``: True for frozen-feature methods: the runner hands them the cached feature stream
        of the configured backbone instead of raw inputs;
      * ``online``: True when the strategy can learn an experience in consecutive chunks (task-free), which
        lets the loop evaluate it every ``eval_period`` samples (anytime accuracy);
      * ``scenarios``: the scenarios the strategy supports (``clbench check`` tests each).
    """

    search_space: ClassVar[dict[str, Param]] = {}
    parameter_constraints: ClassVar[dict[str, Constraint]] = {}
    wants_features: ClassVar[bool] = False
    online: ClassVar[bool] = False
    scenarios: ClassVar[tuple[str, ...]] = SCENARIOS

    #: loop events the strategy may emit (``on_epoch_end``); set by the loop, no-op otherwise
    callbacks: Callbacks = NO_CALLBACKS

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

    # ---- hooks the runner calls (no-ops unless a strategy needs them)
    def unlabelled_request(self) -> str | None:
        """Unlabelled data the strategy asks for before training (e.g. kvb's keys), or None.

        ``"all_experiences_unlabelled"`` asks for the inputs of every experience of the stream (this sees the
        future: the cell record marks it); a dataset source name (``"fmnist"``, ``"cifar100"``) asks for that
        dataset's training inputs, passed through the cell's backbone.
        """
        return None

    def receive_unlabelled(self, x: torch.Tensor) -> None:
        """The runner's answer to :meth:`unlabelled_request`: inputs without labels (float, as ``predict`` gets)."""

    # ---- hyperparameters
    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Names and defaults of the hyperparameters (keyword arguments of ``__init__``)."""
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if "__init__" not in vars(klass) or klass is object:
                continue
            for name, p in inspect.signature(klass.__init__).parameters.items():
                if name in RESERVED_ARGS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                out[name] = p.default
        return out

    @classmethod
    def constraints(cls) -> dict[str, Constraint]:
        """Every hyperparameter's constraint: declared ones, else the ``__init__`` annotations' types."""
        out: dict[str, Constraint] = {}
        for klass in reversed(cls.__mro__):
            if "__init__" in vars(klass) and klass is not object:
                out.update(signature_constraints(klass.__init__, RESERVED_ARGS))
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("parameter_constraints", {}) or {})
        return out

    @classmethod
    def parameter_problems(cls, params: Mapping[str, Any]) -> list[str]:
        """Unknown hyperparameters and values that break their constraint (empty when all is well)."""
        valid = cls.hyperparameters()
        bad = sorted(set(params) - set(valid))
        out = [f"strategy {cls.__name__} has no hyperparameter(s) {bad}; valid: {', '.join(sorted(valid)) or '(none)'}"] if bad else []
        missing = sorted(k for k, v in valid.items() if v is inspect.Parameter.empty and k not in params)
        if missing:
            out.append(f"needs {', '.join(missing)} (no default)")
        return out + problems({k: v for k, v in params.items() if k in valid}, cls.constraints())


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
    if not isinstance(cls, type):
        raise UserError(f"{name} is not a class; a strategy is a subclass of clbench.strategies.Strategy")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None)) or getattr(getattr(cls, m), "__isabstractmethod__", False)]
    if not issubclass(cls, Strategy):
        raise UserError(f"{name} is not a subclass of clbench.strategies.Strategy; fix: derive it from Strategy "
                        "(it provides hyperparameters(), constraints and the hooks the runner calls)")
    if missing:
        raise UserError(f"strategy {name} does not implement {', '.join(m + '()' for m in missing)}; "
                        "subclass clbench.strategies.Strategy and define it")


def predicted_labels(out: Any, n: int, n_classes: int) -> torch.Tensor:
    """Labels (N,) from ``predict``'s output, or :class:`~clbench.errors.CellFailure` saying what was expected.

    Accepted: scores (N, n_classes) with no NaN and no +inf (``-inf`` masks a class), or int labels (N,) in
    0..n_classes-1.
    """
    expect = f"expected scores of shape ({n}, {n_classes}) or integer labels of shape ({n},) in 0..{n_classes - 1}"
    if not isinstance(out, torch.Tensor):
        raise CellFailure(f"predict returned a {type(out).__name__}, not a tensor; {expect}")
    if out.ndim == 2 and tuple(out.shape) == (n, n_classes):
        if out.is_floating_point():
            if torch.isnan(out).any() or torch.isposinf(out).any():
                bad = int((torch.isnan(out) | torch.isposinf(out)).any(1).sum())
                raise CellFailure(f"predict returned non-finite scores (NaN or +inf) for {bad} of {n} samples; {expect}")
            if n and torch.isneginf(out).all(1).any():
                raise CellFailure(f"predict returned -inf for every class of some samples; {expect}")
        return out.argmax(1)
    if out.ndim == 1 and out.shape[0] == n and not out.is_floating_point() and out.dtype != torch.bool:
        if n and (int(out.min()) < 0 or int(out.max()) >= n_classes):
            raise CellFailure(f"predict returned labels {int(out.min())}..{int(out.max())}, outside 0..{n_classes - 1}; {expect}")
        return out.long()
    raise CellFailure(f"predict returned a {out.dtype} tensor of shape {tuple(out.shape)}; {expect}")
