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

What the adapter adds to Avalanche's own work, and how it is kept small (profiled with cProfile on
permuted MNIST, MLP 2x1000, batch 256: fetching samples one by one through the Avalanche dataset was
the only cost above the bare loop worth naming; the per-iteration plugin callbacks are a few
microseconds, evaluation is clbench's loop):

* **Training minibatches** (:class:`TensorBatches`): when nothing can have changed the training data
  (the class keeps the template's ``train_dataset_adaptation`` and ``make_train_dataloader``, no plugin
  adapts the dataset), the experience's tensors are moved to the device once and each minibatch is one
  indexing operation in the order above, converted as the dataset's transform would (uint8 / 255).
  Otherwise the Avalanche dataset is read through a DataLoader in the same order.
* **A-GEM's reference batches**: Avalanche's ``AGEMPlugin`` reads ``sample_size // n_experiences``
  samples of each experience's memory per step *sequentially* (its ``GroupBalancedInfiniteDataLoader``
  has no shuffling; a group starts again at 0 when exhausted, its last batch shorter) through the
  dataset, sample by sample. The adapter keeps Avalanche's memory selection and reads each memory
  once into tensors on the device, then cuts the same batches by indexing: the same samples in the
  same order, without the per-sample cost (256 samples per step).
* **GEM's memory** is moved to the device once, instead of at every step.
* Python's ``random`` and numpy's global generator, which some Avalanche plugins draw from (A-GEM's
  memory selection uses ``random.shuffle``), are seeded from the cell seed and kept per strategy (the
  global states are restored after each experience), so such runs repeat exactly.

``precision: bfloat16`` runs the strategy's ``forward`` and ``criterion`` under autocast (a plugin's
own extra passes, e.g. A-GEM's reference gradient, stay float32).
"""

from __future__ import annotations

import inspect
import random
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from clbench.stream import StreamInfo, TensorData, TrainView, as_float
from clbench.constraints import problems
from clbench.errors import UserError, unknown_name

from .base import Strategy, tensor_bytes
from .gradient import GradientStrategy, ResidentData, autocast
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


#: the adapter's fast paths (tensor minibatches, A-GEM/GEM memory as device tensors); tests turn them off
#: to compare with Avalanche's own data path
FAST_PATHS = True


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


class TensorBatches:
    """``[x, y, task]`` minibatches of one experience, cut on the device in the order of :class:`EpochPermutationSampler`.

    Each pass (epoch) draws ``torch.randperm(n, generator)``; ``x`` is converted as the adapter's
    Avalanche dataset converts a sample (:func:`clbench.stream.as_float`), so the minibatches equal the
    DataLoader's, element for element. Each pass also draws the one number a DataLoader iterator draws from
    torch's global generator (its base seed), so a plugin drawing from that generator afterwards (GEM's
    memory selection) gets the same numbers as with the DataLoader.
    """

    def __init__(self, data: TensorData, task_id: int, batch_size: int, generator: torch.Generator,
                 device: torch.device) -> None:
        self.data = ResidentData(data, device)
        self.t = torch.full((len(data),), int(task_id), dtype=torch.int64, device=device)
        self.batch_size, self.generator = batch_size, generator

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        torch.empty((), dtype=torch.int64).random_()  # what torch.utils.data's iterator draws (_base_seed)
        d = self.data
        order = d.order(self.generator)
        for start in range(0, d.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield [as_float(d.x[idx]), d.y[idx], self.t[idx]]

    def __len__(self) -> int:
        return (self.data.n + self.batch_size - 1) // self.batch_size


def _is_default(obj: Any, name: str, *defaults: type) -> bool:
    """Whether ``type(obj).<name>`` is absent or inherited unchanged from one of ``defaults``."""
    fn = getattr(type(obj), name, None)
    return fn is None or any(fn is getattr(d, name, None) for d in defaults)


def data_untouched(av: Any) -> bool:
    """Whether the training data of ``av`` is exactly the experience's (nothing can have adapted it)."""
    from avalanche.core import BasePlugin, BaseSGDPlugin
    from avalanche.training.templates.base_sgd import BaseSGDTemplate

    if not _is_default(av, "train_dataset_adaptation", BaseSGDTemplate):
        return False
    hooks = ("before_train_dataset_adaptation", "after_train_dataset_adaptation")
    return all(_is_default(p, h, BasePlugin, BaseSGDPlugin) for p in av.plugins for h in hooks)


def _ordered_subclass(av_cls: type) -> type:
    """``av_cls`` with clbench's training order and data path, and ``precision`` applied to forward/criterion.

    The loader is replaced only if the class uses the template's; a strategy that builds its own keeps it.
    """
    from avalanche.training.templates.base_sgd import BaseSGDTemplate

    attrs: dict[str, Any] = {"__module__": av_cls.__module__}

    def forward(self):
        with autocast(self.device, self._clbench_precision):
            return av_cls.forward(self)

    def criterion(self):
        with autocast(self.device, self._clbench_precision):
            return av_cls.criterion(self)

    attrs.update(forward=forward, criterion=criterion)
    if getattr(av_cls, "make_train_dataloader", None) is BaseSGDTemplate.make_train_dataloader:
        def make_train_dataloader(self, num_workers: int = 0, shuffle: bool = True, **kwargs: Any) -> None:
            data, task_id = self._clbench_data
            if FAST_PATHS and data_untouched(self) and len(self.adapted_dataset) == len(data):
                self.dataloader = TensorBatches(data, task_id, self.train_mb_size, self._clbench_generator, self.device)
                return
            sampler = EpochPermutationSampler(len(self.adapted_dataset), self.train_mb_size, self._clbench_generator)
            self.dataloader = torch.utils.data.DataLoader(self.adapted_dataset, batch_sampler=sampler, num_workers=0)

        attrs["make_train_dataloader"] = make_train_dataloader
    return type(av_cls.__name__, (av_cls,), attrs)


def _read_all(dataset: Any, device: torch.device) -> list[torch.Tensor]:
    """Every item of an Avalanche dataset, in order, collated as its own loader would, on ``device``."""
    collate = getattr(dataset, "collate_fn", None) or torch.utils.data.default_collate
    batch = collate([dataset[i] for i in range(len(dataset))])
    return [b.to(device) for b in batch]


class SequentialMemory:
    """A-GEM's reference batches as Avalanche's ``GroupBalancedInfiniteDataLoader`` draws them, from tensors.

    Group g (the memory of experience g, n_g samples) yields consecutive slices of ``per =
    sample_size // n_groups`` indices 0.., the last one shorter, then starts again at 0 (a sequential
    BatchSampler, re-created when exhausted); a reference batch is the groups' slices concatenated in
    group order. A new group (after each experience) restarts every group at 0, as Avalanche builds a new
    loader then.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.groups: list[list[torch.Tensor]] = []
        self.cursor: list[int] = []
        self.per = 0

    def add(self, dataset: Any, sample_size: int) -> None:
        self.groups.append(_read_all(dataset, self.device))
        self.cursor = [0] * len(self.groups)
        self.per = sample_size // len(self.groups)

    def sample(self) -> list[torch.Tensor]:
        parts: list[list[torch.Tensor]] = []
        for g, group in enumerate(self.groups):
            n = len(group[0])
            start = self.cursor[g] if self.cursor[g] < n else 0
            stop = min(start + self.per, n)
            self.cursor[g] = stop
            parts.append([field[start:stop] for field in group])
        return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]


def _speed_up_plugins(av: Any, device: torch.device) -> None:
    """Tensor memories for Avalanche's A-GEM and GEM plugins (same samples, same order; see the module docstring)."""
    from avalanche.training.plugins.agem import AGEMPlugin
    from avalanche.training.plugins.gem import GEMPlugin

    for plugin in av.plugins:
        if type(plugin) is AGEMPlugin:
            memory = SequentialMemory(device)
            original = plugin.update_memory

            def update_memory(dataset, num_workers=0, _plugin=plugin, _memory=memory, _original=original, **kwargs):
                _original(dataset, num_workers=num_workers, **kwargs)
                _memory.add(_plugin.buffers[-1], _plugin.sample_size)

            plugin.update_memory = update_memory
            plugin.sample_from_memory = memory.sample
            plugin._clbench_memory = memory
        elif type(plugin) is GEMPlugin:
            original = plugin.update_memory

            def update_memory(dataset, t, batch_size, _plugin=plugin, _original=original):
                _original(dataset, t, batch_size)
                for store in (_plugin.memory_x, _plugin.memory_y, _plugin.memory_tid):
                    if t in store:
                        store[t] = store[t].to(device)

            plugin.update_memory = update_memory


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
        self.av._clbench_precision = self.precision
        self.av._clbench_data = None
        # Python's and numpy's global generators, as plugins draw from them, kept per strategy (seeded by the cell)
        self._py_random = random.Random(seed).getstate()
        self._np_random = np.random.RandomState(seed).get_state()
        if FAST_PATHS:
            _speed_up_plugins(self.av, self.device)

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
        self.av._clbench_data = (exp.train.raw, exp.task_id)
        outer_py, outer_np = random.getstate(), np.random.get_state()
        random.setstate(self._py_random)
        np.random.set_state(self._np_random)
        try:
            self.av.train(av_exp, eval_streams=[])
        finally:
            self._py_random, self._np_random = random.getstate(), np.random.get_state()
            random.setstate(outer_py)
            np.random.set_state(outer_np)
            self.av._clbench_data = None

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        model = self.av.model
        model.eval()
        with autocast(self.device, self.precision):
            return model(x.to(self.device)).float()

    def state_bytes(self) -> int:
        """The model plus any tensors an Avalanche plugin keeps as attributes (best effort)."""
        total = tensor_bytes(self.av.model)
        for plugin in getattr(self.av, "plugins", []):
            total += tensor_bytes(*[v for v in vars(plugin).values() if isinstance(v, (torch.Tensor, dict, list))])
            memory = getattr(plugin, "_clbench_memory", None)  # A-GEM's memory as tensors (the fast path)
            if isinstance(memory, SequentialMemory):
                total += tensor_bytes(memory.groups)
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
