"""Hyperparameter search with Optuna: search spaces, samplers, the RDB storage and stale-trial recovery.

Used by :mod:`clbench.protocols.tune`. Nothing here knows about streams or the runner; a trial's
objective is supplied by the caller.

Search spaces come from the strategy class (``search_space``: ``{name: Float|Int|Choice}``) and a
config entry: ``search_space: {name: <override>}`` replaces or adds a range (parsed by
:func:`clbench.strategies.space.param_from_config`), and a plain hyperparameter value in the entry
(``lr: 0.01``) fixes it, removing it from the search.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clbench.errors import UserError
from clbench.metrics import average_incremental_accuracy, final_accuracy
from clbench.strategies.space import Choice, Float, Int, Param, param_from_config

if TYPE_CHECKING:  # pragma: no cover
    import optuna

SAMPLERS = ("tpe", "random", "grid")
OBJECTIVES = ("acc", "aia")
MAX_INT_GRID = 100  # an Int range with more values than this needs explicit choices for grid search


def space_problems(cls: Any, overrides: Mapping[str, Any] | None, fixed: Mapping[str, Any],
                   where: str) -> tuple[dict[str, Param], list[str]]:
    """The search space of one strategy entry, and every problem with it.

    The class's declared ``search_space`` restricted to its hyperparameters; ``overrides`` (the entry's
    ``search_space:``) replaces or adds ranges; every name in ``fixed`` (plain values in the entry) is removed.
    Problems: an unknown hyperparameter, an unreadable range, a name both fixed and searched, and range ends or
    choices that break the hyperparameter's declared constraint (so no trial can draw an invalid value).
    """
    hyperparameters = cls.hyperparameters()
    constraints = cls.constraints()
    errors: list[str] = []
    space: dict[str, Param] = {k: v for k, v in (getattr(cls, "search_space", {}) or {}).items() if k in hyperparameters}
    for name, value in (overrides or {}).items():
        if name not in hyperparameters:
            errors.append(f"{where}: search_space names {name!r}, which is not a hyperparameter; valid: {', '.join(sorted(hyperparameters))}")
            continue
        if name in fixed:
            errors.append(f"{where}: {name!r} is both fixed ({name}: {fixed[name]!r}) and in search_space; fix: remove one of them")
            continue
        try:
            p = param_from_config(value)
        except UserError as exc:
            errors.append(f"{where}: search_space.{name}: {exc}")
            continue
        if isinstance(p, (Float, Int)) and not p.low <= p.high:
            errors.append(f"{where}: search_space.{name}: low {p.low} is above high {p.high}")
            continue
        if isinstance(p, (Float, Int)) and p.log and p.low <= 0:
            errors.append(f"{where}: search_space.{name}: a log range needs low > 0, got {p.low}")
            continue
        if isinstance(p, Choice) and not p.values:
            errors.append(f"{where}: search_space.{name}: an empty list of choices")
            continue
        space[name] = p
    for name, p in space.items():
        c = constraints.get(name)
        if c is None or name in fixed:
            continue
        values = list(p.values) if isinstance(p, Choice) else [p.low, p.high]
        for v in values:
            why = c.problem(v)
            if why:
                errors.append(f"{where}: search_space.{name}: the value {v!r} is not valid ({name} {why})")
                break
    return {k: v for k, v in space.items() if k not in fixed}, errors


def param_to_config(p: Param) -> Any:
    """The config form of a range (read back by ``param_from_config``): a list of choices or ``{low, high, log, type}``."""
    if isinstance(p, Choice):
        return list(p.values)
    return {"low": p.low, "high": p.high, "log": p.log, "type": "int" if isinstance(p, Int) else "float"}


def describe_space(space: Mapping[str, Param]) -> dict[str, str]:
    """``{name: 'float[0.0001, 0.3] log'}`` for the record."""
    return {k: p.describe() for k, p in space.items()}


def _primitive(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _encode(v: Any) -> Any:
    """Optuna categoricals hold None/bool/int/float/str; other choices (lists) travel as JSON text."""
    return v if _primitive(v) else json.dumps(v)


def decode_params(space: Mapping[str, Param], params: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a trial's stored parameters back into hyperparameter values (JSON-encoded choices decoded)."""
    out = {}
    for k, v in params.items():
        p = space.get(k)
        if isinstance(p, Choice) and isinstance(v, str) and not any(isinstance(c, str) for c in p.values):
            v = json.loads(v)
        out[k] = v
    return out


def suggest(trial: "optuna.Trial", space: Mapping[str, Param]) -> dict[str, Any]:
    """Ask the trial for one value of each hyperparameter of ``space``."""
    raw: dict[str, Any] = {}
    for name, p in space.items():
        if isinstance(p, Float):
            raw[name] = trial.suggest_float(name, float(p.low), float(p.high), log=p.log)
        elif isinstance(p, Int):
            raw[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
        else:
            raw[name] = trial.suggest_categorical(name, [_encode(v) for v in p.values])
    return decode_params(space, raw)


def grid_of(space: Mapping[str, Param], where: str) -> dict[str, list[Any]]:
    """The finite grid of a search space; a float range cannot be gridded (UserError naming the fix)."""
    grid: dict[str, list[Any]] = {}
    for name, p in space.items():
        if isinstance(p, Choice):
            grid[name] = [_encode(v) for v in p.values]
        elif isinstance(p, Int) and p.high - p.low + 1 <= MAX_INT_GRID:
            grid[name] = list(range(int(p.low), int(p.high) + 1))
        else:
            raise UserError(f"{where}: grid search needs a finite list for {name!r} (now {p.describe()}); "
                            f"fix: give search_space: {{{name}: [v1, v2, ...]}}, fix {name} to one value, or use sampler: tpe|random")
    return grid


def grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    return int(math.prod(len(v) for v in grid.values()))


def make_sampler(kind: str, space: Mapping[str, Param], seed: int, n_trials: int, where: str) -> "optuna.samplers.BaseSampler":
    """An Optuna sampler: ``random`` or ``tpe`` (``grid`` samples nothing itself: :func:`enqueue_grid` queues it).

    TPE starts with ``min(10, max(1, n_trials // 2))`` random trials (Optuna's default is 10, too
    many for small budgets). ``seed`` should differ between restarts of the same study so that a
    resumed random search does not repeat its first draws.
    """
    import optuna

    if kind == "grid":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, n_trials // 2)))
    raise UserError(f"unknown sampler {kind!r}; valid: {', '.join(SAMPLERS)}")


def enqueue_grid(study: "optuna.Study", space: Mapping[str, Param], seed: int, where: str, limit: int) -> int:
    """Queue at most ``limit`` combinations of the grid that no trial of ``study`` holds yet (finished, running or
    queued), in an order drawn from ``seed``; return how many were queued.

    Grid search by ask-and-tell: the queued parameters are what each asked trial suggests (Optuna's
    ``GridSampler`` stops the study from inside ``tell``, which only works under ``study.optimize``).
    """
    import itertools
    import random

    grid = grid_of(space, where)
    names = list(grid)
    combos = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    random.Random(seed).shuffle(combos)
    seen = {json.dumps(t.params, sort_keys=True) for t in study.get_trials(deepcopy=False)
            if t.state.name != "FAIL" or t.user_attrs.get("counts_against_budget")}
    seen |= {json.dumps(t.system_attrs.get("fixed_params", {}), sort_keys=True) for t in study.get_trials(deepcopy=False)
             if t.state.name == "WAITING"}
    queued = 0
    for combo in combos:
        if queued >= limit:
            break
        if json.dumps(combo, sort_keys=True) not in seen:
            study.enqueue_trial(combo, skip_if_exists=False)
            queued += 1
    return queued


def default_storage_url(run_dir: str | Path) -> str:
    """The embedded default: a SQLite file ``tune.db`` in the run folder."""
    path = Path(run_dir).resolve() / "tune.db"
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """The storage URL with any password replaced by ``***`` (safe to write into the record)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    cred, _, host = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in cred else url


@contextmanager
def quiet_optuna(quiet: bool = True) -> Iterator[None]:
    """Silence Optuna's per-trial log lines and experimental-API warnings for a block, then restore."""
    import optuna

    before = optuna.logging.get_verbosity()
    if quiet:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # clbench drives heartbeats itself around ask-and-tell (see clbench.protocols.tune)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            yield
    finally:
        optuna.logging.set_verbosity(before)


def open_storage(url: str, heartbeat_interval: int = 60) -> "optuna.storages.RDBStorage":
    """An Optuna RDB storage (any SQLAlchemy URL) with heartbeats.

    A trial whose process died (killed, machine lost) stops beating; after ``2 x heartbeat_interval``
    seconds any worker marks it failed and queues its parameters again (Optuna's
    ``RetryHeartbeatStaleTrialCallback``), so no trial is lost when workers share a study.
    """
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_interval,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
        except ImportError as exc:
            raise UserError(f"cannot open Optuna storage {redact(url)}: {exc}; fix: install the database driver "
                            f"(pip install 'clbench[postgres]' for postgresql+psycopg://)") from None
        except sqlalchemy.exc.DBAPIError as exc:
            # several processes creating the tables of an empty database at once (optuna/optuna#1092): the
            # losers of the race retry and find the tables made
            racing = isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) or "already exists" in str(exc)
            if racing and attempt < 5:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise UserError(f"cannot open Optuna storage {redact(url)} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                            f"fix: check that the database server is running and the URL's user, host, port and "
                            f"database are right") from None
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds on a bad URL
            raise UserError(f"cannot open Optuna storage {redact(url)} ({type(exc).__name__}: {exc}); fix: give a valid SQLAlchemy URL such as sqlite:///path/tune.db or postgresql://user:pw@host/db") from None
    raise AssertionError("unreachable")


def open_study(storage: "optuna.storages.RDBStorage", name: str, sampler: "optuna.samplers.BaseSampler",
               pruner: "optuna.pruners.BasePruner") -> "optuna.Study":
    """Create the (maximising) study, or load it when it exists: this is what makes tuning resumable."""
    import optuna

    return optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


def recover_running(study: "optuna.Study") -> list[int]:
    """Fail every RUNNING trial of ``study`` now and queue its parameters again; return their numbers.

    Only safe when no other process can be running trials of this study: the caller holds the run
    folder's lock and the storage is the run folder's own SQLite file. (Shared storages rely on the
    heartbeat instead, see :func:`open_storage`.)
    """
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            storage.set_trial_user_attr(t._trial_id, "error", "interrupted (process stopped during the trial); parameters queued again")
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        numbers.append(t.number)
        if callback is not None:
            callback(study, storage.get_trial(t._trial_id))
    return numbers


def finished_trials(study: "optuna.Study") -> int:
    """Trials that count against the budget: completed or pruned (failed/interrupted ones are retried)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def best_trial(study: "optuna.Study") -> "optuna.trial.FrozenTrial | None":
    """The completed trial with the highest value (lowest number on ties), or None."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None and not math.isnan(t.value)]
    if not done:
        return None
    return min(done, key=lambda t: (-t.value, t.number))


def trial_records(study: "optuna.Study", space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Every trial of a study as a plain dict: number, state, value, params, intermediate values, attrs."""
    out = []
    for t in study.get_trials(deepcopy=False):
        out.append({
            "number": t.number, "state": t.state.name, "value": t.value,
            "params": decode_params(space, t.params),
            "intermediate": {int(k): float(v) for k, v in sorted(t.intermediate_values.items())},
            "retry_of": t.system_attrs.get("failed_trial"),
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None,
            **{k: v for k, v in t.user_attrs.items()},
        })
    return out


def partial_score(R: Sequence[Sequence[float]], test_sizes: Sequence[int], objective: str) -> float:
    r"""The objective on the experiences seen so far, from the k x T rows of R filled after k experiences.

    ``acc``: (1/k) \sum_{j<k} R[k-1, j] (final accuracy as if the stream ended at k);
    ``aia``: AIA of the leading k x k block. Used as the intermediate value for pruning.
    """
    k = len(R)
    block = np.asarray(R, dtype=float)[:, :k]
    if objective == "aia":
        return average_incremental_accuracy(block, list(test_sizes)[:k])
    return final_accuracy(block)
