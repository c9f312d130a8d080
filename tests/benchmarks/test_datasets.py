"""Dataset sources on real files: MNIST from the shared data, CIFAR pickles and image folders written here.

CIFAR-100 and other datasets not available offline are tested on small files written here in the exact
on-disk format, read through a source whose canonical sizes and checksums are cleared (the real source
refuses such files, which is tested too).
"""

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from dataclasses import replace

from clbench.benchmarks import datasets
from clbench.benchmarks.sources import CIFAR100, SOURCES
from clbench.errors import DataError, UserError

SMALL_CIFAR100 = replace(CIFAR100, split_sizes={}, class_counts={}, checksums={})

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_from_shared_data(data_root):
    data = SOURCES["mnist"].load(data_root, download=False)
    train, test = data.train, data.test
    assert len(train) == 60000 and len(test) == 10000
    assert train.x.dtype == torch.uint8 and train.sample_shape == (1, 28, 28)
    assert train.y.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert test.y.bincount().tolist() == MNIST_TEST_COUNTS


def test_fmnist_from_shared_data(data_root):
    data = SOURCES["fmnist"].load(data_root, download=False)
    train, test = data.train, data.test
    assert len(train) == 60000 and len(test) == 10000
    assert train.y.bincount().tolist() == [6000] * 10 and test.y.bincount().tolist() == [1000] * 10


def _write_cifar100(root, n_train=30, n_test=10, seed=0):
    """Files in the exact on-disk format of cifar-100-python (python pickles of dicts with bytes keys)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = (rng.permutation(n) % 100).tolist()
        d = {b"filenames": [f"img{i}.png".encode() for i in range(n)], b"batch_label": name.encode(),
             b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
        out[name] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []}, f)
    return out


def test_cifar100_reads_the_canonical_pickle_format(tmp_path):
    written = _write_cifar100(tmp_path)
    data = SMALL_CIFAR100.load(tmp_path, download=False)
    train, test = data.train, data.test
    data, fine = written["train"]
    assert train.x.shape == (30, 3, 32, 32) and train.x.dtype == torch.uint8
    # channel-major rows: the first 1024 bytes are the red plane
    assert torch.equal(train.x[3, 0].flatten(), torch.from_numpy(data[3, :1024]))
    assert torch.equal(train.x[3, 2].flatten(), torch.from_numpy(data[3, 2048:]))
    assert train.y.tolist() == fine and test.y.tolist() == written["test"][1]


def test_cifar100_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="cifar-100-python.*expected files: train, test, meta"):
        CIFAR100.load(tmp_path, download=False)
    _write_cifar100(tmp_path)
    with pytest.raises(DataError, match="train is corrupt: its MD5"):  # not the canonical file
        CIFAR100.load(tmp_path, download=False)
    raw = (tmp_path / "cifar-100-python" / "train").read_bytes()
    (tmp_path / "cifar-100-python" / "train").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match="train"):
        SMALL_CIFAR100.load(tmp_path, download=False)


def test_cifar_batch_with_a_code_payload_is_refused_and_runs_nothing(tmp_path):
    """A pickle from the data root may hold a __reduce__ payload: the restricted unpickler refuses it."""
    _write_cifar100(tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "cifar-100-python" / "test", "wb") as f:
        pickle.dump({b"data": Payload(), b"fine_labels": [0]}, f)
    with pytest.raises(DataError, match=r"refused to load io\.open"):
        SMALL_CIFAR100.load(tmp_path, download=False)
    assert not marker.exists()


def test_split_cifar100_benchmark_on_small_files(tmp_path):
    from clbench.benchmarks.split import split_stream

    _write_cifar100(tmp_path, n_train=400, n_test=100, seed=1)
    s = split_stream("small_cifar100", SMALL_CIFAR100.load(tmp_path, download=False), seed=0, n_experiences=10)
    assert s.params["source"]["name"] == "cifar100"
    assert len(s) == 10 and s.n_classes == 100 and all(len(e.classes) == 10 for e in s)
    assert sum(len(e.train) for e in s) == 400 and all(len(e.train) == 40 for e in s)


def _jpeg(color):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("as_tar", [True, False])
def test_image_folder_from_tar_or_directory(tmp_path, as_tar):
    colors = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    src = tmp_path / "imgs"
    for split, n in (("train", 3), ("test", 2)):
        for cls, col in colors.items():
            d = src / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{i}.png").write_bytes(_jpeg(col))
    path = src
    if as_tar:
        path = tmp_path / "imgs.tar"
        with tarfile.open(path, "w") as t:
            t.add(src, arcname="imgs")
    (train, test), classes = datasets.image_folder(path, cache_dir=tmp_path / "cache")
    assert classes == ["cat", "dog"]
    assert len(train) == 6 and len(test) == 4 and train.sample_shape == (3, 32, 32)
    assert train.y.tolist() == [0, 0, 0, 1, 1, 1]  # sorted class folders: cat=0, dog=1
    assert train.x[0, 0].float().mean() == 255 and train.x[0, 2].float().mean() == 0  # red cat
    assert train.x[3, 2].float().mean() == 255  # blue dog
    assert list((tmp_path / "cache" / "decoded").glob("*.pt"))  # decoded once, cached
    (again, _), _ = datasets.image_folder(path, cache_dir=tmp_path / "cache")
    assert torch.equal(again.x, train.x)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        datasets.image_folder(tmp_path / "nope")
    (tmp_path / "flat" / "x" / "y").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "x" / "y" / "a.png")
    with pytest.raises(UserError, match="train/<class>"):
        datasets.image_folder(tmp_path / "flat")


def test_digits_is_bundled_and_fixed():
    a_train, a_test = datasets.digits()
    b_train, _ = datasets.digits()
    assert len(a_train) + len(a_test) == 1797 and torch.equal(a_train.x, b_train.x)
    assert a_train.x.dtype == torch.uint8 and int(a_train.x.max()) == 255


def test_damaged_image_is_named(tmp_path):
    for split in ("train", "test"):
        d = tmp_path / "f" / split / "cat"
        d.mkdir(parents=True)
        (d / "0.png").write_bytes(_jpeg((1, 2, 3)))
    (tmp_path / "f" / "train" / "cat" / "1.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"cannot decode image .*1\.png"):
        datasets.image_folder(tmp_path / "f", cache_dir=tmp_path / "cache")
