"""Per-sample content digests: the identity of a sample by its bytes (feature cache keys, data-overlap checks)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def row_digests(x: torch.Tensor) -> np.ndarray:
    """128-bit BLAKE2b digest of each sample's raw bytes (dtype and shape included), as an ``S16`` array."""
    arr = np.ascontiguousarray(x.detach().cpu().numpy()).reshape(x.shape[0], -1)
    tag = f"{arr.dtype.str}{tuple(x.shape[1:])}".encode()
    person = tag[:16].ljust(16, b"\0")
    out = np.empty(arr.shape[0], dtype="S16")
    for i in range(arr.shape[0]):
        out[i] = hashlib.blake2b(arr[i].tobytes(), digest_size=16, person=person).digest()
    return out


def digests_to_tensor(d: np.ndarray) -> torch.Tensor:
    """``S16`` digests as a (N, 16) uint8 tensor (for ``torch.save``)."""
    return torch.from_numpy(np.frombuffer(d.tobytes(), dtype=np.uint8).reshape(-1, 16).copy())


def tensor_to_digests(t: torch.Tensor) -> np.ndarray:
    """The inverse of :func:`digests_to_tensor`."""
    return np.frombuffer(t.contiguous().numpy().tobytes(), dtype="S16")
