"""Named benchmarks: the contract configs and users rely on.

A :class:`BenchmarkSpec` holds a builder ``(seed, data_root, cache_dir, **params) -> Stream``, its
parameters with defaults, their value constraints and the dataset source it reads (if known). The
builder's own rules (:meth:`BenchmarkSpec.problems`) are checked by the config layer before any data is
read. Wrappers apply to any benchmark entry: ``rehearsal: {...}`` (power-law and other rehearsal
environments), ``blurry: {...}`` (generalized class-incremental), ``backbone:`` (frozen features, applied
by the runner). Third-party benchmarks are named as ``module.path:function`` (parameters = its keyword
arguments, constraints from their annotations or a ``parameter_constraints`` attribute of the function)
or registered with :func:`register_benchmark`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.constraints import Boolean, Constraint, problems, signature_constraints
from clbench.errors import UserError, unknown_name
from clbench.paths import data_root as resolve_data_root
from clbench.stream import Stream

from .blurry import blurry_problems, with_blurry
from .imagefolders import benchmark_entries as image_folder_entries
from .permuted import PERMUTED_CONSTRAINTS, permuted_problems, permuted_stream
from .rehearsal import rehearsal_problems, schedule_from_config, with_rehearsal
from .sources import SOURCES, DatasetSource
from .split import SPLIT_CONSTRAINTS, split_problems, split_stream

#: keys of a benchmark entry that are not the builder's parameters
WRAPPER_KEYS = ("name", "label", "rehearsal", "blurry", "backbone")
BUILDER_ARGS = ("seed", "data_root", "cache_dir")


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark: builder, parameters and defaults, constraints, dataset source, one-line description."""

    name: str
    build: Callable[..., Stream]
    doc: str
    defaults: Mapping[str, Any]
    constraints: Mapping[str, Constraint] = field(default_factory=dict)
    source: DatasetSource | None = None
    check: Callable[[Mapping[str, Any]], list[str]] | None = None  # cross-parameter rules

    def problems(self, params: Mapping[str, Any]) -> list[str]:
        """Every problem of ``params`` (the entry without wrapper keys): unknown keys, bad values, split arithmetic."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            return [f"benchmark {self.name!r} has no parameter(s) {unknown}; valid: "
                    f"{', '.join(sorted(self.defaults))}, plus {', '.join(WRAPPER_KEYS[1:])}"]
        missing = sorted(k for k, v in self.defaults.items() if v is inspect.Parameter.empty and k not in params)
        if missing:
            return [f"benchmark {self.name!r} needs {', '.join(missing)}"]
        out = problems(params, self.constraints)
        if not out and self.check is not None:
            out = self.check({**{k: v for k, v in self.defaults.items() if v is not inspect.Parameter.empty}, **params})
        return out

    def __call__(self, seed: int, data_root: str | Path | None = None, cache_dir: str | None = None, **params: Any) -> Stream:
        return self.build(seed=seed, data_root=resolve_data_root(data_root), cache_dir=cache_dir, **params)


_REGISTRY: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    _REGISTRY[spec.name] = spec
    return spec


def split_spec(source: DatasetSource) -> BenchmarkSpec:
    name = f"split_{source.name}"

    def build(seed: int, data_root: Path, cache_dir: str | None = None, download: bool = True, **p: Any) -> Stream:
        data = source.load(Path(data_root), download, cache_dir)
        rec = {k: p.get(k) for k in ("n_experiences", "base", "increment", "classes", "scenario") if k in p}
        return split_stream(name, data, seed=seed, **p, params=rec)

    defaults = {"n_experiences": 5, "base": None, "increment": None, "class_order": None, "shuffle_classes": True,
                "classes": None, "scenario": "class-il", "download": True}
    return BenchmarkSpec(name, build, f"Class-incremental split {source.title}: classes partitioned into experiences "
                                      f"(n equal or base+increment).", defaults,
                         {**SPLIT_CONSTRAINTS, "download": Boolean()}, source,
                         lambda p: split_problems(p, source.n_classes))


def permuted_spec(source: DatasetSource, default_n: int, name: str | None = None) -> BenchmarkSpec:
    name = name or f"permuted_{source.name}"

    def build(seed: int, data_root: Path, cache_dir: str | None = None, download: bool = True, **p: Any) -> Stream:
        data = source.load(Path(data_root), download, cache_dir)
        return permuted_stream(name, data, seed=seed, **p, params=dict(p))

    defaults = {"n_experiences": default_n, "first_identity": True, "train_per_task": None, "test_per_task": None,
                "download": True}
    return BenchmarkSpec(name, build, f"Domain-incremental permuted {source.title}: every experience all classes under "
                                      f"its own pixel permutation (optionally on a seed-drawn subset per task).",
                         defaults, {**PERMUTED_CONSTRAINTS, "download": Boolean()}, source,
                         lambda p: permuted_problems(p, source.split_sizes))


for _src in ("digits", "mnist", "fmnist", "cifar10", "cifar100"):
    register_benchmark(split_spec(SOURCES[_src]))
for _src, _n in (("digits", 5), ("mnist", 10), ("fmnist", 10)):
    register_benchmark(permuted_spec(SOURCES[_src], _n))
# image folders and the published layouts (CIFAR-100 in the field's order, ImageNet-R/A, CUB-200, CORe50)
for _e in image_folder_entries():
    register_benchmark(BenchmarkSpec(_e.name, _e.build, _e.doc, _e.defaults, _e.constraints, _e.source, _e.check))


def benchmark_names() -> list[str]:
    return sorted(_REGISTRY)


def _plugin_spec(name: str) -> BenchmarkSpec:
    mod, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except ModuleNotFoundError as exc:
        raise UserError(f"cannot import {mod!r} for benchmark {name!r} ({exc}); fix: install it or put it on PYTHONPATH") from None
    except AttributeError:
        raise UserError(f"module {mod!r} has no function {attr!r} (benchmark {name!r})") from None
    except Exception as exc:  # noqa: BLE001 - the module itself failed
        raise UserError(f"importing {mod!r} for benchmark {name!r} failed: {type(exc).__name__}: {exc}") from None
    if isinstance(fn, BenchmarkSpec):
        return fn
    if not callable(fn):
        raise UserError(f"{name} is not a function; a benchmark is a function (seed, data_root, **params) -> Stream")
    sig = inspect.signature(fn)
    defaults = {k: p.default for k, p in sig.parameters.items()
                if k not in BUILDER_ARGS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    takes_cache = "cache_dir" in sig.parameters

    def build(seed: int, data_root: Path, cache_dir: str | None = None, **p: Any) -> Stream:
        return fn(seed=seed, data_root=data_root, **({"cache_dir": cache_dir} if takes_cache else {}), **p)

    constraints = {**signature_constraints(fn, BUILDER_ARGS), **dict(getattr(fn, "parameter_constraints", {}) or {})}
    doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
    return BenchmarkSpec(name, build, doc, defaults, constraints)


def resolve_benchmark(name: str) -> BenchmarkSpec:
    """The spec of a benchmark name (built-in or ``module.path:function``); one UserError if unknown."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _plugin_spec(name)
    raise unknown_name("benchmark", name, _REGISTRY, "Or give module.path:function.")


def builder_params(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The builder's parameters of a benchmark entry (wrapper keys removed)."""
    return {k: v for k, v in entry.items() if k not in WRAPPER_KEYS}


def entry_problems(entry: Mapping[str, Any]) -> list[str]:
    """Every problem of a benchmark entry, found without reading data (the config layer collects them)."""
    try:
        spec = resolve_benchmark(str(entry["name"]))
    except UserError as exc:
        return [str(exc)]
    out = spec.problems(builder_params(entry))
    if entry.get("rehearsal") is not None:
        out += rehearsal_problems(entry["rehearsal"])
    if entry.get("blurry") is not None:
        out += blurry_problems(entry["blurry"])
    return out


def entry_source(entry: Mapping[str, Any]) -> DatasetSource | None:
    """The dataset source a benchmark entry reads, when it is known without running it."""
    try:
        return resolve_benchmark(str(entry["name"])).source
    except UserError:
        return None


def build_stream(spec: Mapping[str, Any], seed: int, data_root: str | Path | None = None, cache_dir: str | None = None) -> Stream:
    """Build the stream of one benchmark entry of a config (``{name: ..., <params>, rehearsal: {...}, blurry: {...}}``).

    ``backbone`` is not handled here (see the runner): it maps a built stream to features.
    """
    bench = resolve_benchmark(str(spec["name"]))
    params = builder_params(spec)
    bad = bench.problems(params)
    if bad:
        raise UserError(f"benchmark {bench.name}: " + "; ".join(bad))
    stream = bench(seed, data_root, cache_dir, **params)
    if spec.get("blurry") is not None:
        stream = with_blurry(stream, spec["blurry"], seed)
    if spec.get("rehearsal"):
        stream = with_rehearsal(stream, schedule_from_config(dict(spec["rehearsal"])), seed)
    return stream
