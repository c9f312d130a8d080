"""Overhead of clbench's loop against a bare PyTorch loop doing the same work (one process).

Work: permuted MNIST, 3 experiences, MLP 784-1000-1000-10, SGD lr 0.01, batch 256, 1 epoch per
experience; after each experience, accuracy on every experience's test set. Data preparation
(loading, permuting) is outside the timings. Each variant is run ``--repeats`` times interleaved
and the fastest run is kept. Prints each time, the accuracies and the ratios, ending with
``ratio clbench/bare: <r>x``.

    CLBENCH_DATA=../shared/data python bench/overhead.py [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from clbench.benchmarks.registry import build_stream
from clbench.protocols.loop import CellResult, run_stream
from clbench.protocols.runner import seeded
from clbench.strategies.baselines import Finetune
from clbench.strategies.models import MLP

HP = dict(lr=0.01, epochs=1, batch_size=256, optimizer="sgd", hidden=(1000, 1000))


def bare(stream, seed: int) -> tuple[float, float]:
    """A plain PyTorch loop over pre-converted float tensors; returns (seconds, final mean accuracy)."""
    tr = [(e.train.float_x().flatten(1), e.train.y) for e in stream]
    te = [(e.test.float_x().flatten(1), e.test.y) for e in stream]
    with seeded(seed):
        model = MLP(784, 10, HP["hidden"])
    opt = torch.optim.SGD(model.parameters(), lr=HP["lr"])
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
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
    return time.perf_counter() - t0, sum(accs) / len(accs)


def clbench_finetune(stream, seed: int) -> tuple[float, float]:
    with seeded(seed):
        strategy = Finetune(stream.info, seed=seed, **HP)
    res = CellResult("bench", stream.name, "finetune", seed)
    t0 = time.perf_counter()
    run_stream(strategy, stream, res)
    return time.perf_counter() - t0, res.metrics["acc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stream = build_stream({"name": "permuted_mnist", "n_experiences": 3}, seed=args.seed)
    variants = {"bare": bare, "clbench": clbench_finetune}
    best: dict[str, tuple[float, float]] = {}
    for r in range(args.repeats):
        for name, fn in variants.items():
            secs, acc = fn(stream, args.seed)
            print(f"run {r}: {name:18s} {secs:7.2f} s  final mean accuracy {acc:.4f}", flush=True)
            if name not in best or secs < best[name][0]:
                best[name] = (secs, acc)
    print(f"\ntorch threads: {torch.get_num_threads()}, fastest of {args.repeats}:")
    for name, (secs, acc) in best.items():
        print(f"  {name:18s} {secs:7.2f} s  acc {acc:.4f}  ratio to bare {secs / best['bare'][0]:.3f}x")
    print(f"ratio clbench/bare: {best['clbench'][0] / best['bare'][0]:.3f}x")


if __name__ == "__main__":
    main()
