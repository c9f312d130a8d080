"""Shared pieces of the frozen-feature strategies (nmc, fetril, acil/dsal/gacil, kvb, linear).

They all declare ``wants_features = True``: the runner hands them the cached feature stream of the
benchmark's ``backbone:`` (inputs of shape (N, D)), and they never train the encoder.
"""

from __future__ import annotations

import torch

from clbench.stream import StreamInfo

from .base import Strategy


def as_features(x: torch.Tensor) -> torch.Tensor:
    """Inputs as a float32 (N, D) matrix (images are flattened: use a backbone for real features)."""
    x = x.float() if x.dtype != torch.uint8 else x.float().div_(255.0)
    return x.reshape(x.shape[0], -1)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||_2, eps), row-wise."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


class FrozenFeatureStrategy(Strategy):
    """Base of the frozen-feature methods: tracks the feature dimension and the classes seen so far.

    ``predict`` implementations return (N, n_classes) scores with ``-inf`` for classes never seen, so
    that an unseen class is never predicted.
    """

    wants_features = True

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(info, seed=seed, device=device)
        self.dim = 1
        for s in info.input_shape:
            self.dim *= int(s)
        self.seen = torch.zeros(info.n_classes, dtype=torch.bool)

    def observe_labels(self, y: torch.Tensor) -> None:
        self.seen[y.unique()] = True

    def mask_unseen(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(~self.seen.to(scores.device), float("-inf"))
