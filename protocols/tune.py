"""The two-phase tune-then-evaluate protocol (``clbench tune``), after Cha & Cho, "Hyperparameters in
Continual Learning: a Reality Check" (arXiv 2403.09066).

* **Phase 1 (tuning)**: for each strategy, an Optuna study on the tuning stream D_HT (``tuning:``). A trial
  runs the strategy with the sampled values on D_HT once per tuning seed (``search.seeds``) through the
  evaluation loop; its value is the mean over those seeds of the objective (``acc`` or ``aia``). A trial whose
  cell fails is recorded FAIL with the reason (it counts against the budget; no value). A closed-form head
  searched only over values that enter its solve is fitted once per tuning seed and each trial re-solves
  snapshots of that fit, with the same values as refitting (:mod:`clbench.protocols.resolve`;
  ``search.resolve: false`` refits).
* **Phase 2 (evaluation)**: the best phase-1 values, then exactly one run per strategy and seed (``seeds:``) on
  the evaluation stream D_E (``evaluation:``), through the matrix runner (``cells/``, ``results.csv``, resume
  and reports as for ``clbench run``). Nothing measured on D_E feeds back into the choice.
* **Conventional protocol** (for comparison): a second study per strategy tuned directly on D_E over the
  evaluation seeds; its best trial value is the number a paper tuning on its test stream would report. It
  runs after phase 2 and lives in separate studies.

Before anything runs, D_HT and D_E are built and compared: they must share the CL scenario, and they may
not share a sample. Samples are compared by content: the per-sample digests of the source samples the
streams hold (so a permuted or sub-sampled copy of the same images is recognised), or of the inputs
themselves for streams that do not say where their samples come from.

Trials run on the matrix executors (``--workers N``, ``--executor ray``) by ask-and-tell: the driver asks the
study for a trial whenever a worker is free, and only the driver talks to the storage. Pruning (median rule)
works across workers: each trial's first-seed cell carries the median intermediate values of the trials
finished when it was asked, and stops itself when it falls below them. With one worker this is Optuna's
MedianPruner; with several, TPE sees fewer finished trials when it samples (random and grid search give the
same study as with one worker).

Trials live in an Optuna RDB storage (a SQLite file ``tune.db`` in the run folder unless
``search.storage``/``--storage`` gives a SQLAlchemy URL), so a killed run resumes its studies and several
``clbench tune`` processes can share one study: each counts the trials of all processes (running ones
included) against the budget, and a trial whose process died stops beating and is failed and retried by the
others after ``2 x search.heartbeat`` seconds. A process that finds the budget used waits for the trials still
running in the others before it chooses, so every process chooses from the complete study; trial n's random
draws depend only on ``(sampler_seed, n)`` (:func:`draws_by_trial_number`), so with the random sampler the
shared study holds the trials one process alone would run. The whole command holds the run folder's lock.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState

from clbench.callbacks import Callbacks
from clbench.digests import row_digests
from clbench.errors import UserError
from clbench.files import atomic_write_yaml
from clbench.results import CellRecord
from clbench.stream import Stream
from clbench.strategies.registry import resolve_strategy

from .config import CellSpec
from .executors import Executor, SerialExecutor, make_executor
from .resolve import FACTOR_MIN_TRIALS, ResolvedTrials, resolvable_class
from .runner import PruneRule, RunFolder, StreamCache, cell_stream, execute_cell, run_matrix
from .search import (best_trial, decode_params, default_storage_url, enqueue_grid, finished_trials, make_sampler, open_storage,
                     open_study, partial_score, quiet_optuna, recover_running, redact, suggest, trial_records)
from .tune_config import TuneConfig, TunedStrategy
from .tune_summary import summarise, write_outputs

COUNTED = "counts_against_budget"  # user attribute of FAIL trials that used up budget (a failed cell, not an interruption)


# ---------------------------------------------------------------- D_HT and D_E: same scenario, no shared sample


def scenario_errors(ht: Stream, ev: Stream) -> list[str]:
    """Differences of CL scenario between the built D_HT and D_E streams (kind, experiences, classes per experience)."""
    errors = []
    if ht.scenario != ev.scenario:
        errors.append(f"scenario: D_HT is {ht.scenario}, D_E is {ev.scenario}; fix: use the same scenario")
    if len(ht) != len(ev):
        errors.append(f"D_HT has {len(ht)} experiences, D_E has {len(ev)}; fix: set the same n_experiences (or base/increment)")
    else:
        a, b = [len(e.classes) for e in ht], [len(e.classes) for e in ev]
        if a != b:
            errors.append(f"classes per experience differ: D_HT {a}, D_E {b}; fix: select as many classes for both "
                          f"(classes:) with the same n_experiences/base/increment")
    return errors


def sample_digests(stream: Stream) -> set[bytes]:
    """Per-sample content digests of every training and test sample of a stream.

    When the stream knows its samples' source (``origin`` indices into ``stream.sources``), the digests are
    those of the source samples (a permuted or sub-sampled copy of an image has its original's digest);
    otherwise those of the inputs as built.
    """
    out: set[bytes] = set()
    for split in ("train", "test"):
        parts = [getattr(e, split) for e in stream.experiences]
        source = stream.sources.get(split)
        if source is not None and all(p.origin is not None for p in parts):
            idx = np.unique(np.concatenate([p.origin.numpy() for p in parts]))
            out.update(row_digests(source.x[idx]).tolist())
        else:
            for p in parts:
                out.update(row_digests(p.x).tolist())
    return out


def data_errors(tc: TuneConfig, cache: StreamCache) -> list[str]:
    """Why D_HT and D_E may not be used together: a different scenario, or shared samples (by content)."""

    def build(bench: dict[str, Any], seed: int) -> Stream:
        return cell_stream(CellSpec(bench, {"name": "-"}, seed, tc.run.device, tc.run.data_root, tc.run.cache_dir), False, cache)

    errors = scenario_errors(build(tc.tuning, tc.search.seeds[0]), build(tc.evaluation, tc.run.seeds[0]))
    tuning: set[bytes] = set()
    for seed in tc.search.seeds:
        tuning |= sample_digests(build(tc.tuning, seed))
    evaluation: set[bytes] = set()
    for seed in tc.run.seeds:
        evaluation |= sample_digests(build(tc.evaluation, seed))
    shared = len(tuning & evaluation)
    if shared:
        errors.append(f"D_HT and D_E share {shared} sample(s) by content ({len(tuning)} distinct samples in D_HT, "
                      f"{len(evaluation)} in D_E): the evaluation data must not be seen while tuning; fix: tune on "
                      f"another dataset, or give disjoint `classes:` lists (e.g. tuning: classes: [0, 1, 2, 3, 4], "
                      f"evaluation: classes: [5, 6, 7, 8, 9])")
    return errors


# ---------------------------------------------------------------- phase 1 and the conventional studies


@dataclass
class _Trial:
    trial: optuna.Trial
    params: dict[str, Any]
    seeds: list[int]
    waiting: list[CellSpec]
    beat: Any
    cells: dict[int, dict[str, Any]] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)


def search_strategy(tc: TuneConfig, ts: TunedStrategy, protocol: str, storage: "optuna.storages.RDBStorage", *,
                    local: bool, executor: Executor, cache: StreamCache,
                    echo: Callable[[str], None] | None) -> dict[str, Any]:
    """Run (or resume) one strategy's study on D_HT (``protocol='tuning'``, tuning seeds) or D_E
    (``'conventional'``, evaluation seeds) up to its budget; return the study's record."""
    bench, seeds = (tc.tuning, list(tc.search.seeds)) if protocol == "tuning" else (tc.evaluation, list(tc.run.seeds))
    data_name = "D_HT" if protocol == "tuning" else "D_E"
    objective = tc.search.objective
    after = tc.search.pruning_after
    name = study_name(tc, ts, protocol, bench, seeds)
    study = open_study(storage, name, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())
    retried = recover_running(study) if local else []
    where = f"strategy {ts.label}"
    study.sampler = draws_by_trial_number(make_sampler(tc.search.sampler, ts.space, tc.search.sampler_seed, ts.budget, where),
                                          tc.search.sampler_seed)
    if echo and retried:
        echo(f"[{protocol}] {ts.label}: trials {retried} were interrupted; their parameters run again")
    live: dict[int, _Trial] = {}
    followups: deque[CellSpec] = deque()
    n_exp_seen: list[int | None] = [None]
    asked = 0
    guard = 2 * ts.budget + 10
    waited_for: list[list[int]] = [[]]

    def prune_rule(n_exp_hint: int | None) -> PruneRule | None:
        """The median rule for the next trial, from the trials finished so far (no threshold before the startup)."""
        if after is None:
            return None
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        steps = after if after > 0 else max(1, (n_exp_hint or 2) // 2)
        if len(done) < tc.search.pruning_startup:
            return PruneRule(objective, steps, ())
        below = []
        for step in range(1, steps + 1):
            values = [t.intermediate_values[step] for t in done if step in t.intermediate_values]
            if values:
                below.append((step, float(statistics.median(values))))
        return PruneRule(objective, steps, tuple(below))

    def counts(t: optuna.trial.FrozenTrial) -> bool:
        """Whether a trial uses budget: finished, pruned, running (in any process), or failed because of its cell."""
        return t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) or (
            t.state == TrialState.FAIL and bool(t.user_attrs.get(COUNTED)))

    def used() -> int:
        """Trials that count against the budget, in every process sharing the study (running ones included)."""
        optuna.storages.fail_stale_trials(study)
        return sum(counts(t) for t in study.get_trials(deepcopy=False))

    def elsewhere() -> list[int]:
        """The trials of this study running in other processes (called when this one has none in flight)."""
        return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]

    def over_budget(number: int) -> bool:
        """After a race with another process: the budget is used up by trials with a lower number."""
        return sum(t.number < number and counts(t) for t in study.get_trials(deepcopy=False)) >= ts.budget

    def jobs() -> Iterator[CellSpec | None]:
        nonlocal asked
        while True:
            if followups:
                yield followups.popleft()
                continue
            if used() >= ts.budget or asked >= guard:
                if live:
                    yield None  # wait for the trials in flight
                    continue
                others = elsewhere() if asked < guard else []
                if others:
                    # trials of other processes still run: wait for them (or for their heartbeat to go stale, when
                    # they are failed and queued again), so every process chooses from the complete study
                    if echo is not None and others != waited_for[0]:
                        echo(f"[{protocol}] {ts.label}: budget used; waiting for trial(s) {others} running in other processes")
                    waited_for[0] = others
                    time.sleep(min(2.0, tc.search.heartbeat / 2))
                    continue
                return
            trial = study.ask()
            asked += 1
            beat = get_heartbeat_thread(trial._trial_id, storage)
            beat.start()  # at once: a RUNNING trial that never beat is never found stale by the other processes
            if over_budget(trial.number):
                beat.join()
                trial.set_user_attr("error", "not run: the budget was reached by another process sharing the study")
                study.tell(trial, state=TrialState.FAIL)
                continue
            params = suggest(trial, ts.space)
            entry = {**ts.entry, **params}
            trial.set_user_attr("data", data_name)
            tag = f"{name}#{trial.number}"
            cells = [replace(tc.run.cell(bench, entry, seed), tag=tag) for seed in seeds]
            t = _Trial(trial, params, seeds, [], beat)
            live[trial.number] = t
            rule = prune_rule(n_exp_seen[0])
            if rule is not None:
                t.waiting = cells[1:]
                yield replace(cells[0], prune=rule)
            else:
                yield from cells

    def finish(t: _Trial, state: TrialState, value: float | None = None, error: str = "") -> None:
        t.beat.join()
        del live[t.trial.number]
        try:
            t.trial.set_user_attr("cells", [t.cells[s] for s in t.seeds if s in t.cells])
            if error:
                t.trial.set_user_attr("error", error)
            if state == TrialState.FAIL:
                t.trial.set_user_attr(COUNTED, True)
            study.tell(t.trial, value if state == TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another process found this trial's heartbeat stale (this one stalled for over 2 x heartbeat), failed it
            # and queued its parameters again: the retry's result counts, this one is dropped
            if echo is not None:
                echo(f"[{protocol}] {ts.label}: trial {t.trial.number} was failed by another process sharing the study "
                     f"(no heartbeat for {2 * tc.search.heartbeat:g} s); its result is dropped, the parameters run again")
            return
        if echo is not None:
            best = best_trial(study)
            shown = {TrialState.COMPLETE: f"{objective} {100 * (value or 0):.2f}%", TrialState.PRUNED: "pruned",
                     TrialState.FAIL: f"FAILED ({error[:120]})"}[state]
            best_text = f"best {100 * best.value:.2f}%, " if best is not None else ""
            values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(t.params.items()))
            echo(f"[{protocol}] {ts.label}: trial {t.trial.number} {shown} ({values}) ({best_text}{finished_trials(study)}/{ts.budget} done)")

    if tc.search.sampler == "grid":
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        enqueue_grid(study, ts.space, tc.search.sampler_seed, where, ts.budget - used() - waiting)
    fn = partial(execute_cell, cache=cache) if isinstance(executor, SerialExecutor) else execute_cell
    if tc.search.resolve and resolvable_class(resolve_strategy(ts.entry["name"]), set(ts.space)):
        # closed-form head: one fit per seed in this process, every trial a re-solve (protocols/resolve.py)
        factor = ts.budget >= FACTOR_MIN_TRIALS
        executor = SerialExecutor()
        fn = partial(execute_cell, cache=StreamCache(len(seeds) + 1),
                     make_strategy=ResolvedTrials(set(ts.space), factor))
        if echo is not None:
            echo(f"[{protocol}] {ts.label}: {', '.join(sorted(ts.space))} enter only the solve: one fit per seed, every "
                 f"trial re-solves its snapshots ({'eigendecompositions' if factor else 'copies of the statistics'})")
    for record in executor.run(jobs(), fn):
        t = live.get(int(str(record.spec.get("tag", "")).rsplit("#", 1)[-1]))
        if t is None:  # another seed of this trial failed (or it was pruned) and the trial is told already
            continue
        seed = record.seed
        n_exp_seen[0] = len(record.test_sizes) or n_exp_seen[0]
        t.cells[seed] = {"seed": seed, "status": record.status, "error": record.error,
                         "acc": record.metrics.get("acc"), "aia": record.metrics.get("aia"),
                         "train_seconds": record.metrics.get("train_seconds"),
                         "classes": (record.stream.get("params") or {}).get("classes")}
        rule = record.spec.get("prune")
        if rule is not None:  # the first seed's intermediate values, for pruning
            for step in range(1, min(int(rule["after"]), len(record.accuracy)) + 1):
                t.trial.report(partial_score(record.accuracy[:step], record.test_sizes, objective), step)
        if record.error_kind == "stopped":
            finish(t, TrialState.PRUNED, error=record.error)
            continue
        if not record.ok:
            finish(t, TrialState.FAIL, error=f"seed {seed}: {record.error}")
            continue
        t.scores[seed] = float(record.metrics[objective])
        if t.waiting:
            followups.extend(t.waiting)
            t.waiting = []
        if len(t.scores) == len(t.seeds):
            finish(t, TrialState.COMPLETE, float(np.mean([t.scores[s] for s in t.seeds])))
    best = best_trial(study)
    chosen = None if best is None else decode_params(ts.space, best.params)
    return {
        "study": name, "data": data_name, "benchmark": bench, "seeds": list(seeds), "budget": ts.budget,
        "trials": trial_records(study, ts.space),
        "best": None if best is None else {"number": best.number, "value": best.value, "params": chosen},
    }


def draws_by_trial_number(sampler: optuna.samplers.BaseSampler, seed: int) -> optuna.samplers.BaseSampler:
    """Make the sampler's random draws for trial n depend only on ``(seed, n)``: its generators (and TPE's
    random start-up sampler's) are reseeded with ``SeedSequence([seed, n])`` when trial n is created.

    Trial numbers are unique within a study, so processes sharing a study never draw the same values by
    accident (two processes seeded alike would otherwise draw the same sequence), a resumed study does not
    repeat its draws, and with the random sampler trial n gets the same parameters whichever process or
    worker asks for it: the study's trials are those one process alone would run.
    """
    inner = sampler.before_trial

    def before_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        state = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
        for owner in (sampler, getattr(sampler, "_random_sampler", None)):
            rng = getattr(getattr(owner, "_rng", None), "rng", None)
            if rng is not None:
                rng.seed(state)
        inner(study, trial)

    sampler.before_trial = before_trial  # type: ignore[method-assign]
    return sampler


def study_name(tc: TuneConfig, ts: TunedStrategy, protocol: str, bench: dict[str, Any], seeds: Sequence[int]) -> str:
    """``<run>/<protocol>/<strategy>/<hash>``: the hash covers what makes trial values comparable (stream,
    seeds, objective, fixed values, space), so changing any of them starts a fresh study while rerunning (or
    raising n_trials) continues the old one."""
    import hashlib

    from .search import param_to_config

    key = json.dumps({"b": bench, "seeds": list(seeds), "obj": tc.search.objective, "fixed": ts.entry,
                      "space": {k: param_to_config(p) for k, p in ts.space.items()}}, sort_keys=True, default=str)
    return f"{tc.run.name}/{protocol}/{ts.label}/{hashlib.sha1(key.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------- the protocol


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """A storage that cannot be written (full disk, database down) is one UserError naming it and the fix."""
    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError) as exc:
        raise UserError(f"cannot write the tuning storage {redact(url)}: {str(exc).splitlines()[0]}; trials finished "
                        f"before are kept. Fix: free disk space (or bring the database back), then rerun the same "
                        f"command: the studies resume") from None


def run_tune(tc: TuneConfig, *, quiet: bool = False, retry_failed: bool = False, executor: Executor | None = None,
             echo: Callable[[str], None] = print, callbacks: Callbacks | None = None) -> dict[str, Any]:
    """Run (or resume) the whole protocol; write and return the summary (``tune.json``).

    Order: the data check (nothing is written when it fails), phase 1 on D_HT for every strategy, then phase 2
    on D_E with the chosen values, then the conventional studies on D_E. The run folder's lock is held from
    start to end.
    """
    say = None if quiet else echo
    folder = RunFolder(tc.run_dir)
    cache = StreamCache(size=len(tc.search.seeds) + len(tc.run.seeds) + 2)
    errors = data_errors(tc, cache)
    if errors:
        raise UserError("D_HT (tuning) and D_E (evaluation) cannot be used together (nothing was run or written):\n  - "
                        + "\n  - ".join(errors))
    url = tc.search.storage or default_storage_url(tc.run_dir)
    local = tc.search.storage is None  # our own SQLite file: a RUNNING trial found under the lock is stale
    protocol = tc.search.protocol
    executor = executor or make_executor(tc.run.executor, tc.run.workers, timeout=tc.run.timeout, address=tc.run.address)
    tuning: dict[str, dict[str, Any]] = {}
    conventional: dict[str, dict[str, Any]] = {}
    records: list[CellRecord] = []
    with quiet_optuna(), folder.locked(), storage_errors(url):
        storage = open_storage(url, heartbeat_interval=int(tc.search.heartbeat))
        atomic_write_yaml(folder.path / "tune_config.yaml", tc.to_dict())
        if protocol != "conventional":
            for ts in tc.strategies:
                tuning[ts.label] = search_strategy(tc, ts, "tuning", storage, local=local, executor=executor, cache=cache, echo=say)
            chosen = [{**ts.entry, **tuning[ts.label]["best"]["params"]} for ts in tc.strategies if tuning[ts.label]["best"]]
            records = run_matrix(replace(tc.run, strategies=chosen), quiet=quiet, retry_failed=retry_failed, echo=echo,
                                 executor=executor, callbacks=callbacks or Callbacks(), folder_locked=True)
        if protocol != "two-phase":
            for ts in tc.strategies:
                conventional[ts.label] = search_strategy(tc, ts, "conventional", storage, local=local, executor=executor,
                                                         cache=cache, echo=say)
        summary = summarise(tc, tuning, records, conventional, redact(url))
        write_outputs(folder.path, summary)
    return summary
