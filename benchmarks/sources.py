"""The table of dataset sources: what each dataset is, where its files live, how big it must be.

A :class:`DatasetSource` names a dataset (``mnist``), its classes and sample shape, the files expected
below the data root, the canonical sizes per split and per class (and checksums where they are known),
and how to read and download it. Stream builders take the loaded :class:`SourceData` and record the
source in the stream's parameters (and so in every cell record); the data of every sample keeps its
index in the source split (``origin``), which lets the tuning protocol compare two streams by content.

* :meth:`DatasetSource.problem` says, without reading the data, why a dataset cannot be loaded (files
  missing and downloads off or the host unreachable): the runner asks it for every benchmark of a matrix
  before anything runs.
* :meth:`DatasetSource.load` reads the files, checks sizes, labels and checksums, and downloads through
  torchvision for users when files are missing (offline, or when the host does not answer within a few
  seconds, one :class:`~clbench.errors.UserError` naming the folder, the files and the fix; never a hang).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from clbench.errors import DataError, UserError, unknown_name
from clbench.paths import offline
from clbench.stream import TensorData

from . import datasets
from .datasets import DatasetPair, ExpectedCounts

PROBE_TIMEOUT = 4.0


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when a TCP connection to the URL's host opens within ``timeout`` seconds."""
    host = urlparse(url).hostname or ""
    port = 443 if url.startswith("https") else 80
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class SourceData:
    """A loaded source: train and test data (``origin`` = index in the split) and the class names."""

    source: "DatasetSource"
    train: TensorData
    test: TensorData
    class_names: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The source as recorded in stream parameters and cell records."""
        return {"name": self.source.name, "title": self.source.title, "n_classes": self.source.n_classes,
                "train": len(self.train), "test": len(self.test)}


@dataclass(frozen=True)
class DatasetSource:
    """One dataset: identity, files, canonical counts and how to read/download it (see the module docstring)."""

    name: str
    title: str
    n_classes: int
    shape: tuple[int, ...]
    folder: str  # below the data root, for messages
    files: tuple[str, ...]
    read: Callable[["DatasetSource", Path, str | None], DatasetPair]  # (self, data root, cache dir); files exist
    present: Callable[[Path], bool]
    split_sizes: Mapping[str, int] = field(default_factory=dict)
    class_counts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    checksums: Mapping[str, str] = field(default_factory=dict)  # file name -> MD5 (32 hex) or SHA-256 (64 hex)
    download: Callable[[Path], None] | None = None
    download_url: str = ""
    note: str = ""

    # ---- before reading
    def _missing(self, root: Path, why: str) -> DataError:
        return DataError(
            f"dataset {self.name!r} not found under {root / self.folder} (expected files: {', '.join(self.files)}); {why}. "
            f"Fix: put the files there, point --data-root / $CLBENCH_DATA at the folder that holds "
            f"'{self.folder.split('/')[0]}'" + (", or run online without CLBENCH_OFFLINE so it is downloaded" if self.download else "")
            + (f" ({self.note})" if self.note else "") + ".")

    def problem(self, root: Path, download: bool = True) -> DataError | None:
        """Why this dataset cannot be loaded from ``root`` (None when its files are there or can be downloaded)."""
        if self.present(root):
            return None
        if self.download is None:
            return self._missing(root, "it cannot be downloaded automatically")
        if not download or offline():
            return self._missing(root, "downloads are disabled (CLBENCH_OFFLINE or download: false)")
        if not host_reachable(self.download_url):
            return self._missing(root, f"the download host {urlparse(self.download_url).hostname} cannot be reached (offline?)")
        return None

    # ---- reading
    def load(self, root: Path, download: bool = True, cache_dir: str | None = None) -> SourceData:
        """Read (downloading first if needed and allowed) and check the dataset; samples get their ``origin``."""
        problem = self.problem(root, download)
        if problem is not None:
            raise problem
        if not self.present(root):
            try:
                root.mkdir(parents=True, exist_ok=True)
                self.download(root)  # type: ignore[misc]
            except UserError:
                raise
            except Exception as exc:  # network errors of every kind
                raise self._missing(root, f"download failed: {exc}") from None
        train, test = self.read(self, root, cache_dir)
        self.check(train, test, root)
        return SourceData(self, with_origin(train), with_origin(test))

    def check(self, train: TensorData, test: TensorData, root: Path) -> None:
        """Sizes per split and per class against the canonical counts; labels in range."""
        for split, data in (("train", train), ("test", test)):
            where = root / self.folder
            if len(data) and (int(data.y.min()) < 0 or int(data.y.max()) >= self.n_classes):
                raise datasets.corrupt(where, f"{split} labels range over {int(data.y.min())}..{int(data.y.max())}, "
                                              f"outside 0..{self.n_classes - 1}")
            want = self.split_sizes.get(split)
            if want is not None and len(data) != want:
                raise datasets.corrupt(where, f"the {split} split has {len(data)} samples, expected {want}")
            counts = self.class_counts.get(split)
            if counts is not None:
                have = tuple(np.bincount(data.y.numpy(), minlength=self.n_classes).tolist())
                if have != tuple(counts):
                    raise datasets.corrupt(where, f"the {split} split holds {list(have)} samples per class, expected {list(counts)}")


def with_origin(data: TensorData) -> TensorData:
    return TensorData(data.x, data.y, torch.arange(len(data)))


# ---------------------------------------------------------------- MNIST and Fashion-MNIST

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

#: SHA-256 of the canonical uncompressed files (torchvision's MD5s are of the .gz archives)
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FMNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def _idx_source(name: str, title: str, folder: str, sha: dict[str, str], tv_class: str,
                counts: dict[str, tuple[int, ...]]) -> DatasetSource:
    def present(root: Path) -> bool:
        return all((root / folder / "raw" / f).is_file() for f in _IDX)

    def read(src: DatasetSource, root: Path, cache_dir: str | None) -> DatasetPair:
        return datasets.read_idx_pair(root / folder / "raw", _IDX, src.n_classes, src.checksums)

    def download(root: Path) -> None:
        from torchvision import datasets as tv

        cls = getattr(tv, tv_class)
        cls(root=str(root), train=True, download=True)
        cls(root=str(root), train=False, download=True)

    return DatasetSource(name, title, 10, (1, 28, 28), f"{folder}/raw", _IDX, read, present,
                         {"train": 60000, "test": 10000}, counts, sha, download,
                         "https://ossci-datasets.s3.amazonaws.com/mnist/" if name == "mnist"
                         else "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")


MNIST = _idx_source("mnist", "MNIST", "MNIST", MNIST_SHA256, "MNIST", {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)})
FMNIST = _idx_source("fmnist", "Fashion-MNIST", "FashionMNIST", FMNIST_SHA256, "FashionMNIST",
                     {"train": (6000,) * 10, "test": (1000,) * 10})


# ---------------------------------------------------------------- CIFAR

CIFAR10_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
               "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
               "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"}
CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}
CIFAR10_JPEG = ("cifar10-jpeg.tar", "cifar10-jpeg")


def _tv_download(cls_name: str) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        from torchvision import datasets as tv

        cls = getattr(tv, cls_name)
        cls(root=str(root), train=True, download=True)
        cls(root=str(root), train=False, download=True)

    return download


def _cifar10_present(root: Path) -> bool:
    pickles = all((root / "cifar-10-batches-py" / f).is_file() for f in CIFAR10_MD5)
    return pickles or any((root / c).exists() for c in CIFAR10_JPEG)


def _cifar10_read(src: DatasetSource, root: Path, cache_dir: str | None) -> DatasetPair:
    """The canonical pickles when present, else the JPEG image-folder copy (``cifar10-jpeg.tar`` or folder)."""
    base = root / "cifar-10-batches-py"
    if all((base / f).is_file() for f in CIFAR10_MD5):
        return datasets.read_cifar_pickles(base, [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels",
                                           src.checksums)
    cand = next(root / c for c in CIFAR10_JPEG if (root / c).exists())
    pair, _ = datasets.image_folder(cand, cache_dir, expected=ExpectedCounts(10, {"train": 50000, "test": 10000},
                                                                               {"train": 5000, "test": 1000}))
    return pair


CIFAR10 = DatasetSource(
    "cifar10", "CIFAR-10", 10, (3, 32, 32), "cifar-10-batches-py", tuple(CIFAR10_MD5) + ("(or cifar10-jpeg.tar)",),
    _cifar10_read, _cifar10_present, {"train": 50000, "test": 10000}, {"train": (5000,) * 10, "test": (1000,) * 10},
    CIFAR10_MD5, _tv_download("CIFAR10"), "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")


def _cifar100_read(src: DatasetSource, root: Path, cache_dir: str | None) -> DatasetPair:
    return datasets.read_cifar_pickles(root / "cifar-100-python", ["train"], "test", b"fine_labels", src.checksums)


CIFAR100 = DatasetSource(
    "cifar100", "CIFAR-100", 100, (3, 32, 32), "cifar-100-python", ("train", "test", "meta"),
    _cifar100_read, lambda root: all((root / "cifar-100-python" / f).is_file() for f in ("train", "test")),
    {"train": 50000, "test": 10000}, {"train": (500,) * 100, "test": (100,) * 100}, CIFAR100_MD5,
    _tv_download("CIFAR100"), "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")


# ---------------------------------------------------------------- digits (bundled with scikit-learn)

DIGITS = DatasetSource(
    "digits", "scikit-learn digits", 10, (1, 8, 8), "(bundled with scikit-learn)", (),
    lambda src, root, cache_dir: datasets.digits(), lambda root: True, {"train": 1257, "test": 540},
    {"train": (124, 127, 124, 128, 127, 127, 127, 125, 122, 126), "test": (54, 55, 53, 55, 54, 55, 54, 54, 52, 54)})


SOURCES: dict[str, DatasetSource] = {s.name: s for s in (DIGITS, MNIST, FMNIST, CIFAR10, CIFAR100)}


def register_source(source: DatasetSource) -> DatasetSource:
    """Add a source to the table (image-folder layouts, a user's own dataset)."""
    SOURCES[source.name] = source
    return source


def get_source(name: str) -> DatasetSource:
    if name not in SOURCES:
        raise unknown_name("dataset", name, SOURCES)
    return SOURCES[name]
