"""Run any ``avalanche.training`` strategy as a clbench strategy (``avalanche.<Name>`` in a config).

The adapter builds the model and optimiser exactly as clbench's gradient strategies do (same
``model``/``hidden``/... keys, same initialisation under the cell seed, same ``lr``/``optimizer``
keys), hands them to the Avalanche strategy class, and for each clbench experience calls the
strategy's ``train`` on an Avalanche experience holding that experience's training data (its
index as ``current_experience``, its task label). Evaluation is clbench's loop calling
:meth:`predict` on the Avalanche strategy's model, so the accuracy matrix is comparable with
native strategies.

Keys of a config entry:
  * clbench keys: ``lr, epochs, batch_size, optimizer, momentum, weight_decay, reset_optimizer,
    model, hidden, dropout, batchnorm, width`` (``epochs`` -> ``train_epochs``, ``batch_size`` ->
    ``train_mb_size``);
  * any named keyword argument of the Avalanche class (e.g. ``ewc_lambda`` for ``avalanche.EWC``,
    ``patterns_per_exp``/``memory_strength`` for ``avalanche.GEM``); required ones must be given.
``model, optimizer, criterion, train_mb_size, train_epochs, eval_mb_size, device, plugins,
evaluator, eval_every`` are set by the adapter. Anything else is one UserError listing the valid keys.

Data order: when the Avalanche class uses the template's default training loader, it is replaced
by one that draws each epoch's order as ``torch.randperm(n, generator)`` from a generator seeded
with the cell seed, the order clbench's native loop uses; so ``avalanche.Naive`` and ``finetune``
with the same model, optimiser and seed see the same minibatches.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch

from clbench.stream import StreamInfo, TrainView
from clbench.constraints import problems
from clbench.errors import UserError, unknown_name

from .base import Strategy, tensor_bytes
from .gradient import GradientStrategy
from .space import Choice, Float, Param

# set by the adapter; the value tells the user what to write instead
# (``model`` and ``optimizer`` are clbench keys: the model kind and the optimiser name)
MANAGED = {
    "model": "use clbench's model/hidden/dropout/batchnorm/width keys",
    "optimizer": "use optimizer: sgd|adam with lr/momentum/weight_decay",
    "criterion": "cross-entropy is used",
    "train_mb_size": "use batch_size",
    "train_epochs": "use epochs",
    "eval_mb_size": "clbench's loop evaluates",
    "device": "use the config's device",
    "plugins": "not configurable from a config",
    "evaluator": "clbench's loop evaluates",
    "eval_every": "clbench's loop evaluates",
}

# tunable ranges of the best-known Avalanche hyperparameters (others can be given in a tune config)
KNOWN_SPACES: dict[str, dict[str, Param]] = {
    "EWC": {"ewc_lambda": Float(1e-2, 1e4, log=True)},
    "SynapticIntelligence": {"si_lambda": Float(1e-3, 10.0, log=True)},
    "LwF": {"alpha": Float(0.1, 10.0, log=True), "temperature": Choice([0.5, 1.0, 2.0, 4.0])},
    "GEM": {"memory_strength": Float(0.0, 1.0), "patterns_per_exp": Choice([64, 256, 1000])},
    "AGEM": {"patterns_per_exp": Choice([64, 256, 1000]), "sample_size": Choice([64, 256, 1000])},
    "Replay": {"mem_size": Choice([200, 500, 1000, 2000])},
    "MAS": {"lambda_reg": Float(1e-2, 10.0, log=True)},
}


def _base_template() -> type:
    try:
        from avalanche.training.templates import BaseTemplate
    except ModuleNotFoundError:
        raise UserError("avalanche.* strategies need avalanche-lib; fix: pip install 'avalanche-lib>=0.6'") from None
    return BaseTemplate


def avalanche_classes() -> dict[str, type]:
    """Every strategy class exported by ``avalanche.training`` (subclasses of its BaseTemplate)."""
    base = _base_template()
    import avalanche.training as avt

    return {n: c for n, c in vars(avt).items() if isinstance(c, type) and issubclass(c, base) and not n.startswith("_")
            and "templates" not in c.__module__}


def avalanche_kwargs(av_cls: type) -> dict[str, Any]:
    """Named keyword arguments of an Avalanche strategy class and their defaults (``inspect.Parameter.empty`` if required)."""
    out: dict[str, Any] = {}
    for name, p in inspect.signature(av_cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or name in MANAGED:
            continue
        out[name] = p.default
    return out


def _clbench_keys() -> dict[str, Any]:
    return GradientStrategy.hyperparameters()


class EpochPermutationSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of ``torch.randperm(n, generator)`` per pass: the order of clbench's native loop."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator)
        for start in range(0, self.n, self.batch_size):
            yield order[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


def _ordered_subclass(av_cls: type) -> type:
    """``av_cls`` with its training loader drawing clbench's order (only if it uses the template's loader)."""
    from avalanche.training.templates.base_sgd import BaseSGDTemplate

    if getattr(av_cls, "make_train_dataloader", None) is not BaseSGDTemplate.make_train_dataloader:
        return av_cls  # the strategy builds its own loader: keep it

    def make_train_dataloader(self, num_workers: int = 0, shuffle: bool = True, **kwargs: Any) -> None:
        sampler = EpochPermutationSampler(len(self.adapted_dataset), self.train_mb_size, self._clbench_generator)
        self.dataloader = torch.utils.data.DataLoader(self.adapted_dataset, batch_sampler=sampler, num_workers=0)

    return type(av_cls.__name__, (av_cls,), {"make_train_dataloader": make_train_dataloader, "__module__": av_cls.__module__})


class AvalancheStrategy(GradientStrategy):
    """Base of the adapter classes; :func:`avalanche_strategy_class` makes one per Avalanche name."""

    avalanche_name: ClassVar[str] = ""

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", **kwargs: Any) -> None:
        av_cls = self.avalanche_class()
        own = {k: v for k, v in kwargs.items() if k in _clbench_keys()}
        av_kw = self.check_kwargs(kwargs)
        super().__init__(info, seed=seed, device=device, **own)
        from avalanche.training.plugins import EvaluationPlugin

        cls = _ordered_subclass(av_cls)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No loggers specified")  # clbench's loop evaluates
            evaluator = EvaluationPlugin(loggers=[])
        try:
            self.av = cls(model=self.model, optimizer=self.optimizer, criterion=torch.nn.CrossEntropyLoss(),
                          train_mb_size=self.batch_size, train_epochs=self.epochs, eval_mb_size=1024,
                          device=self.device, evaluator=evaluator, eval_every=-1, **av_kw)
        except (TypeError, ValueError, AssertionError) as exc:
            raise UserError(f"avalanche.{self.avalanche_name} rejected its arguments {sorted(av_kw)}: {exc}") from None
        self.av._clbench_generator = self.generator

    @classmethod
    def avalanche_class(cls) -> type:
        classes = avalanche_classes()
        if cls.avalanche_name not in classes:
            raise unknown_name("Avalanche strategy", cls.avalanche_name, classes, "Give avalanche.<Name> with a class of avalanche.training.")
        return classes[cls.avalanche_name]

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """clbench's gradient keys plus the Avalanche class's own keyword arguments."""
        return {**_clbench_keys(), **avalanche_kwargs(cls.avalanche_class())}

    @classmethod
    def parameter_problems(cls, params: Mapping[str, Any]) -> list[str]:
        """Unknown, managed or missing Avalanche keys, then the clbench keys' constraints."""
        try:
            cls.check_kwargs(dict(params))
        except UserError as exc:
            return [str(exc)]
        own = _clbench_keys()
        return problems({k: v for k, v in params.items() if k in own}, cls.constraints())

    @classmethod
    def check_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The Avalanche-specific part of ``kwargs``; one UserError for unknown, managed or missing keys."""
        own, theirs = _clbench_keys(), avalanche_kwargs(cls.avalanche_class())
        name = f"avalanche.{cls.avalanche_name}"
        managed = sorted(k for k in kwargs if k in MANAGED and k not in own)
        if managed:
            raise UserError(f"{name}: {', '.join(f'{k!r} is set by the adapter ({MANAGED[k]})' for k in managed)}")
        bad = sorted(set(kwargs) - set(own) - set(theirs))
        if bad:
            raise UserError(f"{name} has no hyperparameter(s) {bad}; valid: {', '.join(sorted(theirs))} "
                            f"(Avalanche) and {', '.join(sorted(own))} (clbench)")
        missing = sorted(k for k, d in theirs.items() if d is inspect.Parameter.empty and k not in kwargs)
        if missing:
            raise UserError(f"{name} needs {', '.join(missing)}; fix: add {', '.join(f'{k}: <value>' for k in missing)} to its config entry")
        return {k: v for k, v in kwargs.items() if k in theirs}

    def train_experience(self, exp: TrainView) -> None:
        from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
        from avalanche.benchmarks.scenarios.task_aware import with_task_labels

        from clbench.benchmarks.avalanche_interop import to_avalanche_dataset

        if self.reset_optimizer:
            self.optimizer = self.make_optimizer()
            self.av.optimizer = self.optimizer
        av_exp = DatasetExperience(dataset=to_avalanche_dataset(exp.train.raw, exp.task_id), current_experience=exp.index)
        av_exp = with_task_labels(av_exp)
        av_exp.classes_in_this_experience = set(exp.classes)
        self.av.train(av_exp, eval_streams=[])

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        model = self.av.model
        model.eval()
        return model(x.to(self.device))

    def state_bytes(self) -> int:
        """The model plus any tensors an Avalanche plugin keeps as attributes (best effort)."""
        total = tensor_bytes(self.av.model)
        for plugin in getattr(self.av, "plugins", []):
            total += tensor_bytes(*[v for v in vars(plugin).values() if isinstance(v, (torch.Tensor, dict, list))])
        return total


def avalanche_strategy_class(name: str) -> type[Strategy]:
    """A clbench Strategy class running ``avalanche.training.<name>`` (see the module docstring)."""
    classes = avalanche_classes()
    if name not in classes:
        raise unknown_name("Avalanche strategy", name, classes, "Give avalanche.<Name> with a class of avalanche.training.")
    av_cls = classes[name]
    space = {**GradientStrategy.search_space, **KNOWN_SPACES.get(name, {})}
    doc = f"Avalanche's {name} through the adapter (avalanche.training.{name})."
    return type(f"Avalanche{name}", (AvalancheStrategy,), {"avalanche_name": name, "search_space": space,
                                                            "__doc__": doc, "__module__": __name__})
