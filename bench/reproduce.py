"""Reproduce the five published permuted-MNIST baselines (EWC, SI, LwF, GEM, A-GEM) and print measured vs target.

Targets and settings: Avalanche's continual-learning-baselines (``strategies/target_results.csv`` and
``experiments/permuted_mnist/*.py`` of ContinualAI/continual-learning-baselines; docs/methods/gradient.md):
final accuracy over the test sets of all experiences. The hyperparameters come from
``configs/pmnist_{ewc,si,lwf,gem,agem}.yaml`` (model, optimiser, lr, batch, epochs, method strengths: the
published ones); this script sets only the scale:

* ``--full``: the published scale. All 60,000 training and 10,000 test images per experience (GEM: the
  first 1,000 training patterns per experience as in the GEM paper, 20 experiences and
  ``patterns_per_exp`` 1000; A-GEM: 17 experiences), every experience permuted (Avalanche's
  ``PermutedMNIST`` permutes the first one too: ``first_identity: false``). Seeds 0, 1, 2.
* ``--smoke``: the same code at a CPU scale that runs in about a minute: 3 experiences of 4 minibatches
  (1024 training images at batch 256; 256 for GEM/A-GEM at batch 10) and 100 test images, 1 epoch, MLPs of
  64 units, small memories. Seeds 0, 1. Its accuracies mean nothing; it checks the path.
* ``--smoke --project``: also measures each job's cost per optimiser step and per experience on this CPU
  and projects ``--full``'s time on one GPU from it (:func:`measure_costs`, :func:`projection`).

Each (config, strategy entry) is one job: ``finetune``/``ewc``/``lwf`` train all seeds at once as one
vectorised ensemble (:mod:`clbench.protocols.ensemble`), the others (``si`` and the ``avalanche.*``
adapters) one job per seed. ``--jobs N`` runs N jobs at a time in fresh processes (spawn), longest first,
so a 16-core GPU machine keeps the GPU busy while Python runs the small-batch methods; each job writes a
normal run folder under ``--runs`` (resumable: a second call skips finished cells). With ``--device cuda``
the gradient strategies keep each experience's data on the GPU (one copy per experience, minibatches cut
there).

Known differences from the published runs (printed under the table): SI's target comes from a multi-head
MLP (task labels at test time), clbench's permuted MNIST is single-head; inputs are x/255, not
Avalanche's normalisation ((x - 0.1307) / 0.3081); GEM's memory is drawn from the 1,000 training patterns,
Avalanche's from all 60,000 images of the experience.

    CLBENCH_DATA=../shared/data python bench/reproduce.py --smoke
    python bench/reproduce.py --full --device cuda --jobs 12 --out results/reproductions

``--out FOLDER`` writes ``reproduce.md``, ``reproduce.csv`` and ``cells.json`` (accuracy matrices) there and
records the study (:func:`clbench.studies.write_study`: command, config hashes, host).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: method -> (config, published final accuracy)
METHODS: dict[str, tuple[str, float]] = {
    "ewc": ("configs/pmnist_ewc.yaml", 0.83),
    "si": ("configs/pmnist_si.yaml", 0.94),
    "lwf": ("configs/pmnist_lwf.yaml", 0.51),
    "gem": ("configs/pmnist_gem.yaml", 0.83),
    "agem": ("configs/pmnist_agem.yaml", 0.81),
}

#: the published scale, per method: benchmark keys, then strategy keys by strategy name
FULL: dict[str, dict[str, Any]] = {
    "ewc": {"benchmark": {"n_experiences": 10, "train_per_task": None, "test_per_task": None}},
    "si": {"benchmark": {"n_experiences": 10, "train_per_task": None, "test_per_task": None}},
    "lwf": {"benchmark": {"n_experiences": 10, "train_per_task": None, "test_per_task": None}},
    "gem": {"benchmark": {"n_experiences": 20, "train_per_task": 1000, "test_per_task": None},
            "strategy": {"avalanche.GEM": {"patterns_per_exp": 1000}}},
    "agem": {"benchmark": {"n_experiences": 17, "train_per_task": None, "test_per_task": None}},
}
FULL_COMMON = {"first_identity": False}

#: the smoke scale (every method): 3 experiences of SMOKE_STEPS minibatches
SMOKE_BENCHMARK = {"n_experiences": 3, "test_per_task": 100, "first_identity": False}
SMOKE_STEPS = 4
SMOKE_CAPS = {"epochs": 1, "patterns_per_exp": 50, "sample_size": 64}
SMOKE_HIDDEN = [64, 64]
#: the cost measurement of --project: 2 experiences of PROJECT_STEPS[0] and [1] minibatches, MLPs this small
#: (their arithmetic is negligible, so the time per step is what a GPU does not speed up: Python and dispatch)
PROJECT_STEPS = (8, 32)  # x 5 for batch sizes below 64 (GEM, A-GEM: batch 10)
PROJECT_HIDDEN = [8, 8]

#: strategies whose seeds run as one ensemble
ENSEMBLE = ("finetune", "ewc", "lwf", "replay")
#: the config entries run by default: one implementation per method where native and adapter are the same
#: method (ewc = avalanche.EWC and lwf = avalanche.LwF give identical accuracy matrices: tests/strategies/
#: test_avalanche_adapter.py), both SIs (they differ by design), GEM with its finetune reference;
#: --all-entries runs every entry of the configs
PRIMARY = {"ewc": ("ewc",), "si": ("avalanche.SynapticIntelligence", "si"), "lwf": ("lwf",),
           "gem": ("avalanche.GEM", "finetune"), "agem": ("avalanche.AGEM",)}

#: assumed sustained float32 throughput of one H200 on these MLPs (67 TFLOP/s peak without tensor cores;
#: batch-256 products of width 1000-2000 reach a fraction of it) -- an assumption, not a measurement
GPU_FLOPS = 20e12


@dataclass
class Job:
    method: str
    config: str
    target: float
    benchmark: dict[str, Any]
    strategy: dict[str, Any]
    seeds: list[int]
    device: str
    runs: str
    data_root: str | None
    threads: int = 1
    ensemble: bool = False

    @property
    def label(self) -> str:
        s = self.strategy.get("label") or self.strategy["name"]
        return s if self.ensemble or len(self.seeds) > 1 else f"{s} (seed {self.seeds[0]})"

    @property
    def run_name(self) -> str:
        s = (self.strategy.get("label") or self.strategy["name"]).replace(".", "_")
        seeds = "-".join(map(str, self.seeds))
        return f"{Path(self.config).stem}__{s}__s{seeds}"


@dataclass
class JobResult:
    job: Job
    wall_seconds: float
    records: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    cpu_seconds: float = 0.0  # CPU time of the job's process (its threads together)


# ------------------------------------------------------------------ jobs

def load_config(path: str) -> dict[str, Any]:
    from clbench.protocols.config import load_yaml

    return load_yaml(REPO / path)


def scaled(method: str, mode: str, bench: dict[str, Any], strat: dict[str, Any],
           precision: str, steps: int = SMOKE_STEPS, hidden: list[int] = SMOKE_HIDDEN) -> tuple[dict[str, Any], dict[str, Any]]:
    """The benchmark and strategy entries of ``method`` at ``mode``'s scale (see the module docstring)."""
    bench, strat = copy.deepcopy(bench), copy.deepcopy(strat)
    if mode == "full":
        bench.update(FULL_COMMON)
        bench.update(FULL[method].get("benchmark", {}))
        strat.update(FULL[method].get("strategy", {}).get(strat["name"], {}))
    else:
        bench.update(SMOKE_BENCHMARK)
        bs = int(strat.get("batch_size", 64))
        bench["train_per_task"] = steps * bs * (5 if bs < 64 and steps != SMOKE_STEPS else 1)
        for key, cap in SMOKE_CAPS.items():
            if key in strat:
                strat[key] = min(int(strat[key]), cap)
        strat["hidden"] = list(hidden)
    if precision != "float32":
        strat["precision"] = precision
    return bench, strat


def make_jobs(args: argparse.Namespace, **scale: Any) -> list[Job]:
    jobs = []
    for method in args.methods:
        config, target = METHODS[method]
        data = load_config(config)
        for bench in data["benchmarks"]:
            for strat in data["strategies"]:
                if not getattr(args, "all_entries", False) and strat["name"] not in PRIMARY[method]:
                    continue
                b, s = scaled(method, args.mode, bench, strat, args.precision, **scale)
                common = dict(method=method, config=config, target=target, benchmark=b, strategy=s, device=args.device,
                              runs=args.runs, data_root=args.data_root)
                if s["name"] in ENSEMBLE and len(args.seeds) > 1:
                    jobs.append(Job(seeds=list(args.seeds), ensemble=True, **common))
                else:
                    jobs.extend(Job(seeds=[seed], **common) for seed in args.seeds)
    return jobs


def run_job(job: Job) -> JobResult:
    """Run one job's cells through ``run_matrix`` (its own run folder); the records as dicts."""
    import torch

    from clbench.protocols.config import parse_config
    from clbench.protocols.ensemble import EnsembleExecutor
    from clbench.protocols.runner import run_matrix

    if job.threads:
        torch.set_num_threads(job.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        config = parse_config({"name": job.run_name, "output": job.runs, "benchmarks": [job.benchmark],
                               "strategies": [job.strategy], "seeds": job.seeds, "device": job.device,
                               **({"data_root": job.data_root} if job.data_root else {})})
        executor = EnsembleExecutor() if job.ensemble else None
        records = run_matrix(config, quiet=True, executor=executor)
        return JobResult(job, time.perf_counter() - t0, [r.to_dict() for r in records],
                         cpu_seconds=time.process_time() - c0)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return JobResult(job, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}",
                         cpu_seconds=time.process_time() - c0)


# ------------------------------------------------------------------ cost model

def mlp_macs(hidden: list[int], d_in: int = 784, n_out: int = 10) -> int:
    dims = [d_in, *hidden, n_out]
    return sum(a * b for a, b in zip(dims, dims[1:]))


def job_cost(job: Job) -> dict[str, float]:
    """Optimiser steps (per member) and floating-point operations of a job at its scale.

    Training: 6 FLOPs per multiply-accumulate and sample (forward 2, backward 4), per epoch and experience;
    LwF adds the teacher's forward (2); A-GEM a reference pass of ``sample_size`` samples per step after the
    first experience; GEM a pass over each earlier experience's memory per step; EWC a Fisher pass per
    experience; evaluation 2 per sample, every test set after every experience. Ensembles: x seeds.
    """
    b, s = job.benchmark, job.strategy
    n_exp = int(b["n_experiences"])
    n_train = int(b.get("train_per_task") or 60000)
    n_test = int(b.get("test_per_task") or 10000)
    epochs, bs = int(s.get("epochs", 1)), int(s.get("batch_size", 64))
    macs = mlp_macs(list(s.get("hidden", [1000, 1000])))
    steps_per_exp = epochs * math.ceil(n_train / bs)
    steps = n_exp * steps_per_exp
    per_sample = 6 + (2 if s["name"] in ("lwf", "avalanche.LwF") else 0)
    flops = n_exp * epochs * n_train * per_sample * macs
    if s["name"] == "avalanche.AGEM":
        flops += (n_exp - 1) * steps_per_exp * int(s["sample_size"]) * 6 * macs
    if s["name"] == "avalanche.GEM":
        flops += sum(t for t in range(n_exp)) * steps_per_exp * int(s["patterns_per_exp"]) * 6 * macs
    if s["name"] in ("ewc", "avalanche.EWC"):
        flops += n_exp * n_train * 6 * macs
    flops += n_exp * n_exp * n_test * 2 * macs
    return {"steps": float(steps), "flops": float(flops * len(job.seeds))}


def measure_costs(args: argparse.Namespace, echo=print) -> dict[tuple[str, str], tuple[float, float]]:
    """Seconds per optimiser step and per experience of each (method, strategy), measured on this CPU.

    Each job runs twice on 2 experiences of ``PROJECT_STEPS`` minibatches (MLP ``PROJECT_HIDDEN``, seeds as in
    ``--smoke``; x 5 below batch 64; in this process, one torch thread). From the second experience's training time (penalties,
    memories and teachers active) T_a, T_b at S_a, S_b steps: per step = (T_b - T_a) / (S_b - S_a), per
    experience = T_a - S_a x per step. Times are wall seconds scaled by the job's CPU share (process CPU time
    / wall time), so a busy machine inflates them less.
    """
    import torch

    torch.set_num_threads(1)
    out: dict[tuple[str, str], tuple[float, float]] = {}
    runs = {steps: make_jobs(args, steps=steps, hidden=PROJECT_HIDDEN) for steps in PROJECT_STEPS}
    for (small, large) in zip(runs[PROJECT_STEPS[0]], runs[PROJECT_STEPS[1]]):
        key = (small.method, small.strategy["name"])
        if key in out:
            continue
        t = []
        for job in (small, large):
            job.benchmark["n_experiences"] = 2
            job.runs = str(Path(job.runs) / "project")
            r = run_job(job)
            if r.error or not r.records or r.records[0]["status"] != "ok":
                echo(f"  cost of {key}: failed ({r.error or r.records[0]['error'] if r.records else r.error})")
                break
            share = min(1.0, r.cpu_seconds / max(1e-9, r.wall_seconds))
            exp1 = r.records[0]["train_seconds"][1] * (len(r.records) if job.ensemble else 1)
            t.append((exp1 * share, job_cost(job)["steps"] / 2))
        if len(t) == 2:
            (ta, sa), (tb, sb) = t
            step = max(0.0, (tb - ta) / (sb - sa))
            out[key] = (step, max(0.0, ta - sa * step))
            echo(f"  cost {key[0]:5s} {key[1]:32s} {1e3 * step:7.2f} ms/step  {out[key][1]:6.2f} s/experience")
    return out


def projection(costs: dict[tuple[str, str], tuple[float, float]], full_jobs: list[Job], workers: int) -> list[str]:
    """Projected ``--full`` time on one GPU from :func:`measure_costs`.

    Per job: t = steps x (seconds per step) + experiences x (seconds per experience) + FLOPs / GPU_FLOPS.
    The measured step cost is Python and dispatch on this CPU, with negligible arithmetic: on a GPU the Python
    and kernel-launch cost per step is about the same (these kernels are launch-bound), the arithmetic goes to
    the last term (:func:`job_cost`, at the assumed GPU_FLOPS). Wall time with ``workers`` parallel jobs: the
    largest of the longest job, the CPU total spread over the workers, and all jobs' GPU arithmetic (one GPU).
    """
    lines, cpu_total, gpu_total, longest = [], 0.0, 0.0, 0.0
    for job in full_jobs:
        cost = job_cost(job)
        measured = costs.get((job.method, job.strategy["name"]))
        if measured is None:
            lines.append(f"  {job.method:5s} {job.label:40s} not measured")
            continue
        step, per_exp = measured
        n_exp = int(job.benchmark["n_experiences"])
        cpu, gpu = cost["steps"] * step + n_exp * per_exp, cost["flops"] / GPU_FLOPS
        cpu_total, gpu_total, longest = cpu_total + cpu, gpu_total + gpu, max(longest, cpu + gpu)
        lines.append(f"  {job.method:5s} {job.label:40s} {cost['steps']:7.0f} steps x {1e3 * step:5.2f} ms + {n_exp} x "
                     f"{per_exp:5.2f} s = {cpu:6.0f} s;  {cost['flops'] / 1e12:6.1f} TFLOP -> {gpu:5.1f} s")
    wall = max(longest, cpu_total / max(1, workers), gpu_total)
    lines.append(f"  longest job {longest:.0f} s; CPU total {cpu_total:.0f} s / {workers} workers = "
                 f"{cpu_total / max(1, workers):.0f} s; GPU arithmetic {gpu_total:.0f} s -> estimated wall {wall:.0f} s "
                 f"({wall / 60:.1f} min)")
    return lines


# ------------------------------------------------------------------ table

def fmt(xs: list[float]) -> str:
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def table(results: list[JobResult]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table and CSV rows: one row per (method, strategy), seeds pooled."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        key = (r.job.method, r.job.strategy.get("label") or r.job.strategy["name"])
        row = rows.setdefault(key, {"method": key[0], "strategy": key[1], "target": r.job.target, "acc": [], "seeds": [],
                                    "failed": [], "wall_s": 0.0, "train_s": 0.0, "epochs": r.job.strategy.get("epochs", 1),
                                    "experiences": r.job.benchmark["n_experiences"],
                                    "train_per_task": r.job.benchmark.get("train_per_task") or 60000,
                                    "ensemble": r.job.ensemble, "device": r.job.device})
        row["wall_s"] += r.wall_seconds
        if r.error:
            row["failed"].append(r.error)
        for rec in r.records:
            if rec["status"] == "ok":
                row["acc"].append(rec["metrics"]["acc"])
                row["seeds"].append(rec["seed"])
                row["train_s"] += sum(rec["train_seconds"]) * (len(r.records) if r.job.ensemble else 1)
            else:
                row["failed"].append(f"seed {rec['seed']}: {rec['error']}")
    lines = ["| method | strategy | target | measured ACC | per seed | epochs | experiences | train images/task | "
             "train s | wall s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    csv = []
    for row in rows.values():
        per_seed = ", ".join(f"{a:.3f}" for a in row["acc"])
        how = " (ensemble)" if row["ensemble"] else ""
        lines.append(f"| {row['method']} | `{row['strategy']}`{how} | {row['target']:.2f} | {fmt(row['acc'])} | {per_seed} | "
                     f"{row['epochs']} | {row['experiences']} | {row['train_per_task']} | {row['train_s']:.0f} | "
                     f"{row['wall_s']:.0f} |")
        for f in row["failed"]:
            lines.append(f"|  | FAILED: {f[:200]} |  |  |  |  |  |  |  |  |")
        csv.append({**{k: v for k, v in row.items() if k not in ("acc", "seeds", "failed")},
                    "acc_mean": statistics.mean(row["acc"]) if row["acc"] else float("nan"),
                    "acc_per_seed": row["acc"], "seeds": row["seeds"], "failed": len(row["failed"])})
    return "\n".join(lines), csv


NOTES = ("Differences from the published runs: SI's target comes from a multi-head MLP (task labels at test time), "
         "clbench's permuted MNIST is single-head (domain-IL); inputs are x/255 instead of Avalanche's normalisation "
         "(x - 0.1307) / 0.3081; GEM's memory is drawn from the 1,000 training patterns (Avalanche: from the whole "
         "experience); the EWC Fisher is Avalanche's minibatch convention (fisher: minibatch).")


# ------------------------------------------------------------------ main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the published scale")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke", help="the same code, CPU-sized")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda for --full when available, else cpu)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (--full), 0 1 (--smoke)")
    ap.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--all-entries", action="store_true",
                    help="run every strategy entry of the configs (default: the PRIMARY ones, see the source)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="parallel job processes (0: in this process; default: 0 for --smoke, cores - 2 for --full)")
    ap.add_argument("--runs", default=None, help="parent folder of the jobs' run folders (default: runs/reproduce_<mode>)")
    ap.add_argument("--data-root", default=None, help="dataset folder (default: $CLBENCH_DATA)")
    ap.add_argument("--out", "--publish", dest="out", default=None, metavar="DIR",
                    help="write the table and the study record to this folder (e.g. results/<name>)")
    ap.add_argument("--project", action="store_true",
                    help="--smoke: also measure step costs here and project --full's time on one GPU")
    args = ap.parse_args(argv)
    import torch

    if args.device is None:
        args.device = "cuda" if args.mode == "full" and torch.cuda.is_available() else "cpu"
    if args.seeds is None:
        args.seeds = [0, 1, 2] if args.mode == "full" else [0, 1]
    cores = os.cpu_count() or 1
    if args.jobs is None:
        args.jobs = 0 if args.mode == "smoke" else max(1, cores - 2)
    if args.runs is None:
        args.runs = str(REPO / "runs" / f"reproduce_{args.mode}")
    return args


def run_all(jobs: list[Job], workers: int, echo=print, on_result=None) -> list[JobResult]:
    """Run the jobs, longest first (by steps, then FLOPs), ``workers`` at a time in fresh processes (0: here).

    ``on_result(results so far)`` is called after each job (the caller rewrites its output files, so a run
    stopped by a time limit leaves the table of the jobs that finished).
    """
    jobs = sorted(jobs, key=lambda j: (job_cost(j)["steps"], job_cost(j)["flops"]), reverse=True)
    order = {id(j): i for i, j in enumerate(jobs)}
    results: list[JobResult] = []

    def done(r: JobResult) -> None:
        echo(f"  done {r.job.method:5s} {r.job.label:40s} {r.wall_seconds:7.1f} s {r.error[:120]}", flush=True)
        results.append(r)
        results.sort(key=lambda x: (list(METHODS).index(x.job.method), order.get(id(x.job), 0)))
        if on_result is not None:
            on_result(results)

    if workers <= 0:
        for job in jobs:
            done(run_job(job))
        return results
    cores = os.cpu_count() or 1
    for job in jobs:
        job.threads = max(1, cores // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for fut in as_completed(futures):
            r = fut.result()
            r.job = futures[fut]  # the parent's object (ordering by identity)
            done(r)
    return results


def write_out(args: argparse.Namespace, argv: list[str] | None, results: list[JobResult], text: str,
              rows: list[dict[str, Any]]) -> Path:
    """The table, the CSV rows and the accuracy matrices under ``args.out``, recorded as a study."""
    import pandas as pd

    from clbench.host import host_facts
    from clbench.studies import write_study

    cells = [{"method": r.job.method, "strategy": rec["strategy"], "seed": rec["seed"], "status": rec["status"],
              "acc": rec.get("metrics", {}).get("acc"), "accuracy": rec["accuracy"],
              "train_seconds": rec["train_seconds"], "ensemble": r.job.ensemble}
             for r in results for rec in r.records]
    files = {"reproduce.md": text.encode(), "reproduce.csv": pd.DataFrame(rows).to_csv(index=False).encode(),
             "cells.json": json.dumps(cells, indent=1).encode()}
    command = "python bench/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv)
    host = host_facts(args.device)  # measured now; the load average at the start is the one of main()
    host = {**host, "load_average": getattr(args, "load_at_start", host["load_average"]), "load_average_end": host["load_average"]}
    return write_study(args.out, command=[command], configs=[REPO / METHODS[m][0] for m in args.methods],
                       host=host, files=files, repo_root=REPO, notes=NOTES)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    load0 = os.getloadavg()
    args.load_at_start = [round(v, 2) for v in load0]
    jobs = make_jobs(args)
    print(f"reproduce --{args.mode}: {len(jobs)} jobs, seeds {args.seeds}, device {args.device}, precision "
          f"{args.precision}, {args.jobs or 'no'} worker processes, torch {torch.__version__}, "
          f"load {load0[0]:.2f} on {os.cpu_count()} cores", flush=True)
    t0 = time.perf_counter()

    def summary(results: list[JobResult], final: bool) -> tuple[str, list[dict[str, Any]]]:
        md, rows = table(results)
        wall, load = time.perf_counter() - t0, os.getloadavg()[0]
        state = "" if final else f" (partial: {len(results)} of {len(jobs)} jobs finished)"
        text = (md + f"\n\nWall {wall:.0f} s on {args.device}{state}; load average {load0[0]:.2f} at start, "
                f"{load:.2f} now ({os.cpu_count()} cores).\n\n" + NOTES + "\n")
        return text, rows

    def partial(results: list[JobResult]) -> None:
        if args.out:
            text, rows = summary(results, final=False)
            write_out(args, argv, results, text, rows)

    results = run_all(jobs, args.jobs, on_result=partial)
    text, rows = summary(results, final=True)
    print()
    print(text)
    if args.mode == "smoke" and args.project:
        print("measuring step costs (2 experiences, MLP 8-8, one torch thread):", flush=True)
        costs = measure_costs(args)
        full = make_jobs(argparse.Namespace(**{**vars(args), "mode": "full", "seeds": [0, 1, 2]}))
        workers = 14
        lines = projection(costs, full, workers)
        print(f"\nprojected --full on one H200 with {workers} workers (costs measured here, load "
              f"{os.getloadavg()[0]:.2f}; assumed {GPU_FLOPS / 1e12:.0f} TFLOP/s float32):")
        print("\n".join(lines))
        text += "\nProjection of --full on one H200:\n\n```\n" + "\n".join(lines) + "\n```\n"
    if args.out:
        print(f"wrote {write_out(args, argv, results, text, rows)}")
    failed = sum(1 for row in rows if row["failed"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
