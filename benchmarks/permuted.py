"""Domain-incremental permuted streams: each experience a fixed pixel permutation of the same data."""

from __future__ import annotations

import torch

from clbench.errors import UserError

from .stream import Experience, Stream, TensorData


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
    return TensorData(flat[:, perm].reshape(data.x.shape), data.y)


def permuted_stream(
    name: str,
    train: TensorData,
    test: TensorData,
    *,
    seed: int,
    n_experiences: int = 10,
    first_identity: bool = True,
    params: dict | None = None,
) -> Stream:
    """Every experience holds all classes of the dataset under its own pixel permutation."""
    if n_experiences < 1:
        raise UserError(f"n_experiences must be positive, got {n_experiences}")
    n_pixels = int(train.x[0].numel())
    perms = permutations(n_pixels, n_experiences, seed, first_identity)
    classes = tuple(sorted(torch.unique(train.y).tolist()))
    exps = tuple(
        Experience(i, i, classes, permute(train, p), permute(test, p), info={"permutation_head": p[:8].tolist()})
        for i, p in enumerate(perms)
    )
    return Stream(name=name, scenario="domain-il", n_classes=len(classes), experiences=exps, params=dict(params or {}), seed=seed)
