"""The ``clbench tune`` configuration: tuning and evaluation streams, strategies with search spaces, search settings.

Keys: those of ``clbench run`` except ``benchmarks`` (``seeds`` are the phase-2 evaluation seeds), plus
``tuning`` (D_HT entry), ``evaluation`` (D_E entry) and ``search`` (:data:`SEARCH_KEYS`). A strategy entry
may hold ``search_space: {hp: [choices] | {low, high, log, type}}`` and ``n_trials``; its plain
hyperparameter values are fixed (not searched). Every mistake is collected and reported at once; the data
rules that need the streams themselves (same scenario, no shared samples) are checked by
:mod:`clbench.protocols.tune` before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.constraints import AnyOf, Boolean, Check, Interval, ListOf, NoneValue, Options, problems
from clbench.errors import UserError
from clbench.strategies.registry import resolve_strategy
from clbench.strategies.space import Param

from .config import MAX_SEED, RunConfig, _build, as_entries, benchmark_errors, config_errors
from .search import OBJECTIVES, SAMPLERS, grid_of, grid_size, param_to_config, redact, space_problems

TUNE_KEYS = {
    "tuning": "benchmark entry of the tuning stream D_HT, e.g. {name: split_digits, classes: [0, 1, 2, 3, 4]}",
    "evaluation": "benchmark entry of the evaluation stream D_E (same scenario, no shared samples)",
    "search": "{sampler: tpe|random|grid, n_trials, objective: acc|aia, seeds, pruning, storage, protocol, sampler_seed, heartbeat, resolve}",
}
SEARCH_KEYS = {
    "sampler": "tpe (default) | random | grid",
    "n_trials": "trial budget per strategy (default 20; grid: the whole grid); a strategy entry may set its own n_trials",
    "objective": "acc (final accuracy, default) | aia (average incremental accuracy)",
    "seeds": "tuning seeds: each trial runs once per seed on D_HT (default [0])",
    "pruning": "false (default) | true | {after: k, startup_trials: n}: median pruning after the first k experiences",
    "storage": "SQLAlchemy URL of the Optuna storage (default sqlite:///<run folder>/tune.db)",
    "protocol": "both (default) | two-phase | conventional",
    "sampler_seed": "seed of the sampler (default 0)",
    "heartbeat": "seconds between a trial's heartbeats in a shared storage; a trial silent for 2x this is failed and retried (default 60)",
    "resolve": "true (default) | false: trials of a closed-form head over values that enter only its solve (acil/gacil gamma, "
               "ranpac's fixed ridge, slda shrinkage, ...) re-solve one fit per seed instead of refitting",
}
PROTOCOLS = ("both", "two-phase", "conventional")
ENTRY_KEYS = ("search_space", "n_trials")  # strategy-entry keys owned by tune, not hyperparameters


def _storage_problem(v: Any) -> str | None:
    return None if v is None or (isinstance(v, str) and "://" in v) else \
        f"must be a SQLAlchemy URL such as sqlite:///tune.db or postgresql://user:pw@host/db, got {v!r}"


def _pruning_problem(v: Any) -> str | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, dict) and not set(v) - {"after", "startup_trials"}:
        bad = problems(v, {"after": Interval(int, 0), "startup_trials": Interval(int, 0)})
        return "; ".join(bad) or None
    return f"give true, false or {{after: <experiences>, startup_trials: <n>}}, got {v!r}"


SEARCH_CONSTRAINTS = {
    "sampler": Options(*SAMPLERS), "objective": Options(*OBJECTIVES), "protocol": Options(*PROTOCOLS),
    "n_trials": AnyOf(NoneValue(), Interval(int, 1)), "seeds": ListOf(Interval(int, 0, MAX_SEED), min_len=1),
    "pruning": Check(_pruning_problem, "true, false or {after, startup_trials}"),
    "storage": Check(_storage_problem, "a SQLAlchemy URL"), "sampler_seed": Interval(int, 0, MAX_SEED),
    "heartbeat": Interval(float, 1, None), "resolve": Options(True, False),
}


@dataclass(frozen=True)
class SearchSettings:
    """The ``search:`` block, validated."""

    sampler: str = "tpe"
    n_trials: int | None = None
    objective: str = "acc"
    seeds: tuple[int, ...] = (0,)
    pruning_after: int | None = None  # None: no pruning; 0: half the stream (set at run time)
    pruning_startup: int = 5
    storage: str | None = None
    protocol: str = "both"
    sampler_seed: int = 0
    heartbeat: float = 60.0
    resolve: bool = True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sampler": self.sampler, "n_trials": self.n_trials, "objective": self.objective,
                             "seeds": list(self.seeds), "protocol": self.protocol, "sampler_seed": self.sampler_seed,
                             "heartbeat": self.heartbeat, "resolve": self.resolve,
                             "pruning": False if self.pruning_after is None
                             else {"after": self.pruning_after, "startup_trials": self.pruning_startup}}
        if self.storage:
            d["storage"] = redact(self.storage)
        return d


@dataclass(frozen=True)
class TunedStrategy:
    """One strategy entry to tune: its fixed values, its search space and its trial budget."""

    entry: dict[str, Any]  # name, label (if any) and the fixed hyperparameters
    space: dict[str, Param]
    budget: int

    @property
    def label(self) -> str:
        return self.entry.get("label") or self.entry["name"]

    @property
    def fixed(self) -> dict[str, Any]:
        return {k: v for k, v in self.entry.items() if k not in ("name", "label")}


@dataclass
class TuneConfig:
    """A validated ``clbench tune`` configuration.

    ``run`` is the phase-2 matrix (benchmarks = [D_E], strategies = the fixed entries, seeds = the evaluation
    seeds); ``tuning``/``evaluation`` are the D_HT/D_E benchmark entries.
    """

    run: RunConfig
    tuning: dict[str, Any]
    evaluation: dict[str, Any]
    search: SearchSettings
    strategies: list[TunedStrategy] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, readable again by ``clbench tune``."""
        d = self.run.to_dict()
        d.pop("benchmarks", None)
        d["tuning"], d["evaluation"], d["search"] = self.tuning, self.evaluation, self.search.to_dict()
        d["strategies"] = [{**s.entry, "search_space": {k: param_to_config(p) for k, p in s.space.items()}, "n_trials": s.budget}
                           for s in self.strategies]
        return d


def parse_search(value: Any, errors: list[str]) -> SearchSettings:
    """Validate the ``search:`` mapping (mistakes appended to ``errors``)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        errors.append(f"search: must be a mapping with keys {', '.join(SEARCH_KEYS)}, got {value!r}")
        return SearchSettings()
    value = dict(value)
    if isinstance(value.get("seeds"), int) and not isinstance(value["seeds"], bool):
        value["seeds"] = [value["seeds"]]
    bad = [f"search: unknown key {k!r}; valid: {', '.join(SEARCH_KEYS)}" for k in sorted(set(value) - set(SEARCH_KEYS))]
    bad += [f"search.{p}" for p in problems(value, SEARCH_CONSTRAINTS)]
    if bad:
        errors.extend(bad)
        return SearchSettings()
    pruning = value.get("pruning", False)
    kw: dict[str, Any] = {k: value[k] for k in ("sampler", "objective", "protocol", "n_trials", "storage", "sampler_seed", "resolve")
                          if k in value}
    if "seeds" in value:
        kw["seeds"] = tuple(dict.fromkeys(value["seeds"]))
    if "heartbeat" in value:
        kw["heartbeat"] = float(value["heartbeat"])
    if pruning is True:
        pruning = {}
    if isinstance(pruning, dict):
        kw["pruning_after"] = pruning.get("after", 0)
        kw["pruning_startup"] = pruning.get("startup_trials", SearchSettings.pruning_startup)
    return SearchSettings(**kw)


def tuned_strategy(entry: dict[str, Any], side: dict[str, Any], search: SearchSettings, where: str,
                   errors: list[str]) -> TunedStrategy | None:
    """The search space and budget of one strategy entry (mistakes appended to ``errors``)."""
    cls = resolve_strategy(entry["name"])
    overrides = side.get("search_space")
    if overrides is not None and not isinstance(overrides, dict):
        errors.append(f"{where}: search_space must be a mapping {{hyperparameter: [choices] or {{low, high, log}}}}, got {overrides!r}")
        return None
    fixed = {k: v for k, v in entry.items() if k not in ("name", "label")}
    space, bad = space_problems(cls, overrides, fixed, where)
    n = side.get("n_trials", search.n_trials)
    p = Interval(int, 1).problem(n) if n is not None else None
    if p:
        bad.append(f"{where}: n_trials {p}")
    if bad:
        errors.extend(bad)
        return None
    if not space:
        budget = 1  # nothing to search: one run on D_HT gives the phase-1 score
    elif search.sampler == "grid":
        try:
            size = grid_size(grid_of(space, where))
        except UserError as exc:
            errors.append(str(exc))
            return None
        budget = size if n is None else min(n, size)
    else:
        budget = 20 if n is None else n
    return TunedStrategy(entry=entry, space=space, budget=budget)


def _benchmark_entry(value: Any, key: str, errors: list[str]) -> dict[str, Any] | None:
    entries = as_entries(value, key, errors) if value is not None else []
    if value is None:
        errors.append(f"{key}: missing; give one benchmark entry such as {{name: split_digits, classes: [0, 1, 2, 3, 4]}}")
        return None
    if len(entries) != 1:
        if entries:
            errors.append(f"{key}: give one benchmark entry, got {len(entries)}")
        return None
    return entries[0]


def parse_tune_config(data: dict[str, Any], *, default_name: str = "tune") -> TuneConfig:
    """Validate a ``clbench tune`` config mapping; raise one :class:`UserError` listing every mistake."""
    errors: list[str] = []
    if "benchmarks" in data:
        errors.append("benchmarks: clbench tune reads `tuning:` (D_HT) and `evaluation:` (D_E) instead of `benchmarks:` "
                      "(and --benchmark does not apply); fix: move the entries there")
    tuning = _benchmark_entry(data.get("tuning"), "tuning", errors)
    evaluation = _benchmark_entry(data.get("evaluation"), "evaluation", errors)
    search = parse_search(data.get("search"), errors)
    raw = data.get("strategies")
    stripped, sides = raw, []
    if isinstance(raw, (list, dict, str)):
        stripped = []
        for e in raw if isinstance(raw, list) else [raw]:
            e = {"name": e} if isinstance(e, str) else e
            if isinstance(e, dict):
                sides.append({k: e[k] for k in ENTRY_KEYS if k in e})
                e = {k: v for k, v in e.items() if k not in ENTRY_KEYS}
            stripped.append(e)
    run_data = {k: v for k, v in data.items() if k not in ("benchmarks", "tuning", "evaluation")}
    run_data["benchmarks"] = [evaluation] if evaluation else []
    run_data["strategies"] = stripped
    errors += [e.replace("benchmarks[0]", "evaluation") for e in config_errors(run_data, TUNE_KEYS)]
    if tuning is not None:
        errors += benchmark_errors(tuning, f"tuning ({tuning['name']})")
    strategies: list[TunedStrategy] = []
    run_ok = not config_errors({k: v for k, v in run_data.items() if k != "search"}, TUNE_KEYS)
    if run_ok:
        cfg = _build(run_data, default_name, TUNE_KEYS)
        for i, (entry, side) in enumerate(zip(cfg.strategies, sides)):
            ts = tuned_strategy(entry, side, search, f"strategies[{i}] ({entry['name']})", errors)
            if ts is not None:
                strategies.append(ts)
    if errors:
        raise UserError("invalid tune configuration:\n  - " + "\n  - ".join(errors))
    assert tuning is not None and evaluation is not None
    return TuneConfig(run=cfg, tuning=tuning, evaluation=evaluation, search=search, strategies=strategies)
