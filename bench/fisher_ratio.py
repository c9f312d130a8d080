"""EWC's two Fisher conventions on a trained digits MLP: how much larger is the per-sample one?

    CLBENCH_DATA=../shared/data python bench/fisher_ratio.py [--epochs 30] [--hidden 1000 1000] [--batch 256]

Trains an MLP (the ``ewc`` strategy with ewc_lambda 0, i.e. plain SGD) on the training set of split_digits
with all 10 classes in one experience, then computes on that training set
* F_sample    = (1/N) sum_n g_n^2           (``fisher: sample``, per-sample gradients)
* F_minibatch = (1/B) sum_b (mean_b g)^2    (``fisher: minibatch``, batches of ``--batch``)
and prints sum(F_sample) / sum(F_minibatch) (the factor by which lambda must shrink for the same penalty)
for every requested training length, plus the training accuracy reached.
"""

from __future__ import annotations

import argparse
import os

import torch

from clbench.benchmarks.registry import build_stream
from clbench.strategies.regularization import EWC
from clbench.studies import Publication


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 10, 30, 100])
    ap.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    pub = Publication.begin(args.publish)
    torch.set_num_threads(1)
    stream = build_stream({"name": "split_digits", "n_experiences": 1}, args.seed, os.environ.get("CLBENCH_DATA"))
    exp = stream[0].train_view()
    print(f"split_digits, 1 experience, {len(exp.train)} training samples, MLP {args.hidden}, SGD lr {args.lr}, batch 64")
    print("epochs  train_acc  sum_F_sample  sum_F_minibatch  ratio")
    torch.manual_seed(args.seed)
    s = EWC(stream.info, seed=args.seed, ewc_lambda=0.0, lr=args.lr, epochs=1, hidden=tuple(args.hidden),
            fisher_batch_size=args.batch)
    done = 0
    for target in sorted(args.epochs):
        s.epochs = target - done
        s.fit(exp.train.raw, 0)
        done = target
        with torch.no_grad():
            s.model.eval()
            acc = float((s.model(exp.train.x).argmax(1) == exp.train.y).double().mean())
        s.fisher_kind = "sample"
        fs = sum(float(v.sum()) for v in s.fisher(exp).values())
        s.fisher_kind = "minibatch"
        fm = sum(float(v.sum()) for v in s.fisher(exp).values())
        print(f"{done:6d}  {acc:9.4f}  {fs:12.5g}  {fm:15.5g}  {fs / fm:6.1f}")
    pub.end()


if __name__ == "__main__":
    main()
