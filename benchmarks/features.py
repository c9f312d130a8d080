"""The on-disk feature cache of frozen backbones.

An entry holds the features of a *set of samples* of one dataset split under one encoder. Its key is

    (backbone name, resolution, weights SHA-256, transform id, dataset, split, number of samples,
     content hash)

(the transform names the preprocessing, the feature taken and an inexact backend such as bf16; float32
backends within :data:`clbench.benchmarks.feature_backends.TOLERANCE` of eager share entries), where the
content hash is the SHA-256 of the sorted 128-bit BLAKE2b digests of the samples' raw bytes
(order-invariant, so every seed's class order hits the same entry, and two different datasets never
collide even under the same name). A change in any part makes a new entry. An entry whose sample set
contains every requested sample is reused (e.g. a sub-sampled stream of the same split).

File: ``<cache>/features/<dataset>/<split>/<backbone>@<res>-<weights8>-<transform8>-n<N>-<content16>.pt``,
a ``torch.save`` dict ``{version, key, digests (N, 16) uint8 sorted, features (N, D) float32, checksum}``
with ``checksum`` = SHA-256 of digests and features bytes. Writes are atomic (temporary file + rename);
a file that does not load, has the wrong key or fails its checksum is deleted and rebuilt, never trusted.
(``<backbone>`` with characters other than letters, digits and ``._-`` replaced by ``_``.) Features are
computed batched by the encoder's backend (:mod:`clbench.benchmarks.feature_backends`, chosen for the number
of images to encode) with a progress bar when asked.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clbench.digests import digests_to_tensor, row_digests, tensor_to_digests
from clbench.files import atomic_torch_save
from clbench.paths import cache_root
from clbench.stream import Experience, Stream, TensorData

from .backbones import Encoder, backbone_spec, check_backbone, load_encoder, parse_backbone
from .feature_backends import ENCODE_BATCH

CACHE_VERSION = 1


def _checksum(digests: torch.Tensor, features: torch.Tensor) -> str:
    h = hashlib.sha256(digests.contiguous().numpy().tobytes())
    h.update(features.contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything that identifies one cache entry."""

    backbone: str
    resolution: int
    weights_sha256: str
    transform: str
    dataset: str
    split: str
    n_samples: int
    content: str

    def prefix(self) -> str:
        t = hashlib.sha256(self.transform.encode()).hexdigest()[:8]
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.backbone)
        return f"{safe}@{self.resolution}-{self.weights_sha256[:8]}-{t}"

    def path(self, root: Path) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.dataset)
        return root / "features" / safe / self.split / f"{self.prefix()}-n{self.n_samples}-{self.content[:16]}.pt"

    def same_encoder(self, other: dict[str, Any]) -> bool:
        return all(other.get(k) == getattr(self, k) for k in ("backbone", "resolution", "weights_sha256", "transform", "dataset", "split"))


def _load_entry(path: Path, key: CacheKey, exact: bool) -> dict[str, Any] | None:
    """Load and verify an entry; a corrupt or mismatched file is deleted (None returned)."""
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
        ok = (isinstance(blob, dict) and blob.get("version") == CACHE_VERSION and key.same_encoder(blob.get("key", {}))
              and (not exact or blob["key"].get("content") == key.content)
              and blob["features"].shape[0] == blob["digests"].shape[0] == blob["key"]["n_samples"]
              and blob["checksum"] == _checksum(blob["digests"], blob["features"]))
    except Exception:  # noqa: BLE001 - truncated/garbled file of any kind
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
        return None
    return blob


def encode_all(encoder, x: torch.Tensor, progress: bool = False, desc: str = "features",
               cache_dir: str | Path | None = None) -> torch.Tensor:
    """Encode ``x`` in batches (the runtime's batch size, default :data:`ENCODE_BATCH`) into float32 (N, D).

    The encoder first chooses its runtime for ``len(x)`` images (:meth:`Encoder.prepare`) when it has one.
    """
    prepare = getattr(encoder, "prepare", None)
    runtime = prepare(x.shape[0], cache_dir) if prepare is not None else None
    batch = getattr(runtime, "batch_size", ENCODE_BATCH)
    out = torch.empty(x.shape[0], encoder.dim, dtype=torch.float32)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=x.shape[0], desc=desc, unit="img", file=sys.stderr)
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch):
            out[s : s + batch] = encoder.encode(x[s : s + batch])
            if bar is not None:
                bar.update(min(batch, x.shape[0] - s))
    if bar is not None:
        bar.close()
    return out


def cached_features(x: torch.Tensor, encoder, dataset: str, split: str, cache_dir: str | Path | None = None,
                    progress: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """Features of the samples ``x`` (N, C, H, W) under ``encoder``, from the cache or computed and stored.

    Returns ``(features (N, D) float32 in the order of x, info)`` with ``info = {"hit": bool, "path": str}``.
    Duplicate samples are encoded once.
    """
    from filelock import FileLock

    root = cache_root(cache_dir)
    dig = row_digests(x)
    uniq, first, inverse = np.unique(dig, return_index=True, return_inverse=True)
    content = hashlib.sha256(uniq.tobytes()).hexdigest()
    key = CacheKey(encoder.name, encoder.resolution, encoder.weights_sha256, encoder.transform, dataset, split, len(uniq), content)
    path = key.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        blob = _load_entry(path, key, exact=True) if path.exists() else None
        if blob is None:  # an entry of the same encoder whose samples include ours
            for cand in sorted(path.parent.glob(key.prefix() + "-n*.pt")):
                if cand == path or int(cand.name.rsplit("-", 2)[1][1:]) < len(uniq):
                    continue
                b = _load_entry(cand, key, exact=False)
                if b is not None and np.isin(uniq, tensor_to_digests(b["digests"])).all():
                    blob, path = b, cand
                    break
        hit = blob is not None
        if blob is None:
            feats = encode_all(encoder, x[torch.from_numpy(first)], progress, desc=f"{encoder.spec} {dataset}/{split}",
                               cache_dir=cache_dir)
            d = digests_to_tensor(uniq)
            blob = {"version": CACHE_VERSION, "key": key.__dict__.copy(), "digests": d, "features": feats,
                    "checksum": _checksum(d, feats)}
            atomic_torch_save(blob, path)
    stored = tensor_to_digests(blob["digests"])
    if hit and len(stored) == len(uniq):
        rows = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
    else:
        rows = torch.from_numpy(np.searchsorted(stored, dig).astype(np.int64))
    return blob["features"][rows], {"hit": hit, "path": str(path)}


def map_stream_features(stream: Stream, spec: "str | dict[str, Any]", cache_dir: str | Path | None = None, *, progress: bool = False,
                        encoder=None) -> Stream:
    """Replace every experience's samples by cached features (train and test splits cached separately).

    All experiences' training samples form one request (so each unique image is encoded once per
    split, not once per experience or per seed); each experience then takes its rows.
    """
    encoder = encoder or load_encoder(spec)
    out: dict[str, list[TensorData]] = {}
    hits = {}
    for split in ("train", "test"):
        parts = [getattr(e, split) for e in stream.experiences]
        sizes = [len(p) for p in parts]
        x = torch.cat([p.x for p in parts])
        feats, info = cached_features(x, encoder, stream.name, split, cache_dir, progress)
        hits[split] = info["hit"]
        chunks = torch.split(feats, sizes)
        out[split] = [p.with_x(c) for c, p in zip(chunks, parts)]
    exps = tuple(Experience(e.index, e.task_id, e.classes, tr, te, e.info)
                 for e, tr, te in zip(stream.experiences, out["train"], out["test"]))
    return stream.with_experiences(exps, backbone=encoder.spec, feature_cache_hit=hits)


def _flatten(data: TensorData) -> TensorData:
    return data.with_x(data.float_x().reshape(len(data), -1))


def feature_stream(stream: Stream, backbone: "str | dict[str, Any] | None", cache_dir: str | Path | None = None,
                   progress: bool = False, encoder: Encoder | None = None) -> Stream:
    """The same stream with every sample replaced by the backbone's features (float32, (N, D)).

    Pretrained backbones go through the on-disk cache (:func:`clbench.benchmarks.features.cached_features`):
    the unique samples of all training sets (and of all test sets) are encoded once, then every
    experience takes its rows by sample content. ``encoder`` overrides loading (tests, benchmarks).
    """
    spec = backbone_spec(backbone or "flatten")
    check_backbone(spec)
    name, _ = parse_backbone(spec)
    if name == "flatten":
        exps = tuple(
            Experience(e.index, e.task_id, e.classes, _flatten(e.train), _flatten(e.test), e.info) for e in stream.experiences
        )
        return stream.with_experiences(exps, backbone=spec)
    return map_stream_features(stream, spec, cache_dir, progress=progress, encoder=encoder)
