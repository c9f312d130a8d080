"""Image-folder benchmarks on small synthetic trees written here in the exact published layouts.

Every image is a solid colour that encodes where it came from (class, split, session), so the tests check
each sample's label and split against the file it was decoded from, not against earlier output. The
layouts' published sizes cannot be met by small trees: the real layouts are shown to refuse them with the
published numbers in the message, and the streams are built through copies whose sizes are the small ones
(as tests/benchmarks/test_datasets.py does for CIFAR-100).
"""

import io
import pickle
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clbench.benchmarks import datasets, imagefolders
from clbench.benchmarks.imagefolders import (CORE50, CUB200_OFFICIAL, IMAGENET_R, field_order, read_tree,
                                             split_image_folder, tree_members)
from clbench.benchmarks.registry import build_stream, entry_problems
from clbench.benchmarks.sources import CIFAR100, SOURCES
from clbench.errors import DataError, UserError
from clbench.protocols.config import parse_config

WNIDS = [f"n{1440000 + 37 * k:08d}" for k in range(200)]  # 200 synthetic WordNet-style class folders


def png(rgb, size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, tuple(int(v) for v in rgb)).save(buf, format="PNG")
    return buf.getvalue()


def write(root: Path, files: dict) -> Path:
    for rel, data in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    return root


def tar_of(folder: Path, out: Path, mode: str = "w") -> Path:
    with tarfile.open(out, mode) as t:
        t.add(folder, arcname=folder.name)
    return out


def cached_files(cache: Path) -> list[Path]:
    return sorted((cache / "decoded").glob("*")) if (cache / "decoded").exists() else []


def red_to_label(data) -> torch.Tensor:
    return data.x[:, 0, 0, 0].long()


# ---------------------------------------------------------------- resizing, class order

def test_crop_pct_equals_torchvision_resize_then_center_crop():
    from torchvision import transforms

    rng = np.random.default_rng(0)
    for w, h in ((300, 200), (180, 260), (64, 64)):
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        ours = datasets.decode_image(Path("x"), "x.png", buf.getvalue, (224, 224), 0.875)
        ref = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                                  transforms.CenterCrop(224)])(Image.fromarray(arr))
        assert ours.shape == (224, 224, 3)
        assert np.array_equal(ours, np.asarray(ref))
        # crop_pct 1: shorter side to the size, then the centre square
        ours1 = datasets.decode_image(Path("x"), "x.png", buf.getvalue, (32, 32), 1.0)
        ref1 = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                   transforms.CenterCrop(32)])(Image.fromarray(arr))
        assert np.array_equal(ours1, np.asarray(ref1))


def test_field_order_is_the_published_pycil_order():
    order = field_order(100)
    # the CIFAR-100 order of iCaRL/PyCIL/RanPAC runs (seed 1993), as printed in many repositories
    assert order[:10] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]
    assert sorted(order) == list(range(100))
    assert sorted(field_order(200)) == list(range(200))


def _write_cifar100(root: Path, per_class_train=2, per_class_test=1):
    """cifar-100-python pickles (the canonical format) with every class; pixel 0 holds the class."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, k in (("train", per_class_train), ("test", per_class_test)):
        fine = [c for c in range(100) for _ in range(k)]
        data = np.zeros((len(fine), 3072), dtype=np.uint8)
        data[:, 0] = fine
        with open(folder / name, "wb") as f:
            pickle.dump({b"fine_labels": fine, b"coarse_labels": [c // 5 for c in fine], b"data": data,
                         b"filenames": [b"x"] * len(fine), b"batch_label": name.encode()}, f)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": []}))


@pytest.mark.parametrize("name,sizes", [("cifar100_b0inc10", [10] * 10), ("cifar100_b50inc10", [50] + [10] * 5),
                                        ("cifar100_b0inc5", [5] * 20)])
def test_cifar100_settings_follow_the_field_order(tmp_path, monkeypatch, name, sizes):
    _write_cifar100(tmp_path)
    monkeypatch.setattr(imagefolders, "CIFAR100", replace(CIFAR100, split_sizes={}, class_counts={}, checksums={}))
    order = field_order(100)
    for seed in (0, 5):  # the field's order does not depend on the cell seed
        s = build_stream({"name": name}, seed, tmp_path)
        assert [len(e.classes) for e in s] == sizes
        assert [c for e in s for c in e.classes] == order
        for e in s:
            assert set(red_to_label(e.train).tolist()) == set(e.classes) and len(e.train) == 2 * len(e.classes)
            assert torch.equal(red_to_label(e.test).sort().values, torch.tensor(sorted(e.classes)))
    natural = build_stream({"name": name, "order": "natural"}, 0, tmp_path)
    assert [c for e in natural for c in e.classes] == list(range(100))
    by_seed = [[c for e in build_stream({"name": name, "order": "seed"}, s, tmp_path) for c in e.classes] for s in (1, 1, 2)]
    assert by_seed[0] == by_seed[1] != by_seed[2]


def test_cifar100_settings_refuse_the_small_files_by_canonical_counts(tmp_path):
    _write_cifar100(tmp_path)
    with pytest.raises(DataError, match="corrupt"):  # MD5 of the canonical pickle differs
        build_stream({"name": "cifar100_b0inc10"}, 0, tmp_path)


# ---------------------------------------------------------------- the generic benchmark

def _generic_tree(root: Path, classes=("cat", "dog", "eel", "fox")):
    files = {}
    for k, c in enumerate(classes):
        for split, n in (("train", 3), ("test", 2)):
            for j in range(n):
                size = (8 + j, 6 + 2 * j)  # images of different sizes: the benchmark resizes them
                files[f"{split}/{c}/{c}_{j}.png"] = png((k * 10, 1 if split == "train" else 2, j), size)
    return write(root, files)


@pytest.mark.parametrize("as_tar", [False, True])
def test_split_image_folder_train_test_folders(tmp_path, as_tar):
    tree = _generic_tree(tmp_path / "pets")
    path = tar_of(tree, tmp_path / "pets.tar") if as_tar else tree
    s = build_stream({"name": "split_image_folder", "path": str(path), "size": 16, "n_experiences": 2,
                      "class_order": [3, 1, 0, 2]}, 0, tmp_path / "root")
    assert [e.classes for e in s] == [(3, 1), (0, 2)]
    for e in s:
        assert e.train.x.shape[1:] == (3, 16, 16) and e.train.x.dtype == torch.uint8
        # labels index the sorted class folders (cat, dog, eel, fox): red channel = 10 * label
        assert torch.equal(red_to_label(e.train), 10 * e.train.y) and torch.equal(red_to_label(e.test), 10 * e.test.y)
        assert set(e.train.x[:, 1, 0, 0].tolist()) == {1} and set(e.test.x[:, 1, 0, 0].tolist()) == {2}
        assert len(e.train) == 6 and len(e.test) == 4
    assert s.params["source"]["n_classes"] == 4
    again = build_stream({"name": "split_image_folder", "path": str(path), "size": 16, "n_experiences": 2,
                          "class_order": [3, 1, 0, 2]}, 0, tmp_path / "root")
    assert torch.equal(again[0].train.x, s[0].train.x) and len(cached_files(tmp_path / "cache")) == 1


def test_split_image_folder_relative_path_seed_order_and_renamed_folders(tmp_path):
    root = tmp_path / "root"
    tree = _generic_tree(root / "pets")
    (tree / "test").rename(tree / "val")
    entry = {"name": "split_image_folder", "path": "pets", "test_folder": "val", "size": 8, "n_experiences": 4}
    orders = [[c for e in build_stream(entry, seed, root) for c in e.classes] for seed in (3, 3, 4, 9)]
    assert orders[0] == orders[1] and sorted(orders[0]) == [0, 1, 2, 3]
    assert orders[2] != orders[0] or orders[3] != orders[0]  # drawn from the seed


def test_split_image_folder_needs_size_for_mixed_sizes(tmp_path):
    tree = _generic_tree(tmp_path / "pets")
    with pytest.raises(UserError, match="different sizes.*give size"):
        build_stream({"name": "split_image_folder", "path": str(tree), "n_experiences": 2}, 0, tmp_path)
    assert cached_files(tmp_path / "cache") == []


@pytest.mark.parametrize("as_tar", [False, True])
def test_split_image_folder_with_a_split_file(tmp_path, as_tar):
    files, lines = {}, ["# relative path, split"]
    for k, c in enumerate(("ant", "bee", "cow")):
        for j in range(5):
            split = "test" if j % 3 == 0 else "train"
            files[f"{c}/img {j}.png"] = png((k * 10, 1 if split == "train" else 2, j))
            lines.append(f"{c}/img {j}.png {split}")
    files["cow/not_listed.png"] = png((250, 250, 250))  # not in the split file: ignored
    tree = write(tmp_path / "zoo", files)
    (tmp_path / "split.txt").write_text("\n".join(lines) + "\n")
    path = tar_of(tree, tmp_path / "zoo.tar.gz", "w:gz") if as_tar else tree
    s = build_stream({"name": "split_image_folder", "path": str(path), "split_file": str(tmp_path / "split.txt"),
                      "n_experiences": 3, "shuffle_classes": False}, 0, tmp_path)
    assert [e.classes for e in s] == [(0,), (1,), (2,)]
    for e in s:
        assert len(e.train) == 3 and len(e.test) == 2
        assert set(e.train.x[:, 1, 0, 0].tolist()) == {1} and set(e.test.x[:, 1, 0, 0].tolist()) == {2}
        assert torch.equal(red_to_label(e.train), 10 * e.train.y)


def test_split_file_naming_a_missing_image_caches_nothing(tmp_path):
    write(tmp_path / "zoo", {"ant/a.png": png((0, 0, 0)), "bee/b.png": png((0, 0, 0))})
    (tmp_path / "split.txt").write_text("ant/a.png train\nbee/b.png test\nbee/gone.png train\n")
    with pytest.raises(DataError, match="1 image.*missing, e.g. bee/gone.png"):
        split_image_folder(0, tmp_path, path=str(tmp_path / "zoo"), split_file=str(tmp_path / "split.txt"),
                           n_experiences=1)
    (tmp_path / "bad.txt").write_text("ant/a.png validation\n")
    with pytest.raises(UserError, match="line 1: expected '<relative image path> <train|test>'"):
        split_image_folder(0, tmp_path, path=str(tmp_path / "zoo"), split_file=str(tmp_path / "bad.txt"),
                           n_experiences=1)
    assert cached_files(tmp_path / "cache") == []


def test_generic_missing_class_and_wrong_class_count_cache_nothing(tmp_path):
    tree = _generic_tree(tmp_path / "pets")
    for f in (tree / "test" / "eel").iterdir():
        f.unlink()
    (tree / "test" / "eel").rmdir()
    with pytest.raises(DataError, match="split test has no image of class\\(es\\) eel.*nothing was decoded or cached"):
        build_stream({"name": "split_image_folder", "path": str(tree), "size": 8, "n_experiences": 1}, 0, tmp_path)
    tree2 = _generic_tree(tmp_path / "pets2")
    with pytest.raises(DataError, match="it has 4 classes, expected n_classes=5"):
        build_stream({"name": "split_image_folder", "path": str(tree2), "size": 8, "n_classes": 5,
                      "n_experiences": 5}, 0, tmp_path)
    assert cached_files(tmp_path / "cache") == []


def test_missing_folder_is_one_error(tmp_path):
    with pytest.raises(DataError, match=f"image folder {tmp_path / 'nope'} does not exist"):
        build_stream({"name": "split_image_folder", "path": "nope", "n_experiences": 1}, 0, tmp_path)


# ---------------------------------------------------------------- truncated and damaged archives

def _three_member_tar(tmp_path) -> Path:
    tree = _generic_tree(tmp_path / "pets")
    return tar_of(tree, tmp_path / "pets.tar")


def test_tar_cut_inside_a_member_caches_nothing(tmp_path):
    path = _three_member_tar(tmp_path)
    with tarfile.open(path) as t:
        last = t.getmembers()[-1]
    raw = path.read_bytes()
    path.write_bytes(raw[: last.offset_data + last.size // 2])
    with pytest.raises(DataError, match="pets.tar"):
        build_stream({"name": "split_image_folder", "path": str(path), "size": 8, "n_experiences": 1}, 0, tmp_path)
    assert cached_files(tmp_path / "cache") == []


def test_tar_cut_at_a_member_boundary_is_detected(tmp_path):
    path = _three_member_tar(tmp_path)
    with tarfile.open(path) as t:
        members = [m for m in t.getmembers() if m.isfile()]
    cut = members[-2]  # drop the last image and the end-of-archive blocks: tarfile alone sees a smaller archive
    raw = path.read_bytes()
    path.write_bytes(raw[: cut.offset_data + (-(-cut.size // 512)) * 512])
    with tarfile.open(path) as t:
        assert len([m for m in t.getmembers() if m.isfile()]) == len(members) - 1  # what tarfile reports
    with pytest.raises(DataError, match="end-of-archive.*truncated"):
        tree_members(path)
    with pytest.raises(DataError, match="truncated"):
        build_stream({"name": "split_image_folder", "path": str(path), "size": 8, "n_experiences": 1}, 0, tmp_path)
    assert cached_files(tmp_path / "cache") == []


def test_truncated_tar_gz_caches_nothing(tmp_path):
    tree = _generic_tree(tmp_path / "pets")
    path = tar_of(tree, tmp_path / "pets.tar.gz", "w:gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(DataError, match="pets.tar.gz"):
        build_stream({"name": "split_image_folder", "path": str(path), "size": 8, "n_experiences": 1}, 0, tmp_path)
    assert cached_files(tmp_path / "cache") == []


def test_damaged_image_is_named_and_nothing_cached(tmp_path):
    tree = _generic_tree(tmp_path / "pets")
    (tree / "train" / "dog" / "dog_1.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="dog_1.png"):
        build_stream({"name": "split_image_folder", "path": str(tree), "size": 8, "n_experiences": 1}, 0, tmp_path)
    assert cached_files(tmp_path / "cache") == []


# ---------------------------------------------------------------- ImageNet-R / ImageNet-A / CUB (APER train/test folders)

def _aper_tree(root: Path, folder: str, classes=WNIDS, drop=None, drop_test_only=None) -> Path:
    files = {}
    for k, c in enumerate(classes):
        if c == drop:
            continue
        for split, n in (("train", 2), ("test", 1)):
            if split == "test" and c == drop_test_only:
                continue
            for j in range(n):
                files[f"{folder}/{split}/{c}/{split}_{j}.jpg" if j else f"{folder}/{split}/{c}/{split}_{j}.png"] = (
                    png((k, 1 if split == "train" else 2, 0)) if not j else _jpeg((k, 1 if split == "train" else 2, 0)))
    return write(root, files)


def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (10, 7), tuple(rgb)).save(buf, format="JPEG", quality=100)
    return buf.getvalue()


SMALL_R = replace(IMAGENET_R, split_sizes={"train": 400, "test": 200}, total=600)


def test_imagenet_r_layout_stream_in_the_field_order(tmp_path, monkeypatch):
    _aper_tree(tmp_path, "imagenet-r")
    with pytest.raises(DataError, match="split train has 400 images, the published split has 24000"):
        IMAGENET_R.load(tmp_path, size=8)
    spec_build = imagefolders.layout_split_builder(SMALL_R, "imagenet_r")
    s = spec_build(0, tmp_path, size=16)
    order = field_order(200)
    assert len(s) == 10 and [c for e in s for c in e.classes] == order
    e = s[3]
    assert e.train.x.shape[1:] == (3, 16, 16) and len(e.train) == 40 and len(e.test) == 20
    # labels index the sorted wnids; the red channel carries the class (JPEG: within a few levels)
    assert (red_to_label(e.train) - e.train.y).abs().max() <= 2 and (red_to_label(e.test) - e.test.y).abs().max() <= 2
    assert set(e.train.y.tolist()) == set(order[60:80])
    assert s.params["size"] == 16 and s.params["crop_pct"] == 0.875


def test_imagenet_r_missing_class_and_missing_split_name_what_is_missing(tmp_path):
    _aper_tree(tmp_path / "a", "imagenet-r", drop=WNIDS[17])
    with pytest.raises(DataError) as err:
        SMALL_R.load(tmp_path / "a", size=8)
    msg = str(err.value)
    assert "it has 199 classes, expected 200" in msg and "split train has 398 images" in msg
    assert "nothing was decoded or cached" in msg and "RevisitingCIL" in msg
    _aper_tree(tmp_path / "b", "imagenet-r", drop_test_only=WNIDS[5])
    with pytest.raises(DataError, match=f"split test has no image of class\\(es\\) {WNIDS[5]}"):
        SMALL_R.load(tmp_path / "b", size=8)
    assert cached_files(tmp_path / "cache") == []


def test_original_imagenet_r_without_split_says_so(tmp_path):
    write(tmp_path, {f"imagenet-r/{c}/art_0.png": png((0, 0, 0)) for c in WNIDS[:3]})
    with pytest.raises(DataError, match="no image.*fits the expected layout.*has no train/test split.*imagenet-r.zip"):
        IMAGENET_R.load(tmp_path, size=8)


@pytest.mark.parametrize("name,folder", [("imagenet_r", "imagenet-r"), ("imagenet_a", "imagenet-a"), ("cub200", "cub"),
                                         ("cub200_official", "CUB_200_2011"), ("core50_ni", "core50_128x128"),
                                         ("core50_nc", "core50_128x128")])
def test_missing_dataset_names_the_folder_and_where_to_get_it(tmp_path, name, folder):
    src = SOURCES[{"core50_ni": "core50", "core50_nc": "core50"}.get(name, name)]
    problem = src.problem(tmp_path, download=True)
    assert isinstance(problem, DataError) and str(tmp_path / folder) in str(problem)
    assert "cannot be downloaded automatically" in str(problem) and "http" in str(problem)
    with pytest.raises(DataError, match=folder):
        build_stream({"name": name}, 0, tmp_path)


def test_imagenet_a_and_cub_refuse_small_trees_with_the_published_sizes(tmp_path):
    _aper_tree(tmp_path, "imagenet-a")
    with pytest.raises(DataError, match="split train has 400 images, the published split has 5981.*test has 200 images, "
                                        "the published split has 1519.*7500"):
        build_stream({"name": "imagenet_a", "size": 8}, 0, tmp_path)
    _aper_tree(tmp_path, "cub", classes=[f"{k + 1:03d}.Bird_{k}" for k in range(200)])
    with pytest.raises(DataError, match="published split has 9430"):
        build_stream({"name": "cub200", "size": 8}, 0, tmp_path)


# ---------------------------------------------------------------- CUB-200-2011 with its own split files

def _cub_official(root: Path, missing=None) -> Path:
    folder = root / "CUB_200_2011"
    images, split, n = [], [], 0
    for k in range(200):
        cls = f"{k + 1:03d}.Bird_{k}"
        for j in range(2):
            n += 1
            rel = f"{cls}/Bird_{k}_{j}.jpg"
            images.append(f"{n} {rel}")
            split.append(f"{n} {1 - j}")  # first image of each class trains, the second tests
            if rel != missing:
                write(folder / "images", {rel: _jpeg((k, 200 if j == 0 else 50, 0))})
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return folder


@pytest.mark.parametrize("as_tgz", [False, True])
def test_cub_official_split_files(tmp_path, monkeypatch, as_tgz):
    folder = _cub_official(tmp_path / "data")
    root = tmp_path / "data"
    if as_tgz:
        tar_of(folder, root / "CUB_200_2011.tgz", "w:gz")
        import shutil

        shutil.rmtree(folder)
    with pytest.raises(DataError, match="split train has 200 images, the published split has 5994"):
        CUB200_OFFICIAL.load(root, size=8)
    small = replace(CUB200_OFFICIAL, split_sizes={"train": 200, "test": 200}, total=400)
    data, _ = small.load(root, size=8)
    assert len(data.train) == 200 and len(data.test) == 200
    assert (data.train.x[:, 1, 0, 0].int() - 200).abs().max() <= 3 and (data.test.x[:, 1, 0, 0].int() - 50).abs().max() <= 3
    assert (red_to_label(data.train) - data.train.y).abs().max() <= 2
    assert data.class_names[0] == "001.Bird_0" and data.class_names[-1] == "200.Bird_199"


def test_cub_official_missing_listed_image_is_named(tmp_path):
    _cub_official(tmp_path, missing="007.Bird_6/Bird_6_1.jpg")
    with pytest.raises(DataError, match="1 image.*listed in images.txt are missing.*007.Bird_6/Bird_6_1.jpg"):
        CUB200_OFFICIAL.load(tmp_path, size=8)


# ---------------------------------------------------------------- CORe50

def _core50(root: Path, skip=None) -> Path:
    files = {}
    for si in range(1, 12):
        for oi in range(1, 51):
            if (f"s{si}", f"o{oi}") == skip:
                continue
            for f in range(2):
                files[f"core50_128x128/s{si}/o{oi}/C_{si:02d}_{oi:02d}_{f:03d}.png"] = png((si * 20, oi * 5, f), (8, 8))
    return write(root, files)


SMALL_CORE50 = replace(CORE50, total=1100)


def test_core50_ni_sessions_as_experiences(tmp_path, monkeypatch):
    _core50(tmp_path)
    with pytest.raises(DataError, match="1100 images in all, the published dataset has 164866"):
        build_stream({"name": "core50_ni"}, 0, tmp_path)
    monkeypatch.setattr(imagefolders, "CORE50", SMALL_CORE50)
    s = build_stream({"name": "core50_ni", "size": 8}, 0, tmp_path)
    assert s.scenario == "domain-il" and len(s) == 8
    assert [e.info["session"] for e in s] == ["s1", "s2", "s4", "s5", "s6", "s8", "s9", "s11"]
    for e in s:
        session = int(e.info["session"][1:])
        assert set(e.train.x[:, 0, 0, 0].tolist()) == {session * 20} and len(e.train) == 100
        assert torch.equal(e.train.x[:, 1, 0, 0].long(), 5 * (e.train.y + 1))  # object number = label + 1
        assert e.test is s[0].test and len(e.test) == 300
        assert set(e.test.x[:, 0, 0, 0].tolist()) == {60, 140, 200}  # sessions 3, 7, 10
        assert e.classes == tuple(range(50))
    shuffled = build_stream({"name": "core50_ni", "size": 8, "shuffle_sessions": True}, 3, tmp_path)
    assert sorted(e.info["session"] for e in shuffled) == sorted(e.info["session"] for e in s)


def test_core50_nc_classes_in_ten_then_fives(tmp_path, monkeypatch):
    _core50(tmp_path)
    monkeypatch.setattr(imagefolders, "CORE50", SMALL_CORE50)
    s = build_stream({"name": "core50_nc", "size": 8}, 1, tmp_path)
    assert s.scenario == "class-il" and [len(e.classes) for e in s] == [10] + [5] * 8
    assert sorted(c for e in s for c in e.classes) == list(range(50))
    for e in s:
        assert set(e.train.y.tolist()) == set(e.classes) and len(e.train) == 16 * len(e.classes)
        assert set(e.test.x[:, 0, 0, 0].tolist()) == {60, 140, 200} and len(e.test) == 6 * len(e.classes)
    other = build_stream({"name": "core50_nc", "size": 8}, 2, tmp_path)
    assert [e.classes for e in other] != [e.classes for e in s]
    five = build_stream({"name": "core50_nc", "size": 8, "n_experiences": 5, "order": "natural"}, 2, tmp_path)
    assert [e.classes for e in five] == [tuple(range(10 * i, 10 * i + 10)) for i in range(5)]


def test_core50_missing_object_in_a_session_is_named(tmp_path, monkeypatch):
    _core50(tmp_path, skip=("s4", "o7"))
    monkeypatch.setattr(imagefolders, "CORE50", replace(CORE50, total=1098))
    with pytest.raises(DataError, match="no image in s4/o7"):
        build_stream({"name": "core50_ni", "size": 8}, 0, tmp_path)
    assert cached_files(tmp_path / "cache") == []


# ---------------------------------------------------------------- parameters refused before any data is read

def test_bad_parameters_are_refused_by_the_config_layer(tmp_path):
    assert entry_problems({"name": "split_image_folder"}) == ["benchmark 'split_image_folder' needs path"]
    assert "crop_pct needs size" in entry_problems({"name": "split_image_folder", "path": "x", "crop_pct": 0.9})[0]
    assert "size must be an integer >= 8" in entry_problems({"name": "imagenet_r", "size": 4})[0]
    assert "crop_pct must be" in entry_problems({"name": "imagenet_r", "crop_pct": 1.5})[0]
    assert "200 classes do not split into 7" in entry_problems({"name": "imagenet_r", "n_experiences": 7})[0]
    assert "permutation" in entry_problems({"name": "cifar100_b0inc10", "class_order": [0, 1]})[0]
    assert "order must be one of" in entry_problems({"name": "cifar100_b50inc10", "order": "random"})[0]
    assert "no parameter(s) ['base']" in entry_problems({"name": "cifar100_b0inc10", "base": 50})[0]
    assert "divide the 40 classes" in entry_problems({"name": "core50_nc", "base": 10, "increment": 7})[0]
    assert entry_problems({"name": "core50_nc", "n_experiences": 5}) == []  # 5 x 10 instead of the official 10 + 8 x 5
    assert "50 classes do not split into 3" in entry_problems({"name": "core50_nc", "n_experiences": 3})[0]
    with pytest.raises(UserError, match="(?s)size must be an integer >= 8.*n_experiences must be"):
        parse_config({"benchmarks": [{"name": "imagenet_r", "size": 2}, {"name": "core50_nc", "n_experiences": 0}],
                      "strategies": [{"name": "nmc"}], "seeds": [0]}, default_name="t")
