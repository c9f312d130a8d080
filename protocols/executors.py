"""Executors run cells and hand results back to the driver, which alone writes the run folder.

Three executors share one shape, ``run(cells, fn) -> iterator of results`` (completion order):

* :class:`SerialExecutor`: in this process, one cell after the other (streams shared between
  consecutive cells). The default for ``--workers 1`` without a timeout.
* :class:`ProcessExecutor` (``--executor local --workers N``): a pool of at most N worker
  processes from the stdlib ``multiprocessing`` (forkserver context, torch preloaded), **a fresh
  process per cell**, so a crash, an out-of-memory kill or a timeout costs only that cell and the
  peak-memory figure is the cell's own. Each worker runs ``cores // N`` torch threads.
* :class:`RayExecutor` (``--executor ray [--address ADDR]``): each cell a Ray task with its CPU/GPU
  requirements, on a local Ray instance or any cluster (``ray`` is imported only here, lazily).

``cells`` may be a lazy iterable: an executor pulls the next cell only when a worker slot is free (the
tuning protocol relies on this to ask Optuna for trials as workers become idle). It may yield ``None``
for "nothing to run now": the executor then waits for a running cell to finish before asking again.

A cell that dies (exception in the executor's plumbing, killed process, timeout) comes back as a
failed :class:`CellRecord` with the reason; nothing is retried here (``--retry-failed`` does that).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from clbench.errors import UserError
from clbench.host import usable_cores
from clbench.results import CellRecord

from .config import CellSpec

CellFn = Callable[[CellSpec], CellRecord]
_END = object()

#: modules the forkserver imports once, so that a fresh worker per cell starts in milliseconds
#: (torch._dynamo is imported lazily by the first optimizer, sklearn by the digits source: seconds each)
PRELOAD = ("clbench.protocols.runner", "clbench.strategies.baselines", "torch._dynamo", "sklearn.model_selection",
           "sklearn.datasets", "torchvision.datasets")


class Executor(Protocol):
    """What :func:`clbench.protocols.runner.run_matrix` needs from an executor."""

    def run(self, cells: Iterable[CellSpec], fn: CellFn) -> Iterator[CellRecord]: ...


available_cores = usable_cores


def failed_result(cell: CellSpec, reason: str, started: float | None = None) -> CellRecord:
    """A failed record for a cell whose worker could not report one itself (killed, timed out)."""
    spec: dict[str, Any] = {"benchmark": cell.benchmark, "strategy": cell.strategy, "device": cell.device}
    if cell.tag:
        spec["tag"] = cell.tag
    now = time.time()
    return CellRecord(cell.cell_id, cell.benchmark_label, cell.strategy_label, cell.seed, status="failed", error=reason,
                      spec=spec, started=started or now, finished=now)


def timeout_reason(seconds: float) -> str:
    return f"timeout: the cell ran longer than its limit of {seconds:g} s and was stopped (config key timeout / --timeout)"


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (most likely the out-of-memory killer: the cell needed more memory than was free)" if name == "SIGKILL" else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with status {exitcode} before reporting a result"


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


class SerialExecutor:
    """Run the cells one after the other in this process (streams shared between consecutive cells)."""

    def run(self, cells: Iterable[CellSpec | None], fn: CellFn) -> Iterator[CellRecord]:
        for cell in cells:
            if cell is None:
                raise RuntimeError("the cell source waits for running cells, but the serial executor runs none")
            yield fn(cell)


# ------------------------------------------------------------------ local process pool

def _orphan_watchdog(parent: int) -> None:
    """Exit this worker when its parent goes away (driver killed): no orphan keeps burning CPU."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(70)


def _worker_main(conn: Any, fn: CellFn, cell: CellSpec, threads: int) -> None:
    """Body of one worker process: run one cell, send the result (or the error) to the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops the workers and records nothing
    threading.Thread(target=_orphan_watchdog, args=(os.getppid(),), daemon=True).start()
    _set_threads(threads)
    try:
        payload: tuple[str, Any] = ("ok", fn(cell))
    except BaseException as exc:  # noqa: BLE001 - reported to the driver
        payload = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
    conn.send(payload)
    conn.close()


@dataclass
class _Job:
    cell: CellSpec
    process: Any
    conn: Any
    started: float  # wall clock, for the record
    clock: float  # monotonic, for the timeout

    def deadline(self) -> float:
        return self.clock + self.cell.timeout if self.cell.timeout else float("inf")

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def outcome(self, now: float) -> CellRecord | None:
        """The cell's result once it is known (reported, died or timed out), else None."""
        if self.conn.poll():
            try:
                kind, value = self.conn.recv()
            except (EOFError, OSError):
                self.process.join(5)
                return failed_result(self.cell, _exit_reason(self.process.exitcode), self.started)
            self.process.join(5)
            self.conn.close()
            return value if kind == "ok" else failed_result(self.cell, f"worker raised {value.strip()}", self.started)
        if not self.process.is_alive():
            self.process.join(5)
            if self.conn.poll():  # reported just before exiting
                return self.outcome(now)
            self.conn.close()
            return failed_result(self.cell, _exit_reason(self.process.exitcode), self.started)
        if now >= self.deadline():
            self.kill()
            return failed_result(self.cell, timeout_reason(self.cell.timeout or 0), self.started)
        return None


class ProcessExecutor:
    """At most ``workers`` cells at a time, each in a fresh worker process (stdlib ``multiprocessing``).

    ``threads`` is the torch thread count per worker (default ``cores // workers``, at least 1).
    ``start_method`` is ``forkserver`` (default; torch is imported once in the server, so a worker
    starts in milliseconds and never inherits a multi-threaded parent) or ``spawn``.
    ``fn`` must be picklable (a module-level function or a :func:`functools.partial` of one).
    """

    def __init__(self, workers: int = 2, threads: int | None = None, start_method: str | None = None) -> None:
        import multiprocessing

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")

    def _context(self):
        import multiprocessing

        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload(list(PRELOAD))
        return ctx

    def _start(self, ctx, cell: CellSpec, fn: CellFn) -> _Job:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_main, args=(send, fn, cell, self.threads), name=f"clbench-cell-{cell.cell_id}")
        try:
            proc.start()
        except Exception as exc:
            recv.close()
            send.close()
            if "pickle" in type(exc).__name__.lower() or "pickle" in str(exc).lower():
                raise TypeError(f"the cell function {fn!r} cannot be sent to a worker process ({exc}); "
                                "pass a module-level function or a functools.partial of one") from exc
            raise
        send.close()  # the child holds the only write end: EOF means it died
        return _Job(cell, proc, recv, time.time(), time.monotonic())

    def run(self, cells: Iterable[CellSpec], fn: CellFn) -> Iterator[CellRecord]:
        from multiprocessing.connection import wait

        ctx = self._context()
        pending = iter(cells)
        running: list[_Job] = []
        exhausted = False
        try:
            while True:
                while not exhausted and len(running) < self.workers:
                    cell = next(pending, _END)
                    if cell is _END:
                        exhausted = True
                    elif cell is None:  # nothing to run until a running cell finishes
                        if not running:
                            raise RuntimeError("the cell source waits for running cells, but none is running")
                        break
                    else:
                        running.append(self._start(ctx, cell, fn))
                if not running:
                    return
                now = time.monotonic()
                nearest = min(j.deadline() for j in running)
                wait([j.conn for j in running] + [j.process.sentinel for j in running],
                     timeout=None if nearest == float("inf") else max(0.0, nearest - now) + 0.01)
                now = time.monotonic()
                for job in list(running):
                    result = job.outcome(now)
                    if result is not None:
                        running.remove(job)
                        yield result
        finally:  # the driver stops (error, Ctrl-C, generator closed): stop the workers it started
            for job in running:
                job.kill()


# ------------------------------------------------------------------ Ray

def _ray_cell(fn: CellFn, cell: CellSpec, threads: int) -> CellRecord:
    """Body of one Ray task: set the torch threads to the task's CPUs, run the cell."""
    _set_threads(threads)
    return fn(cell)


class RayExecutor:
    """Each cell a Ray task (``num_cpus``/``num_gpus`` per cell); results come back to the driver.

    ``address``: a cluster address (``ray start --head`` prints it; ``auto``), else ``$RAY_ADDRESS``,
    a cluster started with ``ray start`` on this machine, or a new local instance. If Ray is already
    initialised in this process (e.g. by a test or a notebook), that connection is used and kept.
    ``workers`` caps the cells in flight (``None`` or 1: as many as the cluster's CPUs allow).
    ``gpus_per_cell`` defaults to 1 for cells whose device is ``cuda*``, else 0. Tasks are not
    retried by Ray (``max_retries=0``): a crashed, OOM-killed or timed-out cell is recorded failed.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_cell: float = 1,
                 gpus_per_cell: float | None = None, init_options: dict[str, Any] | None = None) -> None:
        self.address = address
        self.workers = workers
        self.cpus_per_cell = cpus_per_cell
        self.gpus_per_cell = gpus_per_cell
        self.init_options = dict(init_options or {})

    def _connect(self) -> bool:
        """Initialise Ray unless already done; True when this call did it (and must shut it down)."""
        import ray

        if ray.is_initialized():
            return False
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        opts.update(self.init_options)
        try:
            ray.init(address=self.address, **opts)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = self.address or "$RAY_ADDRESS / a local instance"
            raise UserError(f"cannot connect to the Ray cluster at {where}: {exc}; fix: start one with "
                            "`ray start --head` and pass the address it prints with --address; if the cluster "
                            "uses token authentication (as `ray start` of recent Ray versions sets up), also set "
                            "RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token or $RAY_AUTH_TOKEN)") from None
        return True

    def _capacity(self) -> int:
        import ray

        if self.workers and self.workers > 1:
            return self.workers
        cpus = float(ray.cluster_resources().get("CPU", 1))
        return max(1, int(cpus // max(self.cpus_per_cell, 1e-9)))

    def run(self, cells: Iterable[CellSpec], fn: CellFn) -> Iterator[CellRecord]:
        import ray

        owned = self._connect()
        try:
            remote = ray.remote(_ray_cell)
            capacity = self._capacity()
            pending = iter(cells)
            running: dict[Any, tuple[CellSpec, float, float]] = {}  # ref -> (cell, wall start, monotonic start)
            exhausted = False
            threads = max(1, int(self.cpus_per_cell))
            while True:
                while not exhausted and len(running) < capacity:
                    cell = next(pending, _END)
                    if cell is _END:
                        exhausted = True
                        break
                    if cell is None:  # nothing to run until a running cell finishes
                        if not running:
                            raise RuntimeError("the cell source waits for running cells, but none is running")
                        break
                    gpus = self.gpus_per_cell if self.gpus_per_cell is not None else (1 if str(cell.device).startswith("cuda") else 0)
                    ref = remote.options(num_cpus=self.cpus_per_cell, num_gpus=gpus, max_retries=0,
                                         name=f"clbench-cell-{cell.cell_id}").remote(fn, cell, threads)
                    running[ref] = (cell, time.time(), time.monotonic())
                if not running:
                    return
                now = time.monotonic()
                deadlines = [m + c.timeout for c, _, m in running.values() if c.timeout]
                wait_s = max(0.0, min(deadlines) - now) + 0.01 if deadlines else None
                done, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
                for ref in done:
                    cell, started, _ = running.pop(ref)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        yield failed_result(cell, _ray_reason(exc), started)
                now = time.monotonic()
                for ref, (cell, started, mono) in list(running.items()):
                    if cell.timeout and now - mono >= cell.timeout:
                        ray.cancel(ref, force=True)
                        running.pop(ref)
                        yield failed_result(cell, timeout_reason(cell.timeout), started)
        finally:
            if owned:
                ray.shutdown()


def _ray_reason(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    text = " ".join(first[:3])
    if "OutOfMemory" in type(exc).__name__:
        return f"out of memory: Ray killed the worker ({text})"
    if "WorkerCrashed" in type(exc).__name__ or "ActorDied" in type(exc).__name__:
        return f"worker process died: {text}"
    return f"{type(exc).__name__}: {text}"


# ------------------------------------------------------------------ factory and tuning helper

def make_executor(kind: str = "local", workers: int = 1, *, timeout: float | None = None, address: str | None = None,
                  **options: Any) -> Executor:
    """The executor for ``--executor KIND --workers N``.

    ``local`` with one worker and no ``timeout`` runs in this process (:class:`SerialExecutor`);
    with more workers, or a timeout to enforce, a :class:`ProcessExecutor`. ``ray`` gives a
    :class:`RayExecutor` (``address`` and ``options`` are passed on).
    """
    if kind == "ray":
        try:
            import ray  # noqa: F401 - an optional extra: checked before anything runs
        except ImportError:
            raise UserError("--executor ray needs Ray, which is not installed; fix: pip install 'clbench[ray]' "
                            "(or run without --executor ray)") from None
        return RayExecutor(address=address, workers=workers, **options)
    if kind != "local":
        raise ValueError(f"unknown executor {kind!r}; valid: local, ray")
    if workers <= 1 and not timeout:
        return SerialExecutor()
    return ProcessExecutor(workers=max(1, workers), **options)
