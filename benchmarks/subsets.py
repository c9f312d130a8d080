"""Permuted MNIST on a seed-drawn subset of the samples, for CPU-sized reproductions.

Use it in a config as ``name: clbench.benchmarks.subsets:permuted_mnist_subset``. Every task holds
the same ``train_per_task`` training and ``test_per_task`` test images (drawn once from the seed)
under its own pixel permutation; ``None`` keeps the whole split. With both ``None`` it is exactly
``permuted_mnist``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clbench.errors import UserError

from . import datasets
from .permuted import permuted_stream
from .stream import Stream, TensorData


def take(data: TensorData, n: int | None, g: torch.Generator, what: str) -> TensorData:
    """``n`` samples of ``data`` drawn without replacement (sorted by index), or all when ``n`` is None."""
    if n is None:
        return data
    if not isinstance(n, int) or n < 1 or n > len(data):
        raise UserError(f"{what} must be an integer between 1 and {len(data)}, got {n!r}")
    return data.subset(torch.randperm(len(data), generator=g)[:n].sort().values)


def permuted_mnist_subset(seed: int, data_root: Path, n_experiences: int = 10, train_per_task: int | None = None,
                          test_per_task: int | None = None, first_identity: bool = True, download: bool = True) -> Stream:
    """Domain-incremental permuted MNIST restricted to a seed-drawn subset of train/test images."""
    train, test = datasets.mnist(data_root, download=download)
    g = torch.Generator().manual_seed(seed + 104729)
    train = take(train, train_per_task, g, "train_per_task")
    test = take(test, test_per_task, g, "test_per_task")
    params = dict(n_experiences=n_experiences, first_identity=first_identity, train_per_task=train_per_task,
                  test_per_task=test_per_task)
    return permuted_stream("permuted_mnist_subset", train, test, seed=seed, n_experiences=n_experiences,
                           first_identity=first_identity, params=params)
