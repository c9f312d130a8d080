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

The machine's load average is printed before and after: on a shared machine the figures are
only meaningful when it is near 0.

    python bench/scaling.py [--cells 8] [--epochs 12] [--repeats 1] [--tiny 16] [--skip-ray]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from clbench.protocols.config import parse_config
from clbench.protocols.executors import ProcessExecutor, RayExecutor, SerialExecutor, available_cores
from clbench.protocols.runner import execute_cell, run_matrix


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats of part 1; the fastest is kept")
    ap.add_argument("--tiny", type=int, default=16, help="cells for the per-cell overhead")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    print(load())
    with tempfile.TemporaryDirectory(prefix="clbench-scaling-") as tmp:
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
    print("\n" + load())


if __name__ == "__main__":
    main()
