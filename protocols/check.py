"""The conformance check of a strategy class (``clbench check``), in the spirit of scikit-learn's ``check_estimator``.

In seconds, on tiny streams of scikit-learn's bundled digits (real data, no download) for every scenario the
class claims (``scenarios``: class-IL, domain-IL, task-IL; raw inputs, or 64-d features when it
``wants_features``), it checks:

* the class implements the API and can be built from its hyperparameters' defaults (plus ``--set`` values);
* every ``search_space`` name is a hyperparameter and its range ends/choices satisfy the declared constraints;
* it trains through clbench's loop and ``predict`` honours the contract (shape, range, finite scores);
* the same seed gives the same accuracy matrix; ``state_bytes()`` is a non-negative integer;
* experiences holding a single class work;
* the class can be sent to the process-pool and Ray executors' workers (pickled by reference to its module).

Each property is one result line; a failure names the problem.
"""

from __future__ import annotations

import importlib
import pickle
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from clbench.benchmarks.features import feature_stream
from clbench.benchmarks.registry import build_stream
from clbench.errors import UserError
from clbench.results import CellRecord
from clbench.stream import Experience, Stream
from clbench.strategies.base import Strategy
from clbench.strategies.registry import resolve_strategy

from .loop import run_stream
from .runner import seeded
from .search import space_problems

PER_CLASS = 30  # training samples per class in the tiny streams (all test samples are kept)


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0


def _tiny(stream: Stream, per_class: int = PER_CLASS) -> Stream:
    """The first ``per_class`` training samples of every class of each experience."""
    exps = []
    for e in stream.experiences:
        keep = torch.cat([(e.train.y == c).nonzero().squeeze(1)[:per_class] for c in e.train.y.unique()])
        exps.append(Experience(e.index, e.task_id, e.classes, e.train.subset(keep.sort().values), e.test, e.info))
    return stream.with_experiences(exps)


def tiny_streams(cls: type[Strategy]) -> dict[str, Stream]:
    """The streams the check runs on, by name, for the scenarios ``cls`` claims."""
    specs = {"class-il": {"name": "split_digits", "n_experiences": 5},
             "task-il": {"name": "split_digits", "n_experiences": 5, "scenario": "task-il"},
             "domain-il": {"name": "permuted_digits", "n_experiences": 3}}
    out = {}
    for scenario in cls.scenarios:
        if scenario not in specs:
            continue
        stream = _tiny(build_stream(specs[scenario], 0))
        out[scenario] = feature_stream(stream, "flatten") if cls.wants_features else stream
    if "class-il" in cls.scenarios:
        single = _tiny(build_stream({"name": "split_digits", "n_experiences": 10}, 0), 15)
        out["class-il, one class per experience"] = feature_stream(single, "flatten") if cls.wants_features else single
    return out


def _run(cls: type[Strategy], stream: Stream, params: dict[str, Any], seed: int = 0) -> tuple[Strategy, CellRecord]:
    record = CellRecord("check", stream.name, cls.__name__, seed)
    with seeded(seed):
        strategy = cls(stream.info, seed=seed, device="cpu", **params)
        run_stream(strategy, stream, record)
    return strategy, record


def _property(name: str, fn: Callable[[], str | None]) -> CheckResult:
    t0 = time.perf_counter()
    try:
        problem = fn()
    except UserError as exc:
        problem = str(exc)
    except Exception as exc:  # noqa: BLE001 - a failing property, reported with its reason
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        problem = f"{type(exc).__name__}: {exc} (at {tb.filename}:{tb.lineno})"
    return CheckResult(name, problem is None, problem or "", time.perf_counter() - t0)


def check_strategy(name: str, params: dict[str, Any] | None = None) -> list[CheckResult]:
    """Run every property of the module docstring on the strategy ``name``; one result per property."""
    params = dict(params or {})
    results: list[CheckResult] = []
    try:
        cls = resolve_strategy(name)
    except UserError as exc:
        return [CheckResult("the class implements the Strategy API", False, str(exc))]
    results.append(CheckResult("the class implements the Strategy API", True))

    def params_valid() -> str | None:
        bad = cls.parameter_problems(params)
        return "; ".join(bad) or None

    results.append(_property("hyperparameters: names and values are valid", params_valid))

    def space() -> str | None:
        hyper = cls.hyperparameters()
        bad = [f"search_space names {k!r}, which is not a hyperparameter of __init__ (valid: {', '.join(sorted(hyper))})"
               for k in (getattr(cls, "search_space", {}) or {}) if k not in hyper]
        bad += space_problems(cls, None, {}, "search_space")[1]
        return "; ".join(bad) or None

    results.append(_property("search_space: names are hyperparameters, ranges satisfy the constraints", space))

    def picklable() -> str | None:
        mod = importlib.import_module(cls.__module__)
        if getattr(mod, cls.__qualname__.split(".")[0], None) is None or cls.__module__ == "__main__":
            return f"{cls.__qualname__} is not reachable as {cls.__module__}.{cls.__qualname__} (define it at module level of an importable module)"
        if pickle.loads(pickle.dumps(cls)) is not cls:
            return "unpickling the class gives another object"
        return None

    results.append(_property("picklable for the process-pool and Ray workers", picklable))
    if not all(r.ok for r in results):
        return results
    try:
        streams = tiny_streams(cls)
    except UserError as exc:
        return results + [CheckResult("tiny streams", False, str(exc))]
    if not streams:
        return results + [CheckResult("scenarios", False, f"scenarios {cls.scenarios!r} names none of class-il, domain-il, task-il")]
    for label, stream in streams.items():
        state: dict[str, Any] = {}

        def train() -> str | None:
            strategy, record = _run(cls, stream, params)
            state["strategy"], state["record"] = strategy, record
            return None

        r = _property(f"{label}: trains through the loop, predict honours the contract", train)
        results.append(r)
        if not r.ok:
            continue

        def state_bytes() -> str | None:
            n = state["strategy"].state_bytes()
            ok = isinstance(n, int) and not isinstance(n, bool) and n >= 0
            return None if ok else f"state_bytes() returned {n!r}; expected a non-negative int"

        results.append(_property(f"{label}: state_bytes() is a non-negative integer", state_bytes))

        def deterministic() -> str | None:
            _, again = _run(cls, stream, params)
            if again.accuracy != state["record"].accuracy:
                return "two runs with seed 0 gave different accuracy matrices (draw every random number from a generator seeded with `seed`)"
            return None

        results.append(_property(f"{label}: same seed, same accuracy matrix", deterministic))
    return results


def format_results(name: str, results: list[CheckResult]) -> str:
    lines = [f"clbench check {name}"]
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        lines.append(f"  {mark} {r.name}" + (f" ({r.seconds:.1f} s)" if r.seconds >= 0.05 else "") + (f": {r.detail}" if r.detail else ""))
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
