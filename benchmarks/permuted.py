"""Domain-incremental permuted streams: each experience a fixed pixel permutation of the same data.

Optionally on a seed-drawn subset of the samples (``train_per_task``/``test_per_task``): every task then
holds the same images under its own permutation (CPU-sized reproductions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from clbench.constraints import AnyOf, Boolean, Interval, NoneValue, problems
from clbench.errors import UserError
from clbench.stream import Experience, Stream, TensorData

from .sources import SourceData

PERMUTED_CONSTRAINTS = {
    "n_experiences": Interval(int, 1),
    "first_identity": Boolean(),
    "train_per_task": AnyOf(NoneValue(), Interval(int, 1)),
    "test_per_task": AnyOf(NoneValue(), Interval(int, 1)),
}


def permuted_problems(params: Mapping[str, Any], sizes: Mapping[str, int] | None = None) -> list[str]:
    """Problems of a permuted stream's parameters; ``sizes`` (split -> samples) bounds the subset sizes."""
    out = problems(params, PERMUTED_CONSTRAINTS)
    for key, split in (("train_per_task", "train"), ("test_per_task", "test")):
        n = params.get(key)
        if not out and n is not None and sizes and split in sizes and n > sizes[split]:
            out.append(f"{key} must be at most the {sizes[split]} {split} samples of the dataset, got {n}")
    return out


def permutations(n_pixels: int, n_experiences: int, seed: int, first_identity: bool = True) -> list[torch.Tensor]:
    """``n_experiences`` pixel permutations drawn from ``seed`` (the first the identity if asked)."""
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n_pixels, generator=g) for _ in range(n_experiences)]
    if first_identity:
        perms[0] = torch.arange(n_pixels)
    return perms


def permute(data: TensorData, perm: torch.Tensor) -> TensorData:
    """Apply one permutation to the flattened pixels (all channels together), shape kept."""
    n = data.x.shape[0]
    flat = data.x.reshape(n, -1)
    return data.with_x(flat[:, perm].reshape(data.x.shape))


def take(data: TensorData, n: int | None, g: torch.Generator) -> TensorData:
    """``n`` samples of ``data`` drawn without replacement (sorted by index), or all when ``n`` is None."""
    if n is None:
        return data
    return data.subset(torch.randperm(len(data), generator=g)[:n].sort().values)


def permuted_stream(
    name: str,
    data: SourceData | tuple[TensorData, TensorData],
    *,
    seed: int,
    n_experiences: int = 10,
    first_identity: bool = True,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    params: dict | None = None,
) -> Stream:
    """Every experience holds all classes of the dataset (or the same seed-drawn subset) under its own permutation."""
    train, test = (data.train, data.test) if isinstance(data, SourceData) else data
    bad = permuted_problems({"n_experiences": n_experiences, "first_identity": first_identity,
                             "train_per_task": train_per_task, "test_per_task": test_per_task},
                            {"train": len(train), "test": len(test)})
    if bad:
        raise UserError("; ".join(bad))
    if train_per_task is not None or test_per_task is not None:
        g = torch.Generator().manual_seed(seed + 104729)
        train, test = take(train, train_per_task, g), take(test, test_per_task, g)
    n_pixels = int(train.x[0].numel())
    perms = permutations(n_pixels, n_experiences, seed, first_identity)
    classes = tuple(sorted(torch.unique(train.y).tolist()))
    exps = tuple(
        Experience(i, i, classes, permute(train, p), permute(test, p), info={"permutation_head": p[:8].tolist()})
        for i, p in enumerate(perms)
    )
    rec = dict(params or {})
    sources = {}
    if isinstance(data, SourceData):
        rec["source"] = data.describe()
        sources = {"train": data.train, "test": data.test}
    return Stream(name=name, scenario="domain-il", n_classes=len(classes), experiences=exps, params=rec, seed=seed,
                  sources=sources)
