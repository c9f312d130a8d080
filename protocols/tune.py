"""The two-phase tune-then-evaluate protocol (``clbench tune``), after Cha & Cho, "Hyperparameters in
Continual Learning: a Reality Check" (arXiv 2403.09066).

* **Phase 1 (tuning)**: for each strategy, an Optuna study on the tuning stream D_HT (``tuning:``).
  A trial runs the strategy with the sampled values on D_HT once per tuning seed (``search.seeds``)
  through the evaluation loop; its value is the mean over those seeds of the objective (``acc`` or
  ``aia``). A cell that fails (e.g. a diverging learning rate) scores 0 and its error is kept.
* **Phase 2 (evaluation)**: the best phase-1 values, then exactly one run per strategy and seed
  (``seeds:``) on the evaluation stream D_E (``evaluation:``), through the matrix runner
  (``cells/``, ``results.csv``, resume and reports as for ``clbench run``). Nothing measured on D_E
  feeds back into the choice.
* **Conventional protocol** (for comparison): a second study per strategy tuned directly on D_E over
  the evaluation seeds; its best trial value is the number a paper tuning on its test stream would
  report. It runs after phase 2 and lives in separate studies.

D_HT and D_E must share the scenario (scenario kind, number of experiences, classes per experience;
epochs are shared by construction since both phases use the same strategy entry) and use disjoint
classes of one dataset or two different datasets.

Trials live in an Optuna RDB storage (a SQLite file ``tune.db`` in the run folder unless
``search.storage``/``--storage`` gives a SQLAlchemy URL), so a killed run resumes its studies and
several workers can share one study. Outputs in the run folder: ``tune.json`` (everything),
``tune.csv`` (one row per strategy), ``trials.csv`` (one row per trial), ``tune_config.yaml``.

Module-level imports are light (the CLI imports this module to build its parser).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clbench.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from clbench.benchmarks.stream import Stream
    from clbench.strategies.space import Param

    from .config import CellSpec, RunConfig
    from .loop import CellResult
    from .runner import StreamCache

TUNE_KEYS = {
    "tuning": "benchmark entry of the tuning stream D_HT, e.g. {name: split_digits, classes: [0, 1, 2, 3, 4]}",
    "evaluation": "benchmark entry of the evaluation stream D_E (same scenario, disjoint classes or another dataset)",
    "search": "{sampler: tpe|random|grid, n_trials, objective: acc|aia, seeds, pruning, storage, protocol, sampler_seed}",
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
}
PROTOCOLS = ("both", "two-phase", "conventional")
ENTRY_KEYS = ("search_space", "n_trials")  # strategy-entry keys owned by tune, not hyperparameters


@dataclass(frozen=True)
class SearchSettings:
    """The ``search:`` block, validated."""

    sampler: str = "tpe"
    n_trials: int | None = None
    objective: str = "acc"
    seeds: tuple[int, ...] = (0,)
    pruning_after: int | None = None
    pruning_startup: int = 5
    storage: str | None = None
    protocol: str = "both"
    sampler_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sampler": self.sampler, "n_trials": self.n_trials, "objective": self.objective,
                             "seeds": list(self.seeds), "protocol": self.protocol, "sampler_seed": self.sampler_seed,
                             "pruning": {"after": max(0, self.pruning_after), "startup_trials": self.pruning_startup} if self.pruning_after else False}
        if self.storage:
            from .search import redact

            d["storage"] = redact(self.storage)
        return d


@dataclass(frozen=True)
class TunedStrategy:
    """One strategy entry to tune: its fixed values, its search space and its trial budget."""

    entry: dict[str, Any]  # name, label (if any) and the fixed hyperparameters
    space: dict[str, "Param"]
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

    ``run`` is the phase-2 matrix (benchmarks = [D_E], strategies = the fixed entries, seeds = the
    evaluation seeds); ``tuning``/``evaluation`` are the D_HT/D_E benchmark entries.
    """

    run: "RunConfig"
    tuning: dict[str, Any]
    evaluation: dict[str, Any]
    search: SearchSettings
    strategies: list[TunedStrategy] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, readable again by ``clbench tune``."""
        from .search import param_to_config

        d = self.run.to_dict()
        d.pop("benchmarks", None)
        d["tuning"], d["evaluation"], d["search"] = self.tuning, self.evaluation, self.search.to_dict()
        d["strategies"] = [{**s.entry, "search_space": {k: param_to_config(p) for k, p in s.space.items()}, "n_trials": s.budget}
                           for s in self.strategies]
        return d


# ---------------------------------------------------------------- config


def dataset_of(benchmark: str) -> str:
    """The dataset behind a benchmark name: built-in ``split_X``/``permuted_X`` read dataset ``X``;
    any other name (a plugged-in ``module:function``) counts as its own dataset."""
    from clbench.benchmarks.registry import benchmark_names

    if benchmark in benchmark_names():
        for prefix in ("split_", "permuted_"):
            if benchmark.startswith(prefix):
                return benchmark[len(prefix):]
    return benchmark


def disjointness_errors(tuning: dict[str, Any], evaluation: dict[str, Any]) -> list[str]:
    """Why D_HT and D_E could share data: same dataset without disjoint ``classes:`` lists."""
    dt, de = dataset_of(str(tuning["name"])), dataset_of(str(evaluation["name"]))
    if dt != de:
        return []
    ct, ce = tuning.get("classes"), evaluation.get("classes")
    if ct is None or ce is None:
        missing = " and ".join(w for w, c in (("tuning", ct), ("evaluation", ce)) if c is None)
        return [f"tuning and evaluation both use dataset {dt!r} and {missing} takes all its classes, so D_HT and D_E "
                f"would share classes; fix: give disjoint `classes:` lists (e.g. tuning: classes: [0, 1, 2, 3, 4], "
                f"evaluation: classes: [5, 6, 7, 8, 9]) or tune on another dataset"]
    if not all(isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in v) for v in (ct, ce)):
        return ["tuning/evaluation classes: must be lists of integer class labels"]
    common = sorted(set(ct) & set(ce))
    if common:
        return [f"tuning and evaluation share classes {common} of dataset {dt!r}; fix: make the two `classes:` lists disjoint"]
    return []


def scenario_errors(ht: "Stream", ev: "Stream") -> list[str]:
    """Differences of CL scenario between the built D_HT and D_E streams (kind, experiences, classes per experience)."""
    errors = []
    if ht.scenario != ev.scenario:
        errors.append(f"scenario: D_HT is {ht.scenario}, D_E is {ev.scenario}; fix: use the same scenario")
    if len(ht) != len(ev):
        errors.append(f"D_HT has {len(ht)} experiences, D_E has {len(ev)}; fix: set the same n_experiences (or base/increment)")
    else:
        a, b = [len(e.classes) for e in ht], [len(e.classes) for e in ev]
        if a != b:
            errors.append(f"classes per experience differ: D_HT {a}, D_E {b}; fix: select as many classes for both (classes:) with the same n_experiences/base/increment")
    return errors


def _benchmark_entry(value: Any, key: str, errors: list[str]) -> dict[str, Any] | None:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        errors.append(f"{key}: give one benchmark entry such as {{name: split_digits, classes: [0, 1, 2, 3, 4]}}, got {value!r}")
        return None
    return dict(value)


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return list(dict.fromkeys(value))
    return None


def parse_search(value: Any, errors: list[str]) -> SearchSettings:
    """Validate the ``search:`` mapping (mistakes appended to ``errors``)."""
    from .search import OBJECTIVES, SAMPLERS

    if value is None:
        value = {}
    if not isinstance(value, dict):
        errors.append(f"search: must be a mapping with keys {', '.join(SEARCH_KEYS)}, got {value!r}")
        return SearchSettings()
    for k in sorted(set(value) - set(SEARCH_KEYS)):
        errors.append(f"search: unknown key {k!r}; valid: {', '.join(SEARCH_KEYS)}")
    s = SearchSettings()
    kw: dict[str, Any] = {}
    for key, valid in (("sampler", SAMPLERS), ("objective", OBJECTIVES), ("protocol", PROTOCOLS)):
        kw[key] = value.get(key, getattr(s, key))
        if kw[key] not in valid:
            errors.append(f"search.{key}: {kw[key]!r} is not one of {', '.join(valid)}")
    n = value.get("n_trials")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        errors.append(f"search.n_trials: must be a positive integer, got {n!r}")
        n = None
    kw["n_trials"] = n
    seeds = _int_list(value.get("seeds", list(s.seeds)))
    if seeds is None:
        errors.append(f"search.seeds: must be a non-empty list of non-negative integers, got {value.get('seeds')!r}")
    kw["seeds"] = tuple(seeds or s.seeds)
    pruning = value.get("pruning", False)
    if pruning is True:
        pruning = {}
    if isinstance(pruning, dict):
        bad = sorted(set(pruning) - {"after", "startup_trials"})
        after, startup = pruning.get("after", 0), pruning.get("startup_trials", s.pruning_startup)
        if bad or not isinstance(after, int) or after < 0 or not isinstance(startup, int) or startup < 0:
            errors.append(f"search.pruning: give true, false or {{after: <experiences>, startup_trials: <n>}}, got {pruning!r}")
        else:
            kw["pruning_after"], kw["pruning_startup"] = after or -1, startup  # -1: half the stream, set at run time
    elif pruning not in (False, None):
        errors.append(f"search.pruning: give true, false or {{after: <experiences>, startup_trials: <n>}}, got {pruning!r}")
    storage = value.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        errors.append(f"search.storage: must be a SQLAlchemy URL such as sqlite:///tune.db or postgresql://user:pw@host/db, got {storage!r}")
        storage = None
    kw["storage"] = storage
    seed = value.get("sampler_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        errors.append(f"search.sampler_seed: must be a non-negative integer, got {seed!r}")
        seed = 0
    kw["sampler_seed"] = seed
    return SearchSettings(**kw)


def _tuned_strategy(entry: dict[str, Any], side: dict[str, Any], search: SearchSettings, where: str) -> TunedStrategy:
    from clbench.strategies.registry import resolve_strategy

    from .search import grid_of, grid_size, resolve_space

    cls = resolve_strategy(entry["name"])
    overrides = side.get("search_space")
    if overrides is not None and not isinstance(overrides, dict):
        raise UserError(f"{where}: search_space must be a mapping {{hyperparameter: [choices] or {{low, high, log}}}}, got {overrides!r}")
    fixed = {k: v for k, v in entry.items() if k not in ("name", "label")}
    space = resolve_space(getattr(cls, "search_space", {}) or {}, cls.hyperparameters(), overrides, fixed, where)
    n = side.get("n_trials", search.n_trials)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise UserError(f"{where}: n_trials must be a positive integer, got {n!r}")
    if not space:
        budget = 1  # nothing to search: one run on D_HT gives the phase-1 score
    elif search.sampler == "grid":
        size = grid_size(grid_of(space, where))
        budget = size if n is None else min(n, size)
    else:
        budget = 20 if n is None else n
    return TunedStrategy(entry=entry, space=space, budget=budget)


def parse_tune_config(data: dict[str, Any], *, default_name: str = "tune") -> TuneConfig:
    """Validate a ``clbench tune`` config mapping; raise one :class:`UserError` listing every mistake.

    Keys: those of ``clbench run`` except ``benchmarks`` (``seeds`` are the phase-2 evaluation seeds),
    plus ``tuning`` (D_HT entry), ``evaluation`` (D_E entry) and ``search`` (see :data:`SEARCH_KEYS`).
    A strategy entry may hold ``search_space: {hp: [choices] | {low, high, log, type}}`` and
    ``n_trials``; its plain hyperparameter values are fixed (not searched).
    """
    from .config import parse_config, validate_benchmark

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
    run_data = {k: v for k, v in data.items() if k != "benchmarks"}
    run_data["benchmarks"] = [evaluation] if evaluation else None
    run_data["strategies"] = stripped
    cfg = None
    try:
        cfg = parse_config(run_data, default_name=default_name, extra_keys=TUNE_KEYS)
    except UserError as exc:  # "invalid configuration:\n  - a\n  - b": keep the items, to list all mistakes at once
        lines = str(exc).splitlines()
        items = [ln.strip()[2:] for ln in lines[1:] if ln.strip().startswith("- ")]
        errors.extend(items or [str(exc)])
    if tuning is not None:
        validate_benchmark(tuning, errors, f"tuning ({tuning['name']})")
    if tuning is not None and evaluation is not None:
        errors.extend(disjointness_errors(tuning, evaluation))
    strategies = []
    if cfg is not None:
        for i, (entry, side) in enumerate(zip(cfg.strategies, sides)):
            try:
                strategies.append(_tuned_strategy(entry, side, search, f"strategies[{i}] ({entry['name']})"))
            except UserError as exc:
                errors.extend(str(exc).removeprefix("invalid search space:\n  - ").split("\n  - "))
    errors = [e.replace("benchmarks[0]", "evaluation") for e in errors]
    if errors:
        raise UserError("invalid tune configuration:\n  - " + "\n  - ".join(errors))
    assert cfg is not None and tuning is not None and evaluation is not None
    return TuneConfig(run=cfg, tuning=tuning, evaluation=evaluation, search=search, strategies=strategies)


# ---------------------------------------------------------------- one trial


def trial_cell(cell: "CellSpec", cache: "StreamCache", on_experience: Callable[["CellResult", int], None] | None = None) -> "CellResult":
    """Run one cell of a trial through the runner's ``execute_cell`` (a failure becomes a failed result,
    scored 0); ``on_experience`` sees the partly filled result after each experience, for pruning, and
    ``optuna.TrialPruned`` raised there propagates.
    """
    import optuna

    from .runner import execute_cell

    return execute_cell(cell, cache, on_experience, reraise=(optuna.TrialPruned,))


def _study_name(tc: TuneConfig, ts: TunedStrategy, protocol: str, bench: dict[str, Any], seeds: Sequence[int]) -> str:
    """``<run>/<protocol>/<strategy>/<hash>``: the hash covers what makes trial values comparable
    (stream, seeds, objective, fixed values, space), so changing any of them starts a fresh study while
    rerunning (or raising n_trials) continues the old one."""
    from .search import param_to_config

    key = json.dumps({"b": bench, "seeds": list(seeds), "obj": tc.search.objective, "fixed": ts.entry,
                      "space": {k: param_to_config(p) for k, p in ts.space.items()}}, sort_keys=True, default=str)
    return f"{tc.run.name}/{protocol}/{ts.label}/{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def search_strategy(tc: TuneConfig, ts: TunedStrategy, protocol: str, storage: "optuna.storages.RDBStorage", *,
                    local: bool, cache: "StreamCache", echo: Callable[[str], None] | None) -> dict[str, Any]:
    """Run (or resume) one strategy's study on D_HT (``protocol='tuning'``, tuning seeds) or D_E
    (``'conventional'``, evaluation seeds) up to its budget; return the study's record."""
    import numpy as np
    import optuna

    from .config import CellSpec
    from .search import best_trial, decode_params, finished_trials, make_sampler, open_study, partial_score, recover_running, run_budget, suggest, trial_records

    bench, seeds = (tc.tuning, tc.search.seeds) if protocol == "tuning" else (tc.evaluation, tuple(tc.run.seeds))
    data_name = "D_HT" if protocol == "tuning" else "D_E"
    cfg, objective = tc.run, tc.search.objective
    after = tc.search.pruning_after
    pruner = optuna.pruners.MedianPruner(n_startup_trials=tc.search.pruning_startup) if after else optuna.pruners.NopPruner()
    name = _study_name(tc, ts, protocol, bench, seeds)
    study = open_study(storage, name, optuna.samplers.RandomSampler(), pruner)
    retried = recover_running(study) if local else []
    where = f"strategy {ts.label}"
    # a different seed per restart, so a resumed random/TPE search does not repeat its first draws
    study.sampler = make_sampler(tc.search.sampler, ts.space, tc.search.sampler_seed + len(study.get_trials(deepcopy=False)), ts.budget, where)
    if echo and retried:
        echo(f"[{protocol}] {ts.label}: trials {retried} were interrupted; their parameters run again")

    def objective_fn(trial: "optuna.Trial") -> float:
        params = suggest(trial, ts.space)
        entry = {**ts.entry, **params}
        cells: list[dict[str, Any]] = []
        trial.set_user_attr("data", data_name)  # each attribute is one storage commit: keep them few

        def prune_hook(result: "CellResult", i: int) -> None:
            if i > (after if after > 0 else max(1, len(result.test_sizes) // 2)):
                return
            value = partial_score(result.accuracy, result.test_sizes, objective)
            trial.report(value, i)
            if trial.should_prune():
                trial.set_user_attr("cells", cells)
                raise optuna.TrialPruned(f"{objective} {value:.4f} after {i} experiences is below the median")

        scores = []
        for k, seed in enumerate(seeds):
            cell = CellSpec(bench, entry, seed, cfg.device, cfg.data_root, cfg.cache_dir, cfg.timeout)
            res = trial_cell(cell, cache, prune_hook if k == 0 and after else None)
            ok = res.status == "ok"
            score = float(res.metrics[objective]) if ok else 0.0
            scores.append(score)
            cells.append({"seed": seed, "status": res.status, "error": res.error, "score": score,
                          "acc": res.metrics.get("acc"), "aia": res.metrics.get("aia"),
                          "train_seconds": res.metrics.get("train_seconds"),
                          "classes": (res.stream.get("params") or {}).get("classes")})
        trial.set_user_attr("cells", cells)
        return float(np.mean(scores))

    def report(t: "optuna.trial.FrozenTrial") -> None:
        if echo is None:
            return
        best = best_trial(study)
        value = t.state.name.lower() if t.value is None else f"{objective}={t.value:.4f}"
        best_text = f"best {best.value:.4f}, " if best is not None else ""
        echo(f"[{protocol}] {ts.label}: trial {t.number} {value} {json.dumps(t.params, default=str)} "
             f"({best_text}{finished_trials(study)}/{ts.budget} done)")

    run_budget(study, objective_fn, ts.budget, report)
    best = best_trial(study)
    chosen = None if best is None else decode_params(ts.space, best.params)
    return {
        "study": name, "data": data_name, "benchmark": bench, "seeds": list(seeds), "budget": ts.budget,
        "trials": trial_records(study, ts.space),
        "best": None if best is None else {"number": best.number, "value": best.value, "params": chosen},
    }


# ---------------------------------------------------------------- the protocol


def _scenario_check(tc: TuneConfig, cache: "StreamCache") -> None:
    """Build D_HT and D_E (first seed of each) and refuse a pair that does not share the scenario."""
    from .config import CellSpec
    from .runner import cell_stream

    def build(bench: dict[str, Any], seed: int) -> "Stream":
        return cell_stream(CellSpec(bench, {"name": "-"}, seed, tc.run.device, tc.run.data_root, tc.run.cache_dir), False, cache)

    errors = scenario_errors(build(tc.tuning, tc.search.seeds[0]), build(tc.evaluation, tc.run.seeds[0]))
    if errors:
        raise UserError("D_HT (tuning) and D_E (evaluation) must share the CL scenario:\n  - " + "\n  - ".join(errors))


def _cell_score(record: dict[str, Any], objective: str) -> float:
    """A phase-2 cell's objective; a failed cell scores 0, as in phase 1."""
    return float(record["metrics"][objective]) if record.get("status") == "ok" else 0.0


def phase2_scores(records: list[dict[str, Any]], objective: str) -> dict[str, dict[str, Any]]:
    """Per strategy label: mean and standard deviation over seeds of the objective, per-seed values, ACC and AIA."""
    import numpy as np

    out: dict[str, dict[str, Any]] = {}
    for r in records:
        d = out.setdefault(r["strategy"], {"per_seed": {}, "acc": [], "aia": [], "failed": [], "cell_ids": []})
        d["per_seed"][int(r["seed"])] = _cell_score(r, objective)
        d["cell_ids"].append(r["cell_id"])
        if r.get("status") == "ok":
            d["acc"].append(r["metrics"]["acc"])
            d["aia"].append(r["metrics"]["aia"])
        else:
            d["failed"].append({"seed": r["seed"], "error": r.get("error", "")})
    for d in out.values():
        v = np.array(list(d["per_seed"].values()), dtype=float)
        d["score"] = float(v.mean())
        d["std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        d["acc"] = float(np.mean(d["acc"])) if d["acc"] else float("nan")
        d["aia"] = float(np.mean(d["aia"])) if d["aia"] else float("nan")
    return out


def ranking(scores: dict[str, float | None]) -> list[str]:
    """Strategy labels from best to worst score (labels without a score are left out)."""
    have = {k: v for k, v in scores.items() if v is not None and not math.isnan(v)}
    return sorted(have, key=lambda k: (-have[k], k))


def kendall(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, Any]:
    """Kendall's tau-b (``scipy.stats.kendalltau``) between two scorings of the strategies both score.

    tau = (P - Q) / sqrt((P + Q + T_a)(P + Q + T_b)) over strategy pairs (P concordant, Q discordant,
    T ties in one scoring only); 1 = same ranking, -1 = reversed. None with fewer than 2 strategies.
    """
    from scipy.stats import kendalltau

    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None and not math.isnan(a[k]) and not math.isnan(b[k])]
    if len(keys) < 2:
        return {"tau": None, "p_value": None, "n": len(keys)}
    res = kendalltau([a[k] for k in keys], [b[k] for k in keys])
    tau, p = float(res.statistic), float(res.pvalue)
    return {"tau": None if math.isnan(tau) else tau, "p_value": None if math.isnan(p) else p, "n": len(keys)}


def run_tune(tc: TuneConfig, *, quiet: bool = False, retry_failed: bool = False,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the whole protocol; write and return the summary (``tune.json``).

    Order: phase 1 on D_HT for every strategy, then phase 2 on D_E with the chosen values, then the
    conventional studies on D_E. Phase 1 and the conventional studies hold the run folder's lock;
    phase 2 takes it through the matrix runner.
    """
    from .runner import RunFolder, StreamCache, run_matrix
    from .search import default_storage_url, open_storage, quiet_optuna, redact
    from .store import atomic_write_yaml

    say = None if quiet else echo
    folder = RunFolder(tc.run_dir)
    url = tc.search.storage or default_storage_url(tc.run_dir)
    local = tc.search.storage is None  # our own SQLite file: a RUNNING trial found under the lock is stale
    protocol = tc.search.protocol
    cache = StreamCache(size=len(tc.search.seeds) + len(tc.run.seeds) + 2)
    tuning: dict[str, dict[str, Any]] = {}
    conventional: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    with quiet_optuna():
        lock = folder.lock()
        try:
            storage = open_storage(url)
            atomic_write_yaml(folder.path / "tune_config.yaml", tc.to_dict())
            _scenario_check(tc, cache)
            if protocol != "conventional":
                for ts in tc.strategies:
                    tuning[ts.label] = search_strategy(tc, ts, "tuning", storage, local=local, cache=cache, echo=say)
        finally:
            lock.release()
        if protocol != "conventional":
            chosen = [{**ts.entry, **tuning[ts.label]["best"]["params"]} for ts in tc.strategies if tuning[ts.label]["best"]]
            records = run_matrix(replace(tc.run, strategies=chosen), quiet=quiet, retry_failed=retry_failed, echo=echo)
        lock = folder.lock()
        try:
            if protocol != "two-phase":
                for ts in tc.strategies:
                    conventional[ts.label] = search_strategy(tc, ts, "conventional", storage, local=local, cache=cache, echo=say)
            summary = summarise(tc, tuning, records, conventional, redact(url))
            write_outputs(folder.path, summary)
        finally:
            lock.release()
    return summary


def summarise(tc: TuneConfig, tuning: dict[str, dict[str, Any]], records: list[dict[str, Any]],
              conventional: dict[str, dict[str, Any]], storage: str) -> dict[str, Any]:
    """The ``tune.json`` record: per strategy search space, trials, choice and the three scores;
    rankings under each protocol and Kendall's tau between them."""
    from .search import describe_space

    objective = tc.search.objective
    p2 = phase2_scores(records, objective)
    rows = []
    for ts in tc.strategies:
        t, c = tuning.get(ts.label), conventional.get(ts.label)
        two = p2.get(ts.label)
        row = {
            "strategy": ts.label, "name": ts.entry["name"], "fixed": ts.fixed, "search_space": describe_space(ts.space),
            "budget": ts.budget,
            "tuning": t, "chosen": t["best"]["params"] if t and t["best"] else None,
            "phase1_score": t["best"]["value"] if t and t["best"] else None,
            "phase2": two, "phase2_score": two["score"] if two else None,
            "conventional": c,
            "conventional_score": c["best"]["value"] if c and c["best"] else None,
            "conventional_choice": c["best"]["params"] if c and c["best"] else None,
        }
        if row["phase2_score"] is not None and row["conventional_score"] is not None:
            row["conventional_minus_phase2"] = row["conventional_score"] - row["phase2_score"]
        rows.append(row)
    scores = {k: {r["strategy"]: r[f"{k}_score"] for r in rows} for k in ("phase1", "phase2", "conventional")}
    return {
        "run": tc.run.name, "objective": objective, "sampler": tc.search.sampler, "protocol": tc.search.protocol,
        "storage": storage, "tuning_benchmark": tc.tuning, "evaluation_benchmark": tc.evaluation,
        "tuning_seeds": list(tc.search.seeds), "evaluation_seeds": list(tc.run.seeds),
        "strategies": rows,
        "rankings": {"phase1": ranking(scores["phase1"]), "two_phase": ranking(scores["phase2"]),
                     "conventional": ranking(scores["conventional"])},
        "kendall_tau": {"two_phase_vs_conventional": kendall(scores["phase2"], scores["conventional"]),
                        "phase1_vs_two_phase": kendall(scores["phase1"], scores["phase2"])},
    }


def strategy_frame(summary: dict[str, Any]):
    """``tune.csv``: one row per strategy with the chosen values, the three scores and both ranks."""
    import pandas as pd

    rank = {k: {s: i + 1 for i, s in enumerate(v)} for k, v in summary["rankings"].items()}
    rows = []
    for r in summary["strategies"]:
        p2 = r["phase2"] or {}
        rows.append({
            "strategy": r["strategy"], "objective": summary["objective"], "n_trials": r["budget"],
            "chosen": json.dumps(r["chosen"], sort_keys=True, default=str) if r["chosen"] is not None else "",
            "phase1_score": r["phase1_score"], "phase2_score": r["phase2_score"], "phase2_std": p2.get("std"),
            "phase2_seeds": len(p2.get("per_seed", {})), "conventional_score": r["conventional_score"],
            "conventional_choice": json.dumps(r["conventional_choice"], sort_keys=True, default=str) if r["conventional_choice"] is not None else "",
            "conventional_minus_phase2": r.get("conventional_minus_phase2"),
            "rank_two_phase": rank["two_phase"].get(r["strategy"]), "rank_conventional": rank["conventional"].get(r["strategy"]),
        })
    return pd.DataFrame(rows)


def trials_frame(summary: dict[str, Any]):
    """``trials.csv``: one row per trial of every study (protocol, strategy, number, state, value, params)."""
    import pandas as pd

    rows = []
    for r in summary["strategies"]:
        for protocol in ("tuning", "conventional"):
            study = r.get(protocol)
            for t in (study or {}).get("trials", []):
                rows.append({"protocol": protocol, "strategy": r["strategy"], "data": study["data"], "trial": t["number"],
                             "state": t["state"], "value": t["value"], "params": json.dumps(t["params"], sort_keys=True, default=str),
                             "seconds": t.get("seconds"), "retry_of": t.get("retry_of")})
    return pd.DataFrame(rows, columns=["protocol", "strategy", "data", "trial", "state", "value", "params", "seconds", "retry_of"])


def write_outputs(path: Path, summary: dict[str, Any]) -> None:
    from .store import atomic_write_json, atomic_write_text

    atomic_write_json(path / "tune.json", summary)
    atomic_write_text(path / "tune.csv", strategy_frame(summary).to_csv(index=False))
    atomic_write_text(path / "trials.csv", trials_frame(summary).to_csv(index=False))


def format_tune_summary(summary: dict[str, Any]) -> str:
    """The printed table: chosen values, phase-1 / phase-2 / conventional scores, ranks, Kendall's tau."""
    df = strategy_frame(summary)
    if df.empty:
        return "no strategies"
    cols = ["strategy", "chosen", "phase1_score", "phase2_score", "phase2_std", "conventional_score", "rank_two_phase", "rank_conventional"]
    text = df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")
    for k, v in summary["kendall_tau"].items():
        text += f"\nKendall tau {k.replace('_', ' ')}: " + ("n/a" if v["tau"] is None else f"{v['tau']:.3f} (p={v['p_value']:.3f}, {v['n']} strategies)")
    return f"objective {summary['objective']}\n" + text


# ---------------------------------------------------------------- command line


def add_tune_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``clbench tune`` beyond the matrix options; they override the config's ``search:``."""
    p.add_argument("--protocol", help="both (default): phase 1 + phase 2 + conventional; two-phase; conventional")
    p.add_argument("--sampler", help="tpe | random | grid")
    p.add_argument("--n-trials", dest="n_trials", type=int, help="trial budget per strategy")
    p.add_argument("--objective", help="acc | aia")
    p.add_argument("--tuning-seeds", dest="tuning_seeds", type=int, nargs="+", help="seeds of each phase-1 trial on D_HT")
    p.add_argument("--storage", help="Optuna storage URL (SQLAlchemy), shared by several workers; default sqlite in the run folder")
    p.add_argument("--retry-failed", action="store_true", help="run failed phase-2 cells again")


def cmd_tune(args: argparse.Namespace) -> int:
    """``clbench tune CONFIG``: parse, run (or resume) the protocol, print the summary."""
    from .cli import _apply_overrides, load_config_data

    data, stem = load_config_data(args.config)
    data = _apply_overrides(data, args)
    search = dict(data.get("search") or {}) if isinstance(data.get("search") or {}, dict) else data.get("search")
    if isinstance(search, dict):
        for key, arg in (("protocol", "protocol"), ("sampler", "sampler"), ("n_trials", "n_trials"),
                         ("objective", "objective"), ("seeds", "tuning_seeds"), ("storage", "storage")):
            if getattr(args, arg, None) is not None:
                search[key] = getattr(args, arg)
        data["search"] = search
    tc = parse_tune_config(data, default_name=stem)
    summary = run_tune(tc, quiet=args.quiet, retry_failed=args.retry_failed)
    print(f"\n{tc.run_dir}\n" + format_tune_summary(summary))
    if tc.search.protocol != "conventional" and not getattr(args, "no_report", False):
        from clbench.reports.report import report_after_run  # the phase-2 cells, as after clbench run

        report_after_run(tc.run_dir, quiet=args.quiet)
    ok = all(r["phase2"] and not r["phase2"]["failed"] for r in summary["strategies"]) if tc.search.protocol != "conventional" else True
    return 0 if ok else 1
