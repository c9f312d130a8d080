"""Scaling of the executors: 2 local workers vs 1, and Ray's overhead per cell vs the local pool.

1. **Speed-up.** A matrix of ``--cells`` (default 8) CPU-bound cells (split digits, 5 experiences,
   finetune with a 512-512 MLP, ``--epochs`` epochs) goes through ``run_matrix`` (run folder
   written) three ways: in-process as ``--workers 1`` does (torch's default threads), one worker
   process with 1 thread (the pool's per-cell set-up, no parallelism) and ``--workers 2`` (two
   worker processes, 1 thread each). The forkserver is started once before the timings (a
   ``clbench run --workers 2`` pays that start-up, a few seconds, once). Accuracies must be equal.
2. **Per-cell overhead.** ``--tiny`` cells that train nothing (``epochs: 0``, a 16-unit MLP; the
   stream is still built and evaluated) go through the local process pool and through Ray (a local instance
   started here with 2 CPUs), 2 at a time, after a warm-up pass; the wall time per cell and
   Ray's start-up time are printed.

3. **Thousands of cells.** Matrices of ``--many`` tiny cells (default 1000 and 2000: ToyNCM of
   tests/plugins/tune_toys.py, class means without a training loop, with 250 or 500 values of its noise
   knob x 2 halves of the digits x 2 seeds; the cells of the smaller matrix are cells of the larger) run
   in-process (serial, progress bar on, as ``clbench run`` does) with the runner's parts timed: the cells
   themselves (``execute_cell``), writing the records (``RunFolder.write_record``: atomic write, fsync),
   the table updates (``TableWriter.add``/``flush``), the progress bar, and the rest of the runner. The
   runner's overhead per cell (everything but ``execute_cell``) and the wall time per cell must stay flat:
   largest vs smallest matrix within 1.2x. The largest matrix then runs on the process pool (2 workers, a
   fresh process per cell) and on Ray (local instance, 2 CPUs) (``--pool-cells``/``--ray-cells``, default all
   of it; 0 skips), whose tables must equal the serial one.
4. **Resume after kill -9.** ``clbench run`` of the largest matrix in a child process, SIGKILLed once half of
   its cells are recorded, then the same command again: the time from its launch to the "N already done"
   line (interpreter start-up, config, reading every record, rebuilding the tables) and to its first new
   record; the same resume in-process (no interpreter start-up) to its first cell; and the resumed table
   must equal the uninterrupted serial run of part 3.

The machine's load average is printed before and after: on a shared machine the figures are
only meaningful when it is near 0.

    python bench/scaling.py [--cells 8] [--epochs 12] [--repeats 1] [--tiny 16] [--skip-ray]
                            [--parts 1 2 3 4] [--many 1000 2000] [--pool-cells N] [--ray-cells N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from unittest import mock

import pandas as pd
import torch

from clbench.protocols.config import parse_config
from clbench.protocols.executors import ProcessExecutor, RayExecutor, SerialExecutor, available_cores
from clbench.protocols.runner import RunFolder, TableWriter, execute_cell, run_matrix
from clbench.studies import Publication

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"  # tune_toys.ToyNCM, the tiny strategy of parts 3 and 4
STABLE = ["benchmark", "strategy", "seed", "trained_exp", "evaluated_exp", "accuracy", "n_test", "cell_id"]


def matrix(output: Path, n_cells: int, epochs: int, hidden: list[int]) -> dict:
    return {"name": "scaling", "output": str(output), "seeds": list(range(n_cells)),
            "benchmarks": [{"name": "split_digits", "n_experiences": 5}],
            "strategies": [{"name": "finetune", "epochs": epochs, "lr": 0.05, "batch_size": 32, "hidden": hidden}]}


def timed_run(data: dict, name: str, executor) -> tuple[float, pd.DataFrame]:
    """Wall seconds of ``run_matrix`` into a fresh run folder ``name``, and its per-cell accuracy table."""
    t0 = time.perf_counter()
    run_matrix(parse_config(dict(data, name=name)), quiet=True, executor=executor)
    wall = time.perf_counter() - t0
    cells = pd.read_csv(Path(data["output"]) / name / "cells.csv")
    return wall, cells.sort_values("seed")[["seed", "status", "acc"]].reset_index(drop=True)


def per_cell(executor, cells, repeats: int = 2) -> float:
    """Wall seconds per cell for the last of ``repeats`` passes (the first warms the workers up)."""
    fn = partial(execute_cell, cache=None)
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = list(executor.run(cells, fn))
        wall = time.perf_counter() - t0
        assert all(r.status == "ok" for r in results), [r.error for r in results if r.status != "ok"]
    return wall / len(cells)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"


# ---------------------------------------------------------------- parts 3 and 4: thousands of cells

def many_cells(output: Path, name: str, n: int) -> dict:
    """``n`` tiny cells (a multiple of 4): ToyNCM with ``n // 4`` knob values x 2 digit halves x 2 seeds."""
    return {"name": name, "output": str(output), "seeds": [0, 1],
            "benchmarks": [{"name": "split_digits", "classes": c, "n_experiences": 1} for c in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])],
            "strategies": [{"name": "tune_toys:ToyNCM", "shift": 0, "knob": k / 1000} for k in range(n // 4)]}


def stable(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results.csv")[STABLE].sort_values("cell_id").reset_index(drop=True)


class Timers:
    """Seconds spent in wrapped callables, by name (a call made inside a timed call of the same name counts once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.depth: dict[str, int] = {}

    def wrap(self, name: str, fn):
        def timed(*a, **k):
            self.depth[name] = self.depth.get(name, 0) + 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.depth[name] -= 1
                if not self.depth[name]:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return timed


def instrumented_run(data: dict) -> tuple[float, dict[str, float]]:
    """Run the matrix serially in-process as ``clbench run`` does (progress bar on, to /dev/null); return the wall
    seconds and the seconds spent in each part of the runner."""
    import tqdm

    timers = Timers()

    class TimedSerial(SerialExecutor):
        def run(self, cells, fn):
            return super().run(cells, timers.wrap("cells", fn))

    patches = [mock.patch.object(RunFolder, "write_record", timers.wrap("record writing", RunFolder.write_record)),
               mock.patch.object(TableWriter, "add", timers.wrap("table updates", TableWriter.add)),
               mock.patch.object(TableWriter, "flush", timers.wrap("table updates", TableWriter.flush)),
               mock.patch.object(tqdm.tqdm, "update", timers.wrap("progress bar", tqdm.tqdm.update)),
               mock.patch.object(tqdm.tqdm, "set_postfix_str", timers.wrap("progress bar", tqdm.tqdm.set_postfix_str))]
    with contextlib.ExitStack() as stack, open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        for p in patches:
            stack.enter_context(p)
        t0 = time.perf_counter()
        run_matrix(parse_config(data), executor=TimedSerial(), echo=lambda _: None)
        wall = time.perf_counter() - t0
    return wall, timers.seconds


def child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def records(folder: Path) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if e.name.endswith(".json"))
    except FileNotFoundError:
        return 0


def part_many(tmp: Path, sizes: list[int], pool_cells: int, ray_cells: int, skip_ray: bool) -> Path:
    """Part 3; returns the run folder of the largest serial matrix (the reference of part 4)."""
    print(f"\n3. thousands of tiny cells (ToyNCM, one experience of 5 digit classes), serial in-process, progress bar on")
    instrumented_run(many_cells(tmp / "warm", "warm", 8))  # lazy imports, first stream builds: not timed
    rows = {}
    for n in sizes:
        wall, parts = instrumented_run(many_cells(tmp / "many", f"serial{n}", n))
        rows[n] = (wall, parts)
        runner = wall - parts.get("cells", 0.0)
        print(f"   {n:5d} cells: {wall:7.1f} s wall, {1000 * wall / n:6.2f} ms/cell; runner overhead {1000 * runner / n:6.2f} "
              f"ms/cell (records {1000 * parts.get('record writing', 0) / n:.2f}, tables {1000 * parts.get('table updates', 0) / n:.2f}, "
              f"progress {1000 * parts.get('progress bar', 0) / n:.2f}, rest "
              f"{1000 * (runner - parts.get('record writing', 0) - parts.get('table updates', 0) - parts.get('progress bar', 0)) / n:.2f}); "
              f"cells themselves {1000 * parts.get('cells', 0) / n:.2f} ms/cell  ({load()})", flush=True)
    small, big = min(sizes), max(sizes)
    if small != big:
        per = {n: rows[n][0] / n for n in (small, big)}
        over = {n: (rows[n][0] - rows[n][1].get("cells", 0.0)) / n for n in (small, big)}
        print(f"   {big} vs {small} cells: wall per cell x{per[big] / per[small]:.2f}, runner overhead per cell "
              f"x{over[big] / over[small]:.2f} (flat: within 1.2x -> {'yes' if max(per[big] / per[small], over[big] / over[small]) <= 1.2 else 'NO'})")
    reference = tmp / "many" / f"serial{big}"
    ref = stable(reference)
    for label, n, make in (("process pool, 2 workers", pool_cells, lambda: ProcessExecutor(2, threads=1)),
                           ("Ray local instance, 2 CPUs", 0 if skip_ray else ray_cells, lambda: RayExecutor(workers=2))):
        if not n:
            continue
        data = many_cells(tmp / "many", f"{label.split()[0].lower()}{n}", n)
        ctx = contextlib.nullcontext()
        if label.startswith("Ray"):
            import ray

            ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
            os.environ["PYTHONPATH"] = child_env()["PYTHONPATH"]  # Ray's workers inherit it: tune_toys importable
            t0 = time.perf_counter()
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_tmp)
            print(f"   (Ray local instance started in {time.perf_counter() - t0:.1f} s)")
            ctx = contextlib.ExitStack()
            ctx.callback(__import__("shutil").rmtree, ray_tmp, ignore_errors=True)
            ctx.callback(ray.shutdown)
        with ctx:
            t0 = time.perf_counter()
            run_matrix(parse_config(data), quiet=True, executor=make())
            wall = time.perf_counter() - t0
        got = stable(Path(data["output"]) / data["name"])
        same = got.equals(ref[ref.cell_id.isin(set(got.cell_id))].reset_index(drop=True)) and len(got) == n
        print(f"   {label}: {n} cells in {wall:.1f} s, {1000 * wall / n:.1f} ms/cell; table equals the serial run's: {same}  ({load()})",
              flush=True)
    return reference


def part_resume(tmp: Path, n: int, reference: Path | None) -> None:
    """Part 4: kill -9 in the middle of an n-cell ``clbench run``, then resume it (child and in-process)."""
    print(f"\n4. resume after kill -9 in the middle of a {n}-cell `clbench run` (serial)")
    import yaml

    data = many_cells(tmp / "resume", "resume", n)
    cfg = tmp / "resume.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))  # key order: the automatic labels (and cell ids) depend on it
    cells = tmp / "resume" / "resume" / "cells"
    cmd = [sys.executable, "-m", "clbench.protocols.cli", "run", str(cfg), "--no-report"]
    with open(tmp / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, env=child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while records(cells) < n // 2:
            if proc.poll() is not None:
                raise SystemExit(f"the run ended early: {(tmp / 'first.log').read_text()[-2000:]}")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = records(cells)
    print(f"   killed with {done} of {n} records written")

    def resume_child() -> None:
        before = records(cells)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        seen_line = first_record = None
        while p.poll() is None and first_record is None:
            if seen_line is None:
                line = p.stdout.readline()
                if "already done" in line:
                    seen_line = time.perf_counter() - t0
                    print(f"   child: {line.strip()}")
                continue
            if records(cells) > before:
                first_record = time.perf_counter() - t0
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        print(f"   resume as a new `clbench run` process: 'already done' line after {seen_line:.2f} s, first new record after "
              f"{first_record:.2f} s (Python + torch start-up included)  ({load()})")

    resume_child()  # killed again right after its first new record
    # the same resume in-process: from the call to its first cell (no interpreter start-up)
    first: list[float] = []

    class FirstCell(SerialExecutor):
        def run(self, todo, fn):
            def mark(cell):
                if not first:
                    first.append(time.perf_counter())
                return fn(cell)
            return super().run(todo, mark)

    t0 = time.perf_counter()
    run_matrix(parse_config(data), quiet=True, executor=FirstCell())
    total = time.perf_counter() - t0
    print(f"   resume in-process: first cell after {first[0] - t0:.2f} s (reading {records(cells)} records, tables, config); "
          f"whole resume {total:.1f} s  ({load()})")
    table = stable(tmp / "resume" / "resume")
    ok = len(table) == n and not table.cell_id.duplicated().any()
    if reference is not None:
        ok = ok and table.equals(stable(reference))
        print(f"   resumed table: {len(table)} cells, each once; equals the uninterrupted serial run: {ok}")
    else:
        print(f"   resumed table: {len(table)} cells, each once: {ok}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats of part 1; the fastest is kept")
    ap.add_argument("--tiny", type=int, default=16, help="cells for the per-cell overhead")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    ap.add_argument("--many", type=int, nargs="+", default=[1000, 2000], help="matrix sizes of part 3 (multiples of 4)")
    ap.add_argument("--pool-cells", type=int, default=None, help="cells on the process pool in part 3 (default: the largest size)")
    ap.add_argument("--ray-cells", type=int, default=None, help="cells on Ray in part 3 (default: the largest size)")
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    pub = Publication.begin(args.publish)
    print(load())
    if 3 in args.parts or 4 in args.parts:
        sys.path.insert(0, str(PLUGINS))
        torch.set_num_threads(1)
        big = max(args.many)
        with tempfile.TemporaryDirectory(prefix="clbench-scaling-") as tmp:
            reference = None
            if 3 in args.parts:
                reference = part_many(Path(tmp), sorted(args.many), big if args.pool_cells is None else args.pool_cells,
                                      big if args.ray_cells is None else args.ray_cells, args.skip_ray)
            if 4 in args.parts:
                part_resume(Path(tmp), big, reference)
    if 1 in args.parts or 2 in args.parts:
        parts_1_2(args)
    print("\n" + load())
    pub.end()


def parts_1_2(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="clbench-scaling-") as tmp:
        if 1 in args.parts:
            data = matrix(Path(tmp) / "runs", args.cells, args.epochs, [512, 512])
            print(f"\n1. {args.cells} CPU-bound cells (finetune 512-512 MLP, {args.epochs} epochs x 5 experiences, split digits)")
            cores = available_cores()
            variants = {"serial": SerialExecutor(), "one": ProcessExecutor(1, threads=1), "two": ProcessExecutor(2, threads=1)}
            for key in ("serial", "two"):  # lazy imports in this process; the forkserver's start: paid once, not timed
                timed_run(matrix(Path(tmp) / "warm", 2, 0, [16]), f"warm-{key}", variants[key])
            best: dict[str, float] = {}
            tables: dict[str, pd.DataFrame] = {}
            for r in range(args.repeats):
                for key, executor in variants.items():
                    wall, tables[key] = timed_run(data, f"{key}{r}", executor)
                    best[key] = min(best.get(key, wall), wall)
                    print(f"   ({key} repeat {r}: {wall:.1f} s, {load()})", flush=True)
            t_serial, t_one, t_two = best["serial"], best["one"], best["two"]
            print(f"   --workers 1 (in-process, torch threads {torch.get_num_threads()}): {t_serial:7.1f} s")
            print(f"   1 worker process, 1 thread:               {t_one:7.1f} s")
            print(f"   --workers 2 (2 processes x {variants['two'].threads} thread on {cores} cores): {t_two:7.1f} s")
            same = tables["serial"].equals(tables["two"]) and tables["one"].equals(tables["two"]) and (tables["two"].status == "ok").all()
            print(f"   accuracies identical in all three: {same}")
            print(f"   speed-up 2 workers vs --workers 1: {t_serial / t_two:.2f}x; vs 1 worker process: {t_one / t_two:.2f}x")

        if 2 in args.parts:
            tiny = parse_config(dict(matrix(Path(tmp) / "tiny", args.tiny, 0, [16]))).cells()
            print(f"\n2. per-cell overhead: {args.tiny} cells that train nothing (16-unit MLP; stream built, evaluated), 2 at a time")
            print(f"   in-process serial:     {1000 * per_cell(SerialExecutor(), tiny):7.0f} ms/cell")
            print(f"   local process pool:    {1000 * per_cell(ProcessExecutor(2), tiny):7.0f} ms/cell")
            if not args.skip_ray:
                import ray

                with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as ray_tmp:
                    t0 = time.perf_counter()
                    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_tmp)
                    print(f"   (Ray local instance started in {time.perf_counter() - t0:.1f} s)")
                    try:
                        print(f"   Ray, 1 CPU per cell:   {1000 * per_cell(RayExecutor(workers=2), tiny):7.0f} ms/cell")
                    finally:
                        ray.shutdown()


if __name__ == "__main__":
    main()
