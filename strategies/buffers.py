"""Rehearsal buffers."""

from __future__ import annotations

import torch

from clbench.stream import TensorData


class ClassBalancedBuffer:
    """A class-balanced reservoir of at most ``capacity`` samples.

    Every class seen so far gets an equal quota (``capacity // n_classes``, the remainder to the
    classes seen first). Within a class the buffer is a reservoir sample: after ``n`` samples of a
    class have been offered, each of them is in the buffer with the same probability. Shrinking a
    quota when new classes arrive drops a uniformly random subset, which keeps that property.
    """

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.g = generator
        self.x: dict[int, torch.Tensor] = {}
        self.seen: dict[int, int] = {}

    def quotas(self) -> dict[int, int]:
        classes = list(self.x)
        if not classes:
            return {}
        q, r = divmod(self.capacity, len(classes))
        return {c: q + (1 if i < r else 0) for i, c in enumerate(classes)}

    def update(self, data: TensorData) -> None:
        for c in torch.unique(data.y).tolist():
            if c not in self.x:
                self.x[c] = data.x[:0].clone()
                self.seen[c] = 0
        quotas = self.quotas()
        for c in list(self.x):  # shrink old classes first
            if len(self.x[c]) > quotas[c]:
                keep = torch.randperm(len(self.x[c]), generator=self.g)[: quotas[c]]
                self.x[c] = self.x[c][keep]
        for c in torch.unique(data.y).tolist():
            self._reservoir(c, data.x[data.y == c], quotas[c])

    def _reservoir(self, c: int, new: torch.Tensor, quota: int) -> None:
        buf = self.x[c]
        n0, m = self.seen[c], len(new)
        fill = max(0, min(quota - len(buf), m))
        buf = torch.cat([buf, new[:fill]])
        # sample t (0-based overall position n0+t) replaces slot j ~ U{0..n0+t} when j < quota
        t = torch.arange(fill, m)
        if len(t):
            j = (torch.rand(len(t), generator=self.g) * (n0 + t + 1).double()).long()
            hit = (j < quota).nonzero().squeeze(1)
            for i in hit.tolist():  # in order, so later samples overwrite earlier ones
                buf[j[i]] = new[t[i]]
        self.x[c] = buf
        self.seen[c] = n0 + m

    def data(self) -> TensorData | None:
        if not self.x or not sum(len(v) for v in self.x.values()):
            return None
        xs = [v for v in self.x.values() if len(v)]
        ys = [torch.full((len(v),), c, dtype=torch.int64) for c, v in self.x.items() if len(v)]
        return TensorData(torch.cat(xs), torch.cat(ys))

    def __len__(self) -> int:
        return sum(len(v) for v in self.x.values())

    def nbytes(self) -> int:
        return sum(v.element_size() * v.nelement() for v in self.x.values()) + 8 * len(self)
