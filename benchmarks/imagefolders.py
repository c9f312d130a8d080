"""Benchmarks from image folders: any image tree as a class-incremental split, and the published layouts.

**Reading a tree.** :func:`read_tree` lists the images of a directory or a tar (``.tar``, ``.tar.gz``, ...),
gives each a split (``train``/``test``), a class and optionally a group (a CORe50 session) through a
layout's ``assign`` function, checks the counts (every class in both splits, plus the layout's published
sizes) *before* decoding anything, decodes every image once into uint8 tensors (N, 3, size, size) and caches
them (SHA-256-checked, written atomically; the key holds the file listing with sizes and modification
times, the split file's digest and the resizing). A damaged image, a truncated tar or a missing file is
one :class:`~clbench.errors.DataError` naming it, and nothing partial is ever cached. Images of a tar are
decoded in archive order (a compressed tar is read once, front to back).

**Resizing.** ``size`` stretches every image to size x size (bicubic); with ``crop_pct`` the shorter side is
resized to ``floor(size / crop_pct)`` and the centre cropped (``size=224, crop_pct=0.875`` is the official
ViT continual-learning test transform ``Resize(256, bicubic) + CenterCrop(224)``), see
:func:`clbench.benchmarks.datasets.decode_image`. Normalisation is the backbone's business.

**The generic benchmark** ``split_image_folder``: ``path`` (a folder or tar, absolute or below the data
root) holding ``<train_folder>/<class>/<image>`` and ``<test_folder>/<class>/<image>``, or any tree plus a
``split_file`` (one ``<relative path> <train|test>`` per line; the class is the image's parent folder).
Class indices follow the sorted class-folder names (torchvision ``ImageFolder``'s convention, which the
published class orders index into); the class order and experiences are those of
:func:`clbench.benchmarks.split.split_stream`.

**Published layouts** (registered as dataset sources and benchmarks; not downloadable automatically, so a
missing dataset is one error naming the folder and where to get it):

* ``cifar100_b0inc10`` / ``cifar100_b50inc10`` / ``cifar100_b0inc5``: CIFAR-100 from the canonical pickles
  (the ``cifar100`` source) in the field's fixed class order, ``np.random.seed(1993);
  np.random.permutation(100)`` (PyCIL's ``DataManager`` with ``shuffle: true, seed: 1993``, used unchanged
  by RanPAC's ``utils/data_manager.py``), split B0-Inc10 (10 x 10), B50-Inc10 (50 + 5 x 10), B0-Inc5 (20 x 5).
* ``imagenet_r`` / ``imagenet_a`` / ``cub200``: the train/test folders of the RanPAC/APER line. RanPAC's
  ``utils/data.py`` reads ``imagenet-r/{train,test}/`` (and ``imagenet-a``, ``cub``) with ``ImageFolder``;
  its paper says these (and ImageNet-R) were downloaded from the links of zhoudw-zdw/RevisitingCIL (APER),
  whose README distributes the split as zips (MD5 ``730aa3fb9c7d2ec0b6381c6b23040681`` imagenet-r.zip,
  ``7f4aaf0b1532b7a0bd670822c152d3c5`` ina.zip, ``85e342a2d5f941e740193602057df7a5`` cub.zip, issue #5).
  No code that draws the split is published (it is an 80/20 random split, seed unknown), so it cannot be
  rebuilt from the original archives: use the zips, or ``split_image_folder`` with a split file for
  another split. Their class order is the same seed-1993 permutation (RanPAC ``args/*_publish.csv``:
  ``shuffle True, seed 1993``) of the sorted class folders.
* ``cub200_official``: ``CUB_200_2011`` with its own ``images.txt`` + ``train_test_split.txt``.
* ``core50_ni`` (domain-incremental, new instances: one experience per training session s1, s2, s4, s5,
  s6, s8, s9, s11, in that order as RanPAC's ``trainer.py``; every experience holds all 50 objects and is
  tested on sessions s3, s7, s10) and ``core50_nc`` (class-incremental over the 50 objects, official NC
  default 10 + 8 x 5 classes, trained on the 8 training sessions, tested on s3, s7, s10), from the official
  ``core50_128x128/s<session>/o<object>/*.png`` tree; labels are object numbers - 1.

Counts checked (provenance): CIFAR-100 50,000/10,000 (500/100 per class); ImageNet-R 200 classes, 30,000
images in all (hendrycks/imagenet-r README); ImageNet-A 200 classes, 7,500 (TFDS catalog); CUB-200-2011
11,788 = 5,994 train + 5,794 test (TFDS catalog ``caltech_birds2011``). The APER 80/20 split sizes (ImageNet-R
24,000/6,000, ImageNet-A 5,981/1,519, CUB 9,430/2,358) are those stated in the APER paper, not found in any
code; they sum to the verified totals. CORe50: 11 sessions x 50 objects of at most 300 frames each
(vlomonaco.github.io/core50: one 15 s video at 20 fps per session and object), 164,866 images in all
(CORe50 paper).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import sys
import tarfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from clbench.constraints import AnyOf, Boolean, Interval, NoneValue, Options, String
from clbench.errors import DataError, UserError
from clbench.files import CorruptFile, atomic_save_checked, load_checked
from clbench.paths import cache_root
from clbench.stream import Experience, Stream, TensorData

from .datasets import IMAGE_SUFFIXES, decode_image
from .sources import CIFAR100, DatasetSource, SourceData, register_source, with_origin
from .split import SPLIT_CONSTRAINTS, split_problems, split_stream

TREE_CACHE_VERSION = 1
SPLITS = ("train", "test")

#: the class order of PyCIL / RanPAC / APER runs: ``np.random.seed(1993); np.random.permutation(n)``
FIELD_SEED = 1993


def field_order(n_classes: int, seed: int = FIELD_SEED) -> list[int]:
    """``np.random.seed(seed); np.random.permutation(n_classes)`` (PyCIL ``DataManager._setup_data``)."""
    return np.random.RandomState(seed).permutation(n_classes).tolist()


# ---------------------------------------------------------------- listing a tree (directory or tar)

@dataclass(frozen=True)
class TreeMember:
    """One image of a tree: its path relative to the tree root (POSIX), byte size and a reader."""

    rel: str
    size: int
    stamp: int  # modification time (ns for files, s for tar members)
    read: Callable[[], bytes]


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(6)
    return head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))


def tar_truncation(path: Path, end: int) -> str | None:
    """Why an uncompressed tar whose last member's data ends at byte ``end`` is cut off, or None.

    A tar ends with zero blocks after its last member; Python's ``tarfile`` silently stops at the end of
    the file, so a tar cut at a member boundary would otherwise read as a smaller, "complete" archive.
    """
    size = path.stat().st_size
    if size < end:
        return f"it has {size} bytes but its last member ends at byte {end} (truncated)"
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read(512)
    if len(tail) < 512 or tail.strip(b"\0"):
        return "it does not end with the tar end-of-archive blocks (truncated or damaged)"
    return None


def tree_members(path: Path) -> list[TreeMember]:
    """Every image file below a directory (sorted) or in a tar (archive order); a damaged tar is one DataError."""
    out: list[TreeMember] = []
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                st = f.stat()
                out.append(TreeMember(f.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns, f.read_bytes))
        return out
    try:
        tar = tarfile.open(path)
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read {path} as a tar archive ({type(exc).__name__}: {exc}); "
                        f"fix: replace the file with an intact copy (nothing was cached)") from None
    if members and not _is_compressed(path):
        last = members[-1]
        problem = tar_truncation(path, last.offset_data + (-(-last.size // 512)) * 512)
        if problem:
            raise DataError(f"{path} is damaged: {problem}; fix: replace it with an intact copy (nothing was cached)")

    def reader(m: tarfile.TarInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            f = tar.extractfile(m)
            if f is None:
                raise OSError("not a regular file")
            data = f.read()
            if len(data) != m.size:
                raise OSError(f"only {len(data)} of {m.size} bytes (truncated archive)")
            return data

        return read

    for m in members:
        if m.isfile() and PurePosixPath(m.name).suffix.lower() in IMAGE_SUFFIXES:
            out.append(TreeMember(PurePosixPath(m.name).as_posix(), m.size, int(m.mtime), reader(m)))
    return out


# ---------------------------------------------------------------- reading a tree into tensors

@dataclass(frozen=True)
class Assigned:
    """Where one image goes: split (``train``/``test``), class name, group (e.g. a session; "" if none)."""

    split: str
    label: str
    group: str = ""


@dataclass(frozen=True)
class TreeCounts:
    """Images per (split, class) and per (split, group, class), counted before anything is decoded."""

    classes: tuple[str, ...]
    groups: tuple[str, ...]
    per_class: Mapping[str, Mapping[str, int]]  # split -> class -> n
    per_group: Mapping[str, Mapping[tuple[str, str], int]]  # split -> (group, class) -> n

    def split_size(self, split: str) -> int:
        return sum(self.per_class.get(split, {}).values())

    @property
    def total(self) -> int:
        return sum(self.split_size(s) for s in SPLITS)


@dataclass(frozen=True)
class TreeData:
    """A decoded tree: train/test data (labels index ``classes``), each sample's group index into ``groups``."""

    classes: tuple[str, ...]
    groups: tuple[str, ...]
    train: TensorData
    test: TensorData
    train_group: torch.Tensor
    test_group: torch.Tensor


def natural_key(s: str) -> list[Any]:
    """Sort key that orders embedded numbers by value (``s2`` before ``s10``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _listing_digest(members: Sequence[TreeMember]) -> str:
    h = hashlib.sha256()
    for m in members:
        h.update(f"{m.rel}\0{m.size}\0{m.stamp}\n".encode())
    return h.hexdigest()


def _first(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def count_tree(assigned: Sequence[tuple[TreeMember, Assigned]], classes: Sequence[str] | None = None) -> TreeCounts:
    per_class: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    per_group: dict[str, dict[tuple[str, str], int]] = {s: {} for s in SPLITS}
    for _, a in assigned:
        per_class[a.split][a.label] = per_class[a.split].get(a.label, 0) + 1
        per_group[a.split][(a.group, a.label)] = per_group[a.split].get((a.group, a.label), 0) + 1
    found = sorted({a.label for _, a in assigned})
    groups = tuple(sorted({a.group for _, a in assigned}, key=natural_key))
    return TreeCounts(tuple(classes) if classes is not None else tuple(found), groups, per_class, per_group)


def generic_problems(counts: TreeCounts) -> list[str]:
    """Every class must have images in both splits."""
    out = []
    for split in SPLITS:
        empty = [c for c in counts.classes if not counts.per_class[split].get(c)]
        if empty:
            out.append(f"split {split} has no image of class(es) {_first(empty)}")
    return out


def read_tree(path: Path, assign: Callable[[str], Assigned | None], *, what: str, cache_dir: str | os.PathLike | None = None,
              size: int | None = None, crop_pct: float | None = None, classes: Sequence[str] | None = None,
              check: Callable[[TreeCounts], list[str]] | None = None, fix: str = "", key_extra: str = "",
              members: Sequence[TreeMember] | None = None, announce: bool = False) -> TreeData:
    """Decode the images of a tree that ``assign`` places (see the module docstring); counts checked first.

    ``classes`` fixes the class list and its order (labels index it; an image of another class is an
    error); otherwise the sorted class names found. ``check`` adds a layout's own count rules. ``what``
    names the dataset in messages, ``fix`` says how to get an intact copy; ``announce`` prints the counts
    once, when the tree is decoded (not when it comes from the cache).
    """
    if crop_pct is not None and size is None:
        raise UserError("crop_pct needs size (the side of the square the centre crop produces)")
    if members is None:
        if not path.exists():
            raise DataError(f"{what}: {path} does not exist; fix: {fix or 'give the path of a folder or tar of images'}")
        members = tree_members(path)
    assigned = [(m, a) for m in members if (a := assign(m.rel)) is not None]
    if not assigned:
        raise DataError(f"{what}: no image in {path} fits the expected layout ({len(members)} image file(s) found). "
                        f"Fix: {fix or 'check the folder structure'}")
    counts = count_tree(assigned, classes)
    if classes is not None:
        unknown = sorted({a.label for _, a in assigned} - set(classes))
        if unknown:
            raise DataError(f"{what}: {path} holds images of unknown class(es) {_first(unknown)}. Fix: {fix}")
    bad = generic_problems(counts) + (check(counts) if check is not None else [])
    if bad:
        raise DataError(f"{what}: {path} is incomplete or not the expected dataset: " + "; ".join(bad)
                        + f". Fix: {fix or 'replace it with a complete copy'} (nothing was decoded or cached)")
    st = path.stat()
    listing = _listing_digest(members) if path.is_dir() else f"{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(f"{path.resolve()}|{listing}|{size}|{crop_pct}|{key_extra}|{list(counts.classes)}|"
                         f"v{TREE_CACHE_VERSION}".encode()).hexdigest()[:16]
    cache = Path(cache_root(cache_dir)) / "decoded" / f"{path.name.split('.')[0]}-tree-{key}.pt"
    if cache.exists():
        try:
            blob = load_checked(cache)
            return TreeData(tuple(blob["classes"]), tuple(blob["groups"]),
                            TensorData(blob["train_x"], blob["train_y"]), TensorData(blob["test_x"], blob["test_y"]),
                            blob["train_group"], blob["test_group"])
        except (CorruptFile, KeyError, TypeError, ValueError) as exc:
            warnings.warn(f"decoded-image cache {cache} is damaged ({exc}); rebuilding it from {path}", stacklevel=2)
            cache.unlink(missing_ok=True)
    if announce:
        print(f"{what}: {path}: {len(counts.classes)} classes, train {counts.split_size('train')} and test "
              f"{counts.split_size('test')} images (decoded once, then cached)", file=sys.stderr)
    cidx = {c: i for i, c in enumerate(counts.classes)}
    gidx = {g: i for i, g in enumerate(counts.groups)}
    # final positions: sorted by (split, class, group, name); decoding follows the archive order
    order = sorted(range(len(assigned)), key=lambda i: (assigned[i][1].split, cidx[assigned[i][1].label],
                                                        gidx[assigned[i][1].group], assigned[i][0].rel))
    slot: dict[int, tuple[str, int]] = {}
    fill = {s: 0 for s in SPLITS}
    for i in order:
        s = assigned[i][1].split
        slot[i] = (s, fill[s])
        fill[s] += 1
    wh = None if size is None else (size, size)
    arrays: dict[str, np.ndarray | list[np.ndarray | None]] = {
        s: (np.empty((fill[s], 3, size, size), dtype=np.uint8) if size is not None else [None] * fill[s]) for s in SPLITS}
    labels = {s: np.empty(fill[s], dtype=np.int64) for s in SPLITS}
    groups = {s: np.empty(fill[s], dtype=np.int64) for s in SPLITS}
    first_shape = None
    for i, (m, a) in enumerate(assigned):
        s, j = slot[i]
        img = decode_image(path, m.rel, m.read, wh, crop_pct)
        if size is None:
            if first_shape is None:
                first_shape = img.shape
            elif img.shape != first_shape:
                raise UserError(f"{what}: images in {path} have different sizes ({m.rel} is {img.shape[1]}x{img.shape[0]}, "
                                f"others {first_shape[1]}x{first_shape[0]}); fix: give size (and optionally crop_pct)")
            arrays[s][j] = img.transpose(2, 0, 1)  # type: ignore[index]
        else:
            arrays[s][j] = img.transpose(2, 0, 1)  # type: ignore[index]
        labels[s][j] = cidx[a.label]
        groups[s][j] = gidx[a.group]
    out: dict[str, Any] = {"classes": list(counts.classes), "groups": list(counts.groups)}
    for s in SPLITS:
        x = arrays[s] if size is not None else (np.stack(arrays[s]) if fill[s] else np.empty((0, 3, 1, 1), np.uint8))  # type: ignore[arg-type]
        out[f"{s}_x"] = torch.from_numpy(x)
        out[f"{s}_y"] = torch.from_numpy(labels[s])
        out[f"{s}_group"] = torch.from_numpy(groups[s])
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_checked(out, cache)
    return TreeData(counts.classes, counts.groups, TensorData(out["train_x"], out["train_y"]),
                    TensorData(out["test_x"], out["test_y"]), out["train_group"], out["test_group"])


# ---------------------------------------------------------------- assigning images: train/test folders, split files

def folder_assign(train_folder: str = "train", test_folder: str = "test") -> Callable[[str], Assigned | None]:
    """``.../<train_folder>/<class>/<image>`` and ``.../<test_folder>/<class>/<image>`` (any prefix above)."""
    names = {train_folder: "train", test_folder: "test"}

    def assign(rel: str) -> Assigned | None:
        parts = rel.split("/")
        if len(parts) >= 3 and parts[-3] in names:
            return Assigned(names[parts[-3]], parts[-2])
        return None

    return assign


def parse_split_file(path: Path) -> dict[str, str]:
    """``<relative path> <train|test>`` per line (``#`` comments, blank lines ignored) -> {path: split}."""
    if not path.is_file():
        raise DataError(f"split file {path} does not exist; fix: give the path of a text file with one "
                        f"'<relative image path> <train|test>' per line")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or parts[1] not in SPLITS:
            raise UserError(f"split file {path}, line {n}: expected '<relative image path> <train|test>', got {line!r}")
        rel = PurePosixPath(parts[0].replace("\\", "/")).as_posix()
        if len(PurePosixPath(rel).parts) < 2:
            raise UserError(f"split file {path}, line {n}: {rel!r} has no class folder (expected <class>/<image>)")
        if out.get(rel, parts[1]) != parts[1]:
            raise UserError(f"split file {path}, line {n}: {rel} is listed in both train and test")
        out[rel] = parts[1]
    if not out:
        raise UserError(f"split file {path} lists no image")
    return out


def _strip_top(members: Sequence[TreeMember]) -> int:
    """1 when every member lies below one common top folder (a tar of ``name/...``), else 0."""
    tops = {m.rel.split("/", 1)[0] for m in members}
    return 1 if len(tops) == 1 and all("/" in m.rel for m in members) else 0


def split_file_assign(split: Mapping[str, str], members: Sequence[TreeMember], where: Path) -> Callable[[str], Assigned | None]:
    """Assign the images a split file lists (paths relative to the folder, or to the tar's single top folder)."""
    strip = _strip_top(members)
    rels = {m.rel for m in members}
    short = {("/".join(m.rel.split("/")[strip:]) if strip else m.rel) for m in members}
    missing = sorted(p for p in split if p not in rels and p not in short)
    if missing:
        raise DataError(f"{where}: {len(missing)} image(s) listed in the split file are missing, e.g. {_first(missing, 3)}; "
                        f"fix: use the complete folder the split file was made for (nothing was decoded or cached)")

    def assign(rel: str) -> Assigned | None:
        key = rel if rel in split else "/".join(rel.split("/")[strip:])
        s = split.get(key)
        return None if s is None else Assigned(s, key.split("/")[-2])

    return assign


# ---------------------------------------------------------------- the generic benchmark

IMAGE_FOLDER_CONSTRAINTS = {
    **SPLIT_CONSTRAINTS,
    "path": String(),
    "split_file": AnyOf(NoneValue(), String()),
    "train_folder": String(),
    "test_folder": String(),
    "size": AnyOf(NoneValue(), Interval(int, 8, 4096)),
    "crop_pct": AnyOf(NoneValue(), Interval(float, 0, 1, closed="right")),
    "n_classes": AnyOf(NoneValue(), Interval(int, 2)),
}

IMAGE_FOLDER_DEFAULTS = {"path": inspect.Parameter.empty, "split_file": None, "train_folder": "train", "test_folder": "test",
                         "size": None, "crop_pct": None, "n_classes": None, "n_experiences": 5, "base": None,
                         "increment": None, "class_order": None, "shuffle_classes": True, "classes": None,
                         "scenario": "class-il"}


def image_folder_problems(p: Mapping[str, Any]) -> list[str]:
    """Cross-parameter rules of ``split_image_folder`` (no data read)."""
    out = []
    if not p.get("path"):
        out.append("path must name a folder or tar of images (absolute, or below the data root)")
    if p.get("crop_pct") is not None and p.get("size") is None:
        out.append("crop_pct needs size (resize the shorter side to size/crop_pct, then crop the centre size x size)")
    if p.get("split_file") is not None and (p.get("train_folder"), p.get("test_folder")) != ("train", "test"):
        out.append("train_folder/test_folder apply only without split_file (the split file says which image is which)")
    if p.get("train_folder") == p.get("test_folder"):
        out.append("train_folder and test_folder must differ")
    return out + split_problems(p, p.get("n_classes"))


def _resolve(path: str, data_root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(data_root) / p


def _folder_source(name: str, path: Path, n_classes: int, size: int | None) -> DatasetSource:
    """A source describing one user folder (for the stream's record; it is read by :func:`split_image_folder`)."""
    def read(src: DatasetSource, root: Path, cache_dir: str | None) -> tuple[TensorData, TensorData]:
        raise UserError(f"{path} is read through the split_image_folder benchmark")

    return DatasetSource(name, f"image folder {path.name}", n_classes, (3, size or 0, size or 0), str(path), (path.name,),
                         read, lambda root: path.exists())


def split_image_folder(seed: int, data_root: Path, cache_dir: str | None = None, *, path: str, split_file: str | None = None,
                       train_folder: str = "train", test_folder: str = "test", size: int | None = None,
                       crop_pct: float | None = None, n_classes: int | None = None, **split: Any) -> Stream:
    """Class-incremental split of any image tree (train/test folders or a split file); see the module docstring."""
    root = _resolve(path, data_root)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; fix: give the path of a folder or tar holding "
                        f"{train_folder}/<class>/<image> and {test_folder}/<class>/<image> (or any tree plus split_file)")
    members = None
    extra = ""
    if split_file is not None:
        sf = _resolve(split_file, data_root)
        listed = parse_split_file(sf)
        members = tree_members(root)
        assign = split_file_assign(listed, members, root)
        extra = hashlib.sha256(sf.read_bytes()).hexdigest()
    else:
        assign = folder_assign(train_folder, test_folder)

    def check(c: TreeCounts) -> list[str]:
        return [] if n_classes is None or len(c.classes) == n_classes else [
            f"it has {len(c.classes)} classes, expected n_classes={n_classes}"]

    fix = ("give a tree with " + (f"every image the split file lists" if split_file else
                                  f"{train_folder}/<class>/<image> and {test_folder}/<class>/<image>"))
    tree = read_tree(root, assign, what="split_image_folder", cache_dir=cache_dir, size=size, crop_pct=crop_pct,
                     check=check, fix=fix, key_extra=f"{train_folder}|{test_folder}|{extra}", members=members,
                     announce=True)
    src = _folder_source("image_folder", root, len(tree.classes), size)
    data = SourceData(src, with_origin(tree.train), with_origin(tree.test), tree.classes)
    rec = {"path": str(root), "split_file": split_file, "size": size, "crop_pct": crop_pct,
           **{k: split.get(k) for k in ("n_experiences", "base", "increment", "classes", "scenario") if k in split}}
    return split_stream("split_image_folder", data, seed=seed, **split, params=rec)


# ---------------------------------------------------------------- published layouts

@dataclass(frozen=True)
class Layout:
    """A published dataset on disk: where it lives, how its images are assigned, what its counts must be."""

    name: str
    title: str
    n_classes: int
    folders: tuple[str, ...]  # candidates below the data root, first existing wins
    assign: Callable[[str], Assigned | None]
    get: str  # where to get it and how to unpack (for users)
    split_sizes: Mapping[str, int] = field(default_factory=dict)
    total: int | None = None
    size: int = 224
    crop_pct: float | None = 0.875
    classes: tuple[str, ...] | None = None  # fixed class list (names; labels index it)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # split -> groups every class must have
    max_per_group: int | None = None
    split_reader: Callable[[Path, Sequence[TreeMember]], Callable[[str], Assigned | None]] | None = None
    hint: str = ""  # what a tree that assigns nothing probably is

    def folder(self, root: Path) -> Path | None:
        return next((root / f for f in self.folders if (root / f).exists()), None)

    def problems(self, c: TreeCounts) -> list[str]:
        """The layout's count rules: classes, per-split and total sizes, groups (sessions) per class."""
        out = []
        if len(c.classes) != self.n_classes:
            missing = sorted(set(self.classes or ()) - set(c.classes), key=natural_key)
            out.append(f"it has {len(c.classes)} classes, expected {self.n_classes}"
                       + (f" (missing: {_first(missing)})" if missing else ""))
        for split, want in self.split_sizes.items():
            if c.split_size(split) != want:
                out.append(f"split {split} has {c.split_size(split)} images, the published split has {want}")
        if self.total is not None and c.total != self.total:
            out.append(f"it has {c.total} images in all, the published dataset has {self.total}")
        for split, groups in self.groups.items():
            absent = [f"{g}/{k}" for g in groups for k in c.classes if not c.per_group[split].get((g, k))]
            if absent:
                out.append(f"no image in {_first(absent)}")
            extra = sorted({g for g, _ in c.per_group[split]} - set(groups), key=natural_key)
            if extra:
                out.append(f"unexpected {split} group(s) {_first(extra)}")
        if self.max_per_group is not None:
            over = [f"{g}/{k}: {n}" for s in SPLITS for (g, k), n in c.per_group[s].items() if n > self.max_per_group]
            if over:
                out.append(f"more than {self.max_per_group} images in {_first(over)}")
        return out

    def read(self, root: Path, cache_dir: str | os.PathLike | None, size: int, crop_pct: float | None) -> TreeData:
        folder = self.folder(root)
        if folder is None:
            raise self.source().problem(root, download=False) or DataError(f"{self.name} not found")
        members = tree_members(folder)
        assign = self.split_reader(folder, members) if self.split_reader is not None else self.assign
        return read_tree(folder, assign, what=f"dataset {self.name!r}", cache_dir=cache_dir, size=size, crop_pct=crop_pct,
                         classes=self.classes, check=self.problems, fix=(self.hint + " " if self.hint else "") + self.get,
                         key_extra=self.name, members=members, announce=True)

    def load(self, root: Path, cache_dir: str | os.PathLike | None = None, size: int | None = None,
             crop_pct: float | None = None) -> tuple[SourceData, TreeData]:
        """Read and check the dataset at ``size`` (default: the layout's) as a source, plus the decoded tree."""
        size = self.size if size is None else size
        tree = self.read(Path(root), cache_dir, size, crop_pct)
        src = replace(self.source(), shape=(3, size, size))
        return SourceData(src, with_origin(tree.train), with_origin(tree.test), tree.classes), tree

    def source(self) -> DatasetSource:
        def read(src: DatasetSource, root: Path, cache_dir: str | None) -> tuple[TensorData, TensorData]:
            tree = self.read(root, cache_dir, self.size, self.crop_pct)
            return tree.train, tree.test

        return DatasetSource(self.name, self.title, self.n_classes, (3, self.size, self.size), self.folders[0],
                             self.folders, read, lambda root: self.folder(root) is not None,
                             dict(self.split_sizes), note=self.get)


def _aper_layout(name: str, title: str, folders: tuple[str, ...], sizes: tuple[int, int], zip_name: str, md5: str,
                 hint: str) -> Layout:
    return Layout(
        name, title, 200, folders, folder_assign(), split_sizes={"train": sizes[0], "test": sizes[1]},
        total=sum(sizes),
        get=(f"download {zip_name} (MD5 {md5}) from the links in the README of https://github.com/zhoudw-zdw/RevisitingCIL "
             f"(the RanPAC/APER split) and unzip it so that {folders[0]}/train/<class>/ and {folders[0]}/test/<class>/ "
             f"lie in the data root"),
        hint=hint)


IMAGENET_R = _aper_layout("imagenet_r", "ImageNet-R (RanPAC/APER 80/20 split)", ("imagenet-r",), (24000, 6000),
                          "imagenet-r.zip", "730aa3fb9c7d2ec0b6381c6b23040681",
                          "The original imagenet-r.tar (https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar, 30,000 "
                          "images in one folder per class) has no train/test split; the published 80/20 split exists only "
                          "as the zip below (for another split use split_image_folder with a split file):")
IMAGENET_A = _aper_layout("imagenet_a", "ImageNet-A (RanPAC/APER 80/20 split)", ("imagenet-a", "ina"), (5981, 1519),
                          "ina.zip", "7f4aaf0b1532b7a0bd670822c152d3c5",
                          "The original imagenet-a.tar (https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar, 7,500 "
                          "images) has no train/test split; the published 80/20 split exists only as the zip below (for "
                          "another split use split_image_folder with a split file):")
CUB200 = _aper_layout("cub200", "CUB-200-2011 (RanPAC/APER 80/20 split)", ("cub",), (9430, 2358),
                      "cub.zip", "85e342a2d5f941e740193602057df7a5",
                      "The original CUB_200_2011 keeps its own 5,994/5,794 split in text files (benchmark "
                      "cub200_official); the 80/20 split of the RanPAC/APER line exists only as the zip below:")


def _cub_official_reader(folder: Path, members: Sequence[TreeMember]) -> Callable[[str], Assigned | None]:
    """``images.txt`` (``<id> <class>/<file>``) + ``train_test_split.txt`` (``<id> <1 train | 0 test>``)."""
    texts = {}
    for fname in ("images.txt", "train_test_split.txt"):
        if folder.is_dir():
            cand = [p for p in (folder / fname, folder / "CUB_200_2011" / fname) if p.is_file()]
            if not cand:
                raise DataError(f"dataset 'cub200_official': {fname} not found in {folder}; fix: {CUB_OFFICIAL_GET}")
            texts[fname] = cand[0].read_text()
        else:
            with tarfile.open(folder) as tar:
                m = next((m for m in tar.getmembers() if PurePosixPath(m.name).name == fname), None)
                if m is None:
                    raise DataError(f"dataset 'cub200_official': {fname} not found in {folder}; fix: {CUB_OFFICIAL_GET}")
                texts[fname] = tar.extractfile(m).read().decode()  # type: ignore[union-attr]
    paths = dict(line.split(None, 1) for line in texts["images.txt"].splitlines() if line.strip())
    is_train = dict(line.split() for line in texts["train_test_split.txt"].splitlines() if line.strip())
    split = {paths[i].strip(): ("train" if is_train.get(i) == "1" else "test") for i in paths}
    by_rel = {}
    for m in members:
        parts = m.rel.split("/")
        if "images" in parts:
            by_rel["/".join(parts[parts.index("images") + 1:])] = m.rel
    missing = sorted(p for p in split if p not in by_rel)
    if missing:
        raise DataError(f"dataset 'cub200_official': {len(missing)} image(s) listed in images.txt are missing from {folder}, "
                        f"e.g. {_first(missing, 3)}; fix: {CUB_OFFICIAL_GET} (nothing was decoded or cached)")
    assigned = {by_rel[p]: Assigned(s, p.split("/")[0]) for p, s in split.items()}
    return assigned.get


CUB_OFFICIAL_GET = ("download CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vp158 and put it (or the "
                    "unpacked CUB_200_2011 folder with images/, images.txt and train_test_split.txt) in the data root")
CUB200_OFFICIAL = Layout(
    "cub200_official", "CUB-200-2011 (official 5,994/5,794 split)", 200, ("CUB_200_2011", "CUB_200_2011.tgz"),
    lambda rel: None, CUB_OFFICIAL_GET, split_sizes={"train": 5994, "test": 5794}, total=11788,
    classes=None, split_reader=_cub_official_reader)

CORE50_SESSIONS = tuple(f"s{i}" for i in range(1, 12))
CORE50_TRAIN_SESSIONS = ("s1", "s2", "s4", "s5", "s6", "s8", "s9", "s11")  # RanPAC trainer.py dil_tasks order
CORE50_TEST_SESSIONS = ("s3", "s7", "s10")
CORE50_OBJECTS = tuple(f"o{i}" for i in range(1, 51))


def _core50_assign(rel: str) -> Assigned | None:
    parts = rel.split("/")
    if len(parts) >= 3 and parts[-3] in CORE50_SESSIONS and parts[-2] in CORE50_OBJECTS:
        return Assigned("test" if parts[-3] in CORE50_TEST_SESSIONS else "train", parts[-2], parts[-3])
    return None


CORE50 = Layout(
    "core50", "CORe50 (128x128, 50 objects, 11 sessions)", 50, ("core50_128x128",), _core50_assign,
    get=("download core50_128x128.zip from http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip "
         "(https://vlomonaco.github.io/core50) and unzip it in the data root (core50_128x128/s<1-11>/o<1-50>/*.png)"),
    total=164866, size=128, crop_pct=None, classes=CORE50_OBJECTS,
    groups={"train": CORE50_TRAIN_SESSIONS, "test": CORE50_TEST_SESSIONS}, max_per_group=300)

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (IMAGENET_R, IMAGENET_A, CUB200, CUB200_OFFICIAL, CORE50)}
for _lay in LAYOUTS.values():
    register_source(_lay.source())


# ---------------------------------------------------------------- benchmark builders of the layouts

ORDERS = ("field", "natural", "seed")

ORDER_CONSTRAINTS = {
    "order": Options(*ORDERS),
    "class_order": SPLIT_CONSTRAINTS["class_order"],
    "scenario": SPLIT_CONSTRAINTS["scenario"],
}
RESIZE_CONSTRAINTS = {
    "size": Interval(int, 8, 4096),
    "crop_pct": AnyOf(NoneValue(), Interval(float, 0, 1, closed="right")),
}


def _order(order: str, class_order: Sequence[int] | None, n: int) -> dict[str, Any]:
    """split_stream's order arguments: given order, the field's seed-1993 order, natural or from the cell seed."""
    if class_order is not None:
        return {"class_order": [int(c) for c in class_order]}
    if order == "field":
        return {"class_order": field_order(n)}
    return {"shuffle_classes": order == "seed"}


def split_args(n_experiences: int | None, base: int | None, increment: int | None,
               published: Mapping[str, int]) -> dict[str, int | None]:
    """n_experiences / base / increment as given, or the published split when none of them is given."""
    if n_experiences is None and base is None and increment is None:
        return {"n_experiences": None, "base": None, "increment": None, **published}
    return {"n_experiences": n_experiences, "base": base, "increment": increment}


def order_problems(p: Mapping[str, Any], n_classes: int, default_order: str,
                   published: Mapping[str, int] | None = None) -> list[str]:
    """Split arithmetic (n_experiences / base / increment, or the published split), class_order a permutation,
    not both order and class_order."""
    q = dict(p)
    if published is not None:
        q.update(split_args(p.get("n_experiences"), p.get("base"), p.get("increment"), published))
    keys = ("n_experiences", "base", "increment", "class_order", "scenario")
    out = split_problems({k: q[k] for k in keys if k in q}, n_classes)
    if p.get("class_order") is not None and p.get("order", default_order) != default_order:
        out.append("give either order or class_order, not both")
    return out


def cifar100_builder(name: str, base: int | None, increment: int) -> Callable[..., Stream]:
    """CIFAR-100 (canonical pickles) in a fixed class order, split ``B<base>-Inc<increment>``."""
    def build(seed: int, data_root: Path, cache_dir: str | None = None, *, download: bool = True, order: str = "field",
              class_order: Sequence[int] | None = None, scenario: str = "class-il") -> Stream:
        data = CIFAR100.load(Path(data_root), download, cache_dir)
        rec = {"order": order if class_order is None else "given", "base": base or 0, "increment": increment,
               "scenario": scenario}
        return split_stream(name, data, seed=seed, n_experiences=None, base=base, increment=increment, scenario=scenario,
                            params=rec, **_order(order, class_order, 100))

    return build


LAYOUT_SPLIT = {"n_experiences": 10}  # 10 x 20 classes, the published ImageNet-R/A and CUB setting
CORE50_NC_SPLIT = {"base": 10, "increment": 5}  # the official NC protocol: 10 objects, then 8 x 5


def layout_split_builder(layout: Layout, name: str) -> Callable[..., Stream]:
    """A layout's classes partitioned into experiences (class-incremental); 10 x 20 unless told otherwise."""
    def build(seed: int, data_root: Path, cache_dir: str | None = None, *, order: str = "field",
              class_order: Sequence[int] | None = None, n_experiences: int | None = None, base: int | None = None,
              increment: int | None = None, scenario: str = "class-il", size: int = layout.size,
              crop_pct: float | None = layout.crop_pct) -> Stream:
        data, _ = layout.load(Path(data_root), cache_dir, size, crop_pct)
        split = split_args(n_experiences, base, increment, LAYOUT_SPLIT)
        rec = {"order": order if class_order is None else "given", **split, "scenario": scenario, "size": size,
               "crop_pct": crop_pct}
        return split_stream(name, data, seed=seed, **split, scenario=scenario, params=rec,
                            **_order(order, class_order, layout.n_classes))

    return build


def core50_ni(seed: int, data_root: Path, cache_dir: str | None = None, *, size: int = 128, crop_pct: float | None = None,
              shuffle_sessions: bool = False) -> Stream:
    """CORe50 new instances (domain-incremental): one experience per training session, all 50 objects in each.

    Sessions s1, s2, s4, s5, s6, s8, s9, s11 in that order (RanPAC's ``trainer.py``), or shuffled by the cell
    seed; every experience is tested on the same test set, sessions s3, s7, s10 (each experience's accuracy
    is the accuracy on the whole test set, as in the NI protocol). The experiences share one test tensor.
    """
    data, tree = CORE50.load(Path(data_root), cache_dir, size, crop_pct)
    sessions = list(CORE50_TRAIN_SESSIONS)
    if shuffle_sessions:
        g = torch.Generator().manual_seed(seed)
        sessions = [sessions[i] for i in torch.randperm(len(sessions), generator=g).tolist()]
    gidx = {g: i for i, g in enumerate(tree.groups)}
    classes = tuple(range(CORE50.n_classes))
    exps = []
    for i, s in enumerate(sessions):
        idx = (tree.train_group == gidx[s]).nonzero().squeeze(1)
        exps.append(Experience(i, i, classes, data.train.subset(idx), data.test, info={"session": s}))
    rec = {"sessions": sessions, "test_sessions": list(CORE50_TEST_SESSIONS), "size": size, "crop_pct": crop_pct,
           "shuffle_sessions": shuffle_sessions, "source": data.describe()}
    return Stream(name="core50_ni", scenario="domain-il", n_classes=CORE50.n_classes, experiences=tuple(exps),
                  params=rec, seed=seed, sources={"train": data.train, "test": data.test})


def core50_nc(seed: int, data_root: Path, cache_dir: str | None = None, *, order: str = "seed",
              class_order: Sequence[int] | None = None, n_experiences: int | None = None, base: int | None = None,
              increment: int | None = None, scenario: str = "class-il", size: int = 128,
              crop_pct: float | None = None) -> Stream:
    """CORe50 new classes: the 50 objects in experiences (official NC: 10, then 8 x 5), trained on the 8
    training sessions, tested on s3, s7, s10; class order from the cell seed by default (the official NC
    runs each draw one)."""
    data, _ = CORE50.load(Path(data_root), cache_dir, size, crop_pct)
    split = split_args(n_experiences, base, increment, CORE50_NC_SPLIT)
    rec = {"order": order if class_order is None else "given", **split, "scenario": scenario, "size": size,
           "crop_pct": crop_pct}
    return split_stream("core50_nc", data, seed=seed, **split, scenario=scenario, params=rec,
                        **_order(order, class_order, CORE50.n_classes))


@dataclass(frozen=True)
class BenchmarkEntry:
    """The fields of a :class:`~clbench.benchmarks.registry.BenchmarkSpec` (registered by the registry)."""

    name: str
    build: Callable[..., Stream]
    doc: str
    defaults: Mapping[str, Any]
    constraints: Mapping[str, Any]
    source: DatasetSource | None
    check: Callable[[Mapping[str, Any]], list[str]]


def benchmark_entries() -> list[BenchmarkEntry]:
    """The benchmarks of this module, for the registry (which owns BenchmarkSpec)."""
    split_keys = ("n_experiences", "base", "increment")
    out = [BenchmarkEntry(
        "split_image_folder", split_image_folder,
        "Class-incremental split of any image folder or tar (train/test folders, or a split file), resized to size.",
        IMAGE_FOLDER_DEFAULTS, IMAGE_FOLDER_CONSTRAINTS, None, image_folder_problems)]
    for name, base, inc, label in (("cifar100_b0inc10", None, 10, "B0-Inc10 (10 x 10)"),
                                   ("cifar100_b50inc10", 50, 10, "B50-Inc10 (50 + 5 x 10)"),
                                   ("cifar100_b0inc5", None, 5, "B0-Inc5 (20 x 5)")):
        out.append(BenchmarkEntry(
            name, cifar100_builder(name, base, inc),
            f"CIFAR-100 {label} in the field's seed-1993 class order (PyCIL/RanPAC), canonical pickles.",
            {"order": "field", "class_order": None, "scenario": "class-il", "download": True},
            {**ORDER_CONSTRAINTS, "download": Boolean()}, CIFAR100,
            lambda p: order_problems(p, 100, "field")))
    for lay in (IMAGENET_R, IMAGENET_A, CUB200, CUB200_OFFICIAL):
        out.append(BenchmarkEntry(
            lay.name, layout_split_builder(lay, lay.name),
            f"{lay.title}: 200 classes in 10 x 20 (or n_experiences / base+increment), seed-1993 order, "
            f"{lay.size} px (crop_pct {lay.crop_pct}).",
            {"order": "field", "class_order": None, "n_experiences": None, "base": None, "increment": None,
             "scenario": "class-il", "size": lay.size, "crop_pct": lay.crop_pct},
            {**ORDER_CONSTRAINTS, **{k: SPLIT_CONSTRAINTS[k] for k in split_keys}, **RESIZE_CONSTRAINTS},
            lay.source(), lambda p, n=lay.n_classes: order_problems(p, n, "field", LAYOUT_SPLIT)))
    out.append(BenchmarkEntry(
        "core50_ni", core50_ni,
        "CORe50 new instances (domain-incremental): 8 training sessions as experiences, 50 objects, tested on s3/s7/s10.",
        {"size": 128, "crop_pct": None, "shuffle_sessions": False},
        {**RESIZE_CONSTRAINTS, "shuffle_sessions": Boolean()}, CORE50.source(), lambda p: []))
    out.append(BenchmarkEntry(
        "core50_nc", core50_nc,
        "CORe50 new classes (class-incremental): 50 objects in 10 + 8 x 5, trained on 8 sessions, tested on s3/s7/s10.",
        {"order": "seed", "class_order": None, "n_experiences": None, "base": None, "increment": None,
         "scenario": "class-il", "size": 128, "crop_pct": None},
        {**ORDER_CONSTRAINTS, **{k: SPLIT_CONSTRAINTS[k] for k in split_keys}, **RESIZE_CONSTRAINTS},
        CORE50.source(), lambda p: order_problems(p, 50, "seed", CORE50_NC_SPLIT)))
    return out


__all__ = ["Assigned", "BenchmarkEntry", "CORE50", "CUB200", "CUB200_OFFICIAL", "IMAGENET_A", "IMAGENET_R", "LAYOUTS",
           "Layout", "TreeCounts", "TreeData", "TreeMember", "benchmark_entries", "core50_nc", "core50_ni",
           "field_order", "read_tree", "split_image_folder", "tree_members"]
