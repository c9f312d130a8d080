"""Dataset sources, each returning ``(train, test)`` as in-memory :class:`TensorData`.

Images are decoded once into uint8 tensors (N, C, H, W); nothing goes through PIL per sample in
the training loop. torchvision datasets download for users; offline (or when the host cannot be
reached within a few seconds) a missing dataset raises one :class:`UserError` naming the folder
and the files expected.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import socket
import struct
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from clbench.errors import UserError

from .paths import cache_root, offline
from .stream import TensorData

DatasetPair = tuple[TensorData, TensorData]

# files torchvision expects below the data root, for the error message
_EXPECTED = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "fmnist": ("FashionMNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "cifar10": ("cifar-10-batches-py", ["data_batch_1..5", "test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}


def _host_reachable(url: str, timeout: float = 4.0) -> bool:
    host = urlparse(url).hostname or ""
    port = 443 if url.startswith("https") else 80
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _missing(key: str, root: Path, why: str) -> UserError:
    folder, files = _EXPECTED[key]
    return UserError(
        f"dataset {key!r} not found under {root / folder} (expected files: {', '.join(files)}); {why}. "
        f"Fix: put the files there, point --data-root / $CLBENCH_DATA at the folder that holds "
        f"'{folder.split('/')[0]}', or run online without CLBENCH_OFFLINE so torchvision downloads it."
    )


def _corrupt(path: Path, problem: str) -> UserError:
    return UserError(
        f"dataset file {path} is corrupt: {problem}. Fix: delete it and rerun online (without CLBENCH_OFFLINE) so "
        f"torchvision downloads it again, or copy an intact copy of it there."
    )


def _idx_problem(path: Path) -> tuple[str | None, int]:
    """Check an idx (MNIST-format) file's header against its size: (problem or None, first dimension)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] or head[1] or head[2] != 0x08 or not 1 <= head[3] <= 4:
            return f"not an idx ubyte file (header bytes {head.hex() or 'missing'})", 0
        raw = f.read(4 * head[3])
    if len(raw) < 4 * head[3]:
        return "the header is cut off", 0
    dims = struct.unpack(f">{head[3]}I", raw)
    expected = 4 + 4 * head[3] + math.prod(dims)
    if size != expected:
        shape = "x".join(map(str, dims))
        return f"its header announces {shape} values ({expected} bytes) but it has {size} bytes (truncated or damaged)", 0
    return None, dims[0]


def _check_idx_files(key: str, root: Path) -> None:
    """Refuse truncated or damaged MNIST-format files with a message naming the file (torchvision would not)."""
    folder, files = _EXPECTED[key]
    paths = [root / folder / f for f in files]
    if not all(p.is_file() for p in paths):
        return  # missing files: the usual not-found / download path
    counts = {}
    for p in paths:
        problem, n = _idx_problem(p)
        if problem:
            raise _corrupt(p, problem)
        counts[p.name] = n
    for images, labels in (paths[0:2], paths[2:4]):
        if counts[images.name] != counts[labels.name]:
            raise _corrupt(labels, f"it has {counts[labels.name]} labels for the {counts[images.name]} images of {images.name}")


def _torchvision(key: str, cls: Callable, root: Path, download: bool, probe_url: str):
    """Instantiate a torchvision dataset for train and test, downloading only when reachable."""
    if key in ("mnist", "fmnist"):
        _check_idx_files(key, root)
    try:
        return cls(root=str(root), train=True, download=False), cls(root=str(root), train=False, download=False)
    except RuntimeError:
        pass  # not on disk (or corrupt: torchvision checks integrity)
    if not download or offline():
        raise _missing(key, root, "downloads are disabled (CLBENCH_OFFLINE or download: false)")
    if not _host_reachable(probe_url):
        raise _missing(key, root, f"the download host {urlparse(probe_url).hostname} cannot be reached (offline?)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        return cls(root=str(root), train=True, download=True), cls(root=str(root), train=False, download=True)
    except Exception as exc:  # network errors of every kind
        raise _missing(key, root, f"download failed: {exc}") from None


def _mnist_like(key: str, root: Path, download: bool) -> DatasetPair:
    from torchvision import datasets

    cls = datasets.MNIST if key == "mnist" else datasets.FashionMNIST
    tr, te = _torchvision(key, cls, root, download, cls.mirrors[0] if hasattr(cls, "mirrors") else "https://ossci-datasets.s3.amazonaws.com")
    return (
        TensorData(tr.data.unsqueeze(1).contiguous(), tr.targets.clone()),
        TensorData(te.data.unsqueeze(1).contiguous(), te.targets.clone()),
    )


def mnist(root: Path, download: bool = True) -> DatasetPair:
    """MNIST, 60k/10k 1x28x28 (torchvision layout ``<root>/MNIST/raw``)."""
    return _mnist_like("mnist", root, download)


def fmnist(root: Path, download: bool = True) -> DatasetPair:
    """Fashion-MNIST, 60k/10k 1x28x28 (torchvision layout ``<root>/FashionMNIST/raw``)."""
    return _mnist_like("fmnist", root, download)


_CIFAR_FILES = {
    # key: (folder, train files, test file, label key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels"),
}


def _read_cifar_batch(file: Path, label_key: bytes) -> TensorData:
    """One CIFAR python pickle (``{b'data': uint8 (N, 3072), label_key: [N ints], ...}``)."""
    import pickle

    try:
        with open(file, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ValueError(f"data has shape {data.shape} and {len(labels)} labels; expected (N, 3072) and N")
    except Exception as exc:  # truncated, not a pickle, wrong keys
        raise UserError(f"{file} is not a valid CIFAR batch ({type(exc).__name__}: {exc}); fix: delete the folder {file.parent} and download it again") from None
    return TensorData(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels))


def _cifar_pickles(key: str, root: Path, download: bool) -> DatasetPair:
    """Read the canonical CIFAR python pickles; download them through torchvision when missing.

    The pickles are read by clbench (structure checked, one clear error naming a corrupt file);
    torchvision only downloads and verifies the archive's checksum.
    """
    folder, train_files, test_file, label_key = _CIFAR_FILES[key]
    base = root / folder
    files = [base / f for f in [*train_files, test_file]]
    if not all(f.exists() for f in files):
        if not download or offline():
            raise _missing(key, root, "downloads are disabled (CLBENCH_OFFLINE or download: false)")
        from torchvision import datasets

        cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
        _torchvision(key, cls, root, download, cls.url)
    train = TensorData.concat([_read_cifar_batch(base / f, label_key) for f in train_files])
    return train, _read_cifar_batch(base / test_file, label_key)


def cifar10(root: Path, download: bool = True) -> DatasetPair:
    """CIFAR-10 50k/10k 3x32x32: the canonical pickles, or an image-folder copy.

    Looks under ``root`` for ``cifar-10-batches-py`` (torchvision), then for ``cifar10-jpeg.tar`` or a
    folder ``cifar10-jpeg/`` (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), then downloads.
    """
    if not (root / "cifar-10-batches-py").exists():
        for cand in (root / "cifar10-jpeg.tar", root / "cifar10-jpeg"):
            if cand.exists():
                return image_folder(cand)
    return _cifar_pickles("cifar10", root, download)


def cifar100(root: Path, download: bool = True) -> DatasetPair:
    """CIFAR-100 50k/10k 3x32x32 from the canonical python pickles (torchvision ``cifar-100-python``)."""
    return _cifar_pickles("cifar100", root, download)


def digits(root: Path | None = None, download: bool = False) -> DatasetPair:
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

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _folder_members(path: Path) -> list[tuple[str, str, str, Callable[[], bytes]]]:
    """List ``(split, class, file name, read)`` entries, sorted by split, class and file name."""
    entries: list[tuple[str, str, str, Callable[[], bytes]]] = []
    if path.is_dir():
        for f in path.rglob("*"):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                parts = f.relative_to(path).parts
                if len(parts) >= 3:
                    entries.append((parts[-3], parts[-2], str(f), f.read_bytes))
    else:
        try:
            tar = tarfile.open(path)
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"cannot read {path} as a tar archive ({exc}); fix: replace the file with an intact copy") from None
        for m in tar.getmembers():
            if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                parts = Path(m.name).parts
                if len(parts) >= 3:
                    # bind the TarInfo itself: extractfile(name) would scan the member list each time
                    entries.append((parts[-3], parts[-2], m.name, lambda m=m: tar.extractfile(m).read()))  # type: ignore[union-attr]
    entries.sort(key=lambda e: e[:3])
    return entries


def _decode(source: Path, name: str, read: Callable[[], bytes]) -> np.ndarray:
    """One image as uint8 (H, W, 3); a damaged file is one error naming it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(read())) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several types for damaged data
        raise UserError(f"cannot decode image {name} in {source} ({type(exc).__name__}: {exc}); fix: replace or remove that file") from None


def image_folder(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> DatasetPair:
    """Read ``split/class/*.jpg`` from a directory or a ``.tar``: splits ``train`` and ``test``.

    Class indices follow the sorted class-folder names. Images are decoded once and the uint8 tensors
    are cached (keyed by the source's size and modification time) in the clbench cache folder.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"image folder {path} does not exist; fix: give the path of a folder or .tar holding train/<class>/*.jpg and test/<class>/*.jpg")
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|v2".encode()).hexdigest()[:16]
    cache = Path(cache_root(cache_dir)) / "decoded" / f"{path.stem}-{key}.pt"
    from clbench.protocols.store import CorruptFile, atomic_save_checked, load_checked  # store is a leaf module

    if cache.exists():
        try:
            blob = load_checked(cache)  # SHA-256 checked: truncation and flipped bits are both caught
            return TensorData(blob["train_x"], blob["train_y"]), TensorData(blob["test_x"], blob["test_y"])
        except (CorruptFile, KeyError, TypeError, ValueError) as exc:
            warnings.warn(f"decoded-image cache {cache} is damaged ({exc}); rebuilding it from {path}", stacklevel=2)
            cache.unlink(missing_ok=True)
    entries = _folder_members(path)
    splits = {e[0] for e in entries}
    if not {"train", "test"} <= splits:
        raise UserError(f"{path} must hold train/<class>/*.jpg and test/<class>/*.jpg; found top folders: {sorted(splits) or 'none'}")
    classes = sorted({e[1] for e in entries})
    cidx = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in ("train", "test"):
        members = [(c, name, read) for s, c, name, read in entries if s == split]
        decoded = [_decode(path, name, read) for _, name, read in members]
        shapes = {im.shape for im in decoded}
        if len(shapes) > 1:
            raise UserError(f"images in {path}/{split} have different sizes {sorted(shapes)[:3]}; fix: resize them to one size first")
        imgs = np.stack(decoded)
        out[f"{split}_x"] = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
        out[f"{split}_y"] = torch.tensor([cidx[c] for c, _, _ in members], dtype=torch.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_checked(out, cache)
    return TensorData(out["train_x"], out["train_y"]), TensorData(out["test_x"], out["test_y"])


SOURCES: dict[str, Callable[..., DatasetPair]] = {
    "mnist": mnist,
    "fmnist": fmnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "digits": digits,
}
