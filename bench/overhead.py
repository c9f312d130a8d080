"""Overhead of clbench's loop against a bare PyTorch loop doing the same work (one process).

Work: permuted MNIST, 3 experiences, MLP 784-1000-1000-10, SGD lr 0.01, batch 256, 1 epoch per
experience; after each experience, accuracy on every experience's test set. Variants: a bare
loop, clbench ``finetune``, Avalanche's ``Naive`` with its own loops (on ``as_avalanche_benchmark``),
``avalanche.Naive`` through clbench's adapter and loop, and the same adapter with its fast paths off
(``adapter_dataloader``: samples fetched one by one through the Avalanche dataset, the adapter before
issue 16). Data preparation (loading, permuting) is outside the timings. Each variant is run
``--repeats`` times interleaved; the fastest wall time and the least CPU time (this process, all threads)
are kept. Prints each run with the 1-minute load average when it started, the accuracies and the
ratios to the bare loop in wall and CPU time, ending with ``ratio clbench/bare``, ``ratio adapter/bare``
and ``ratio avalanche/bare``. On a busy machine use ``--threads 1`` and read the CPU ratios.

    CLBENCH_DATA=../shared/data python bench/overhead.py [--repeats 2] [--threads N] [--only bare,clbench_adapter]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from clbench.benchmarks.registry import build_stream
from clbench.protocols.loop import run_stream
from clbench.protocols.runner import seeded
from clbench.results import CellRecord
from clbench.strategies.baselines import Finetune
from clbench.strategies.models import MLP
from clbench.studies import Publication

HP = dict(lr=0.01, epochs=1, batch_size=256, optimizer="sgd", hidden=(1000, 1000))


class Clock:
    """Wall seconds and this process's CPU seconds (all threads) since creation. On a busy machine the CPU
    time is the steadier measure of the work done (with one torch thread it excludes time spent waiting
    for a core); both are reported."""

    def __init__(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def read(self) -> tuple[tuple[float, float], float]:
        return time.perf_counter() - self.t0, time.process_time() - self.c0


def bare(stream, seed: int) -> tuple[tuple[float, float], float]:
    """A plain PyTorch loop over pre-converted float tensors; returns (seconds, final mean accuracy)."""
    tr = [(e.train.float_x().flatten(1), e.train.y) for e in stream]
    te = [(e.test.float_x().flatten(1), e.test.y) for e in stream]
    with seeded(seed):
        model = MLP(784, 10, HP["hidden"])
    opt = torch.optim.SGD(model.parameters(), lr=HP["lr"])
    g = torch.Generator().manual_seed(seed)
    clock = Clock()
    for x, y in tr:
        model.train()
        for _ in range(HP["epochs"]):
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), HP["batch_size"]):
                idx = perm[i : i + HP["batch_size"]]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        with torch.inference_mode():
            accs = [float((torch.cat([model(xt[i:i + 1024]).argmax(1) for i in range(0, len(yt), 1024)]) == yt).float().mean()) for xt, yt in te]
    return clock.read(), sum(accs) / len(accs)


def clbench_finetune(stream, seed: int) -> tuple[tuple[float, float], float]:
    with seeded(seed):
        strategy = Finetune(stream.info, seed=seed, **HP)
    res = CellRecord("bench", stream.name, "finetune", seed)
    clock = Clock()
    run_stream(strategy, stream, res)
    return clock.read(), res.metrics["acc"]


def avalanche_own_loop(stream, seed: int) -> tuple[tuple[float, float], float]:
    """Avalanche's Naive with its own training and evaluation loops, on ``as_avalanche_benchmark(stream)``."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    from clbench.benchmarks.avalanche_interop import as_avalanche_benchmark

    bm = as_avalanche_benchmark(stream)  # data preparation: outside the timing
    with seeded(seed):
        model = MLP(784, 10, HP["hidden"])
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=HP["lr"]),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=HP["batch_size"],
                     train_epochs=HP["epochs"], eval_mb_size=1024,
                     evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))
    clock = Clock()
    for exp in bm.train_stream:
        strategy.train(exp, eval_streams=[])
        res = strategy.eval(bm.test_stream)
    secs = clock.read()
    accs = [v for k, v in res.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    return secs, sum(accs) / len(accs)


def clbench_adapter(stream, seed: int) -> tuple[tuple[float, float], float]:
    """``avalanche.Naive`` through clbench's adapter, evaluated by clbench's loop."""
    from clbench.strategies.avalanche_adapter import avalanche_strategy_class

    with seeded(seed):
        strategy = avalanche_strategy_class("Naive")(stream.info, seed=seed, **HP)
    res = CellRecord("bench", stream.name, "avalanche.Naive", seed)
    clock = Clock()
    run_stream(strategy, stream, res)
    return clock.read(), res.metrics["acc"]


def clbench_adapter_dataloader(stream, seed: int) -> tuple[tuple[float, float], float]:
    """The adapter with its fast paths off: Avalanche's dataset read through a DataLoader (the same order)."""
    from clbench.strategies import avalanche_adapter

    avalanche_adapter.FAST_PATHS = False
    try:
        return clbench_adapter(stream, seed)
    finally:
        avalanche_adapter.FAST_PATHS = True


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated variants (default: all)")
    ap.add_argument("--train-per-task", type=int, default=None,
                    help="training images per experience (default: all 60,000; fewer for more repeats on a busy machine)")
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    pub = Publication.begin(args.publish)
    if args.threads:
        torch.set_num_threads(args.threads)
    entry = {"name": "permuted_mnist", "n_experiences": 3}
    if args.train_per_task:
        entry["train_per_task"] = args.train_per_task
    stream = build_stream(entry, seed=args.seed)
    variants = {"bare": bare, "clbench": clbench_finetune, "avalanche_own_loop": avalanche_own_loop,
                "clbench_adapter": clbench_adapter, "adapter_dataloader": clbench_adapter_dataloader}
    if args.only:
        keep = {"bare", *args.only.split(",")}
        variants = {k: v for k, v in variants.items() if k in keep}
    print(f"start: {load()}", flush=True)
    best: dict[str, list[float]] = {}  # name -> [fastest wall, least CPU, accuracy]
    for r in range(args.repeats):
        for name, fn in variants.items():
            at = load()
            (wall, cpu), acc = fn(stream, args.seed)
            print(f"run {r}: {name:18s} {wall:7.2f} s wall {cpu:7.2f} s CPU  final mean accuracy {acc:.4f}  ({at})", flush=True)
            b = best.setdefault(name, [wall, cpu, acc])
            b[0], b[1] = min(b[0], wall), min(b[1], cpu)
    print(f"\ntorch threads: {torch.get_num_threads()}, fastest of {args.repeats} (wall and CPU separately); end: {load()}")
    bw, bc = best["bare"][0], best["bare"][1]
    for name, (wall, cpu, acc) in best.items():
        print(f"  {name:18s} {wall:7.2f} s wall {cpu:7.2f} s CPU  acc {acc:.4f}  ratio to bare {wall / bw:.3f}x wall, "
              f"{cpu / bc:.3f}x CPU")
    for name, label in (("clbench", "clbench"), ("clbench_adapter", "adapter"), ("avalanche_own_loop", "avalanche")):
        if name in best:
            print(f"ratio {label}/bare: {best[name][0] / bw:.3f}x wall, {best[name][1] / bc:.3f}x CPU")
    pub.end()


if __name__ == "__main__":
    main()
