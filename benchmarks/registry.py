"""Named benchmarks: the contract configs and users rely on.

A benchmark is a function ``(seed, data_root, **params) -> Stream``. Its keyword parameters are
the config keys it accepts; ``rehearsal: {...}`` wraps any of them in a rehearsal environment.
Third-party benchmarks can be registered with :func:`register_benchmark` or named as
``module.path:function``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from clbench.errors import UserError, unknown_name

from . import datasets
from .paths import data_root as resolve_data_root
from .permuted import permuted_stream
from .rehearsal import schedule_from_config, with_rehearsal
from .split import split_stream
from .stream import Stream

BenchmarkFn = Callable[..., Stream]
_REGISTRY: dict[str, BenchmarkFn] = {}


def register_benchmark(name: str) -> Callable[[BenchmarkFn], BenchmarkFn]:
    def deco(fn: BenchmarkFn) -> BenchmarkFn:
        _REGISTRY[name] = fn
        return fn

    return deco


#: number of classes of each built-in source, so a config's split can be checked before any data is read
DATASET_CLASSES = {"digits": 10, "mnist": 10, "fmnist": 10, "cifar10": 10, "cifar100": 100}


def _split(dataset: str, name: str):
    def build(
        seed: int,
        data_root: Path,
        n_experiences: int | None = 5,
        base: int | None = None,
        increment: int | None = None,
        class_order: Sequence[int] | None = None,
        shuffle_classes: bool = True,
        classes: Sequence[int] | None = None,
        scenario: str = "class-il",
        download: bool = True,
    ) -> Stream:
        train, test = datasets.SOURCES[dataset](data_root, download=download)
        p = dict(n_experiences=n_experiences, base=base, increment=increment, classes=classes, scenario=scenario)
        return split_stream(
            name, train, test, seed=seed, n_experiences=n_experiences, base=base, increment=increment,
            class_order=class_order, shuffle_classes=shuffle_classes, classes=classes, scenario=scenario, params=p,
        )

    build.__name__ = name
    build.__doc__ = f"Class-incremental split {dataset}: classes partitioned into experiences (n equal or base+increment)."
    build.n_classes = DATASET_CLASSES.get(dataset)  # type: ignore[attr-defined]  # lets the config check the split
    return build


def _permuted(dataset: str, name: str, default_n: int):
    def build(seed: int, data_root: Path, n_experiences: int = default_n, first_identity: bool = True, download: bool = True) -> Stream:
        train, test = datasets.SOURCES[dataset](data_root, download=download)
        return permuted_stream(name, train, test, seed=seed, n_experiences=n_experiences, first_identity=first_identity,
                               params=dict(n_experiences=n_experiences, first_identity=first_identity))

    build.__name__ = name
    build.__doc__ = f"Domain-incremental permuted {dataset}: every experience all classes under its own pixel permutation."
    return build


for _name, _ds in [("split_digits", "digits"), ("split_mnist", "mnist"), ("split_fmnist", "fmnist"),
                   ("split_cifar10", "cifar10"), ("split_cifar100", "cifar100")]:
    register_benchmark(_name)(_split(_ds, _name))
for _name, _ds, _n in [("permuted_digits", "digits", 5), ("permuted_mnist", "mnist", 10)]:
    register_benchmark(_name)(_permuted(_ds, _name, _n))


def benchmark_names() -> list[str]:
    return sorted(_REGISTRY)


def resolve_benchmark(name: str) -> BenchmarkFn:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        mod, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"cannot load benchmark {name!r}: {exc}; fix: give module.path:function on the Python path") from None
    raise unknown_name("benchmark", name, _REGISTRY, "Or give module.path:function.")


RESERVED_KEYS = ("name", "rehearsal", "backbone", "label", "blurry")


def benchmark_params(name: str) -> dict[str, object]:
    """The config keys a benchmark accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
    sig = inspect.signature(resolve_benchmark(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in ("seed", "data_root")}


def build_stream(spec: dict, seed: int, data_root: str | Path | None = None) -> Stream:
    """Build the stream of one benchmark entry of a config (``{name: ..., <params>, rehearsal: {...}}``).

    ``backbone`` is not handled here (see the runner): it maps a built stream to features.
    """
    spec = dict(spec)
    name = spec.pop("name")
    rehearsal = spec.pop("rehearsal", None)
    blurry = spec.pop("blurry", None)
    for k in RESERVED_KEYS:
        spec.pop(k, None)
    fn = resolve_benchmark(name)
    valid = benchmark_params(name)
    bad = sorted(set(spec) - set(valid))
    if bad:
        raise UserError(f"benchmark {name!r} has no parameter(s) {bad}; valid: {', '.join(sorted(valid))}, rehearsal, backbone, label")
    stream = fn(seed=seed, data_root=resolve_data_root(data_root), **spec)
    if blurry is not None:
        from .blurry import with_blurry

        stream = with_blurry(stream, blurry, seed)
    if rehearsal:
        stream = with_rehearsal(stream, schedule_from_config(rehearsal), seed)
    return stream
