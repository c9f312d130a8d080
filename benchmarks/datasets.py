"""Readers of dataset files, each returning ``(train, test)`` as in-memory :class:`TensorData`.

Images are decoded once into uint8 tensors (N, C, H, W); nothing goes through PIL per sample in the
training loop. Which datasets exist, their sizes and checksums live in :mod:`clbench.benchmarks.sources`;
this module only reads files and says precisely which file is wrong:

* MNIST-format (IDX) files: header checked against the file size, labels checked against the class count,
  SHA-256 checked against the canonical files;
* CIFAR python pickles: read with a restricted unpickler that only rebuilds numpy arrays (a pickle from the
  data root can never run code), structure checked;
* image folders (a directory or a ``.tar``): ``split/class/image``, sizes checked, counts checked against
  what the caller expects before anything is cached; a damaged image is named.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import struct
import sys
import tarfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from clbench.errors import DataError, UserError
from clbench.files import CorruptFile, atomic_save_checked, load_checked
from clbench.paths import cache_root
from clbench.stream import TensorData

DatasetPair = tuple[TensorData, TensorData]


def corrupt(path: Path | str, problem: str, fix: str = "") -> DataError:
    return DataError(f"dataset file {path} is corrupt: {problem}. Fix: "
                     + (fix or "delete it and rerun online (without CLBENCH_OFFLINE) so it is downloaded again, "
                               "or copy an intact copy of it there."))


# ---------------------------------------------------------------- IDX (MNIST format)

def idx_problem(path: Path) -> tuple[str | None, tuple[int, ...]]:
    """Check an idx (MNIST-format) file's header against its size: (problem or None, dimensions)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] or head[1] or head[2] != 0x08 or not 1 <= head[3] <= 4:
            return f"not an idx ubyte file (header bytes {head.hex() or 'missing'})", ()
        raw = f.read(4 * head[3])
    if len(raw) < 4 * head[3]:
        return "the header is cut off", ()
    dims = struct.unpack(f">{head[3]}I", raw)
    expected = 4 + 4 * head[3] + math.prod(dims)
    if size != expected:
        shape = "x".join(map(str, dims))
        return f"its header announces {shape} values ({expected} bytes) but it has {size} bytes (truncated or damaged)", dims
    return None, dims


@lru_cache(maxsize=64)
def _digest(path: str, algorithm: str, size: int, mtime_ns: int) -> str:
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (memoised per path, size and modification time)."""
    st = path.stat()
    return _digest(str(path), algorithm, st.st_size, st.st_mtime_ns)


def checksum_problem(path: Path, expected: str) -> str | None:
    """Why ``path`` does not have the checksum ``expected`` (MD5 when 32 hex digits, SHA-256 when 64), or None."""
    have = file_digest(path, "md5" if len(expected) == 32 else "sha256")
    return None if have == expected else f"its {'MD5' if len(expected) == 32 else 'SHA-256'} {have[:16]}... differs from the canonical {expected[:16]}..."


def read_idx(path: Path, n_classes: int | None = None, checksum: str | None = None) -> torch.Tensor:
    """An IDX ubyte file as a uint8 tensor; a damaged file, out-of-range labels or a wrong checksum name the file."""
    problem, dims = idx_problem(path)
    if problem:
        raise corrupt(path, problem)
    data = np.fromfile(path, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)
    if n_classes is not None:
        bad = np.flatnonzero(data >= n_classes)
        if bad.size:
            raise corrupt(path, f"label {int(data[bad[0]])} at position {int(bad[0])} is out of range 0..{n_classes - 1} "
                                f"({bad.size} such label(s))")
    problem = checksum_problem(path, checksum) if checksum else None
    if problem:
        raise corrupt(path, problem)
    return torch.from_numpy(data.copy())


def read_idx_pair(folder: Path, files: Sequence[str], n_classes: int, checksums: Mapping[str, str]) -> DatasetPair:
    """Train and test of an MNIST-format dataset: ``files`` = train images, train labels, test images, test labels."""
    tensors = [read_idx(folder / f, n_classes if "labels" in f else None, checksums.get(f)) for f in files]
    for images, labels, (fi, fl) in ((tensors[0], tensors[1], files[:2]), (tensors[2], tensors[3], files[2:])):
        if images.shape[0] != labels.shape[0]:
            raise corrupt(folder / fl, f"it has {labels.shape[0]} labels for the {images.shape[0]} images of {fi}")
    return (TensorData(tensors[0].unsqueeze(1).contiguous(), tensors[1].long()),
            TensorData(tensors[2].unsqueeze(1).contiguous(), tensors[3].long()))


# ---------------------------------------------------------------- CIFAR python pickles

class _ArraysOnly(pickle.Unpickler):
    """Rebuilds only what a CIFAR batch holds (dicts, lists, bytes, numbers and numpy arrays); refuses any other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR batch holds only arrays and lists "
                                     f"(the file may have been tampered with)")


def read_cifar_batch(file: Path, label_key: bytes) -> TensorData:
    """One CIFAR python pickle (``{b'data': uint8 (N, 3072), label_key: [N ints], ...}``), restricted unpickling."""
    try:
        with open(file, "rb") as f:
            d = _ArraysOnly(f, encoding="bytes").load()
        if not isinstance(d, dict):
            raise ValueError(f"it holds a {type(d).__name__}, not a dict")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ValueError(f"data has shape {data.shape} and {len(labels)} labels; expected (N, 3072) and N")
    except Exception as exc:  # truncated, not a pickle, wrong keys, refused global
        raise DataError(f"{file} is not a valid CIFAR batch ({type(exc).__name__}: {exc}); "
                        f"fix: delete the folder {file.parent} and download it again") from None
    return TensorData(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels))


def read_cifar_pickles(base: Path, train_files: Sequence[str], test_file: str, label_key: bytes,
                       checksums: Mapping[str, str] | None = None) -> DatasetPair:
    """The CIFAR-10/100 python pickles below ``base`` (each file's checksum checked when known)."""
    for name, digest in (checksums or {}).items():
        f = base / name
        problem = checksum_problem(f, digest) if f.exists() else None
        if problem:
            raise corrupt(f, problem)
    train = TensorData.concat([read_cifar_batch(base / f, label_key) for f in train_files])
    return train, read_cifar_batch(base / test_file, label_key)


# ---------------------------------------------------------------- scikit-learn digits

def digits() -> DatasetPair:
    """scikit-learn's bundled 8x8 digits (1797 samples, no download), as uint8 1x8x8 images.

    Pixel values 0..16 are scaled to 0..255. The train/test split is fixed (stratified 70/30,
    ``random_state=0``): it defines the dataset, independent of the cell seed.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.3, stratify=d.target, random_state=0)
    return TensorData(torch.from_numpy(xtr), torch.from_numpy(ytr)), TensorData(torch.from_numpy(xte), torch.from_numpy(yte))


# ---------------------------------------------------------------- image folders (directory or tar)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class FolderMember:
    split: str
    label: str
    name: str
    read: Callable[[], bytes]


def folder_members(path: Path) -> list[FolderMember]:
    """``split/class/file`` entries of a directory or tar (deeper prefixes allowed), sorted by split, class, name."""
    entries: list[FolderMember] = []
    if path.is_dir():
        for f in path.rglob("*"):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                parts = f.relative_to(path).parts
                if len(parts) >= 3:
                    entries.append(FolderMember(parts[-3], parts[-2], str(f), f.read_bytes))
    else:
        try:
            tar = tarfile.open(path)
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"cannot read {path} as a tar archive ({exc}); fix: replace the file with an intact copy") from None
        for m in members:
            if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                parts = Path(m.name).parts
                if len(parts) >= 3:
                    # bind the TarInfo itself: extractfile(name) would scan the member list each time
                    entries.append(FolderMember(parts[-3], parts[-2], m.name, lambda m=m: tar.extractfile(m).read()))  # type: ignore[union-attr]
    entries.sort(key=lambda e: (e.split, e.label, e.name))
    return entries


def decode_image(source: Path, name: str, read: Callable[[], bytes], size: tuple[int, int] | None = None,
                 crop_pct: float | None = None) -> np.ndarray:
    """One image as uint8 (H, W, 3), resized to ``size`` (W, H) when given; a damaged file is one error naming it.

    Without ``crop_pct`` the image is stretched to ``size`` (bicubic). With it (timm's name), the shorter
    side is first resized to ``s = floor(min(size) / crop_pct)`` keeping the aspect ratio (longer side
    ``int(s * long / short)``, as torchvision's ``Resize(s)``), then the centre ``size`` is cropped (offsets
    ``round((W' - w) / 2)``, ``round((H' - h) / 2)``, as ``CenterCrop``): ``size=224, crop_pct=0.875`` is
    ``Resize(256, bicubic) + CenterCrop(224)``, the test transform of the official ViT continual-learning code.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(read())) as im:
            im = im.convert("RGB")
            if size is not None and crop_pct is not None:
                w, h = im.size
                short = math.floor(min(size) / crop_pct)
                nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
                if (nw, nh) != (w, h):
                    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
                left, top = int(round((nw - size[0]) / 2.0)), int(round((nh - size[1]) / 2.0))
                im = im.crop((left, top, left + size[0], top + size[1]))
            elif size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # PIL raises several types for damaged data
        raise DataError(f"cannot decode image {name} in {source} ({type(exc).__name__}: {exc}); fix: replace or remove that file") from None


@dataclass(frozen=True)
class ExpectedCounts:
    """What a known image-folder dataset must hold: classes, and samples per split (total and per class)."""

    n_classes: int
    split_sizes: Mapping[str, int]
    per_class: Mapping[str, int] | None = None  # split -> samples of every class (balanced datasets)


def count_problems(path: Path, counts: Mapping[str, Mapping[str, int]], classes: Sequence[str],
                   expected: ExpectedCounts | None) -> list[str]:
    """Why the member counts of an image folder are not those of a complete dataset."""
    out = []
    if expected is not None and len(classes) != expected.n_classes:
        out.append(f"it has {len(classes)} classes, expected {expected.n_classes}")
    for split in ("train", "test"):
        per = counts.get(split, {})
        empty = [c for c in classes if not per.get(c)]
        if empty:
            out.append(f"split {split} has no image of class(es) {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}")
        if expected is None:
            continue
        n = sum(per.values())
        want = expected.split_sizes.get(split)
        if want is not None and n != want:
            out.append(f"split {split} has {n} images, expected {want}")
        if expected.per_class and split in expected.per_class:
            off = {c: per.get(c, 0) for c in classes if per.get(c, 0) != expected.per_class[split]}
            if off:
                first = ", ".join(f"{c}: {v}" for c, v in list(off.items())[:4])
                out.append(f"split {split}: {len(off)} class(es) do not hold {expected.per_class[split]} images ({first})")
    return out


def image_folder(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
                 expected: ExpectedCounts | None = None, size: int | None = None,
                 splits: Mapping[str, str] | None = None) -> tuple[DatasetPair, list[str]]:
    """Read ``split/class/*.jpg`` from a directory or a ``.tar``: splits ``train`` and ``test``; return ``(data, classes)``.

    Class indices follow the sorted class-folder names. ``splits`` renames split folders (e.g. ``{"val":
    "test"}``); ``size`` resizes every image to size x size (bicubic), otherwise all images must share one
    size. The counts are checked first (``expected`` for a known dataset; otherwise every class must appear
    in both splits, and the counts are printed once), so nothing partial is ever decoded into the cache.
    The decoded uint8 tensors are cached (keyed by the source's size and modification time and the options).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"image folder {path} does not exist; fix: give the path of a folder or .tar holding "
                        f"train/<class>/*.jpg and test/<class>/*.jpg")
    st = path.stat()
    opts = f"{size}|{sorted((splits or {}).items())}"
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{opts}|v3".encode()).hexdigest()[:16]
    cache = Path(cache_root(cache_dir)) / "decoded" / f"{path.stem}-{key}.pt"
    if cache.exists():
        try:
            blob = load_checked(cache)  # SHA-256 checked: truncation and flipped bits are both caught
            data = TensorData(blob["train_x"], blob["train_y"]), TensorData(blob["test_x"], blob["test_y"])
            return data, list(blob["classes"])
        except (CorruptFile, KeyError, TypeError, ValueError) as exc:
            warnings.warn(f"decoded-image cache {cache} is damaged ({exc}); rebuilding it from {path}", stacklevel=2)
            cache.unlink(missing_ok=True)
    entries = folder_members(path)
    rename = dict(splits or {})
    entries = [FolderMember(rename.get(e.split, e.split), e.label, e.name, e.read) for e in entries]
    found = {e.split for e in entries}
    if not {"train", "test"} <= found:
        raise DataError(f"{path} must hold train/<class>/*.jpg and test/<class>/*.jpg; found top folders: {sorted(found) or 'none'}")
    entries = [e for e in entries if e.split in ("train", "test")]
    classes = sorted({e.label for e in entries})
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for e in entries:
        counts[e.split][e.label] = counts[e.split].get(e.label, 0) + 1
    problems = count_problems(path, counts, classes, expected)
    if problems:
        raise DataError(f"{path} is incomplete or not the expected dataset: " + "; ".join(problems)
                        + ". Fix: replace it with a complete copy (nothing was cached)")
    if expected is None:
        print(f"image folder {path}: {len(classes)} classes, train {sum(counts['train'].values())} and test "
              f"{sum(counts['test'].values())} images (per class: train {min(counts['train'].values())}.."
              f"{max(counts['train'].values())}, test {min(counts['test'].values())}..{max(counts['test'].values())})",
              file=sys.stderr)
    cidx = {c: i for i, c in enumerate(classes)}
    out: dict[str, object] = {"classes": classes}
    for split in ("train", "test"):
        members = [e for e in entries if e.split == split]
        decoded = [decode_image(path, e.name, e.read, None if size is None else (size, size)) for e in members]
        shapes = {im.shape for im in decoded}
        if len(shapes) > 1:
            raise UserError(f"images in {path}/{split} have different sizes {sorted(shapes)[:3]}; fix: resize them to one "
                            f"size first (or give the image-folder benchmark a size)")
        imgs = np.stack(decoded)
        out[f"{split}_x"] = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
        out[f"{split}_y"] = torch.tensor([cidx[e.label] for e in members], dtype=torch.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_checked(out, cache)
    data = TensorData(out["train_x"], out["train_y"]), TensorData(out["test_x"], out["test_y"])  # type: ignore[arg-type]
    return data, classes
