"""Problems with data are found before anything runs, data cannot lie, and writing that fails says so."""

from __future__ import annotations

import errno
import os
import shutil

import optuna
import pandas as pd
import pytest
from helpers import folder_digest, tiny_matrix, write_config

from clbench import files
from clbench.benchmarks.sources import CIFAR10
from clbench.errors import DataError
from clbench.protocols.cli import main


def _mnist_copy(data_root, dest):
    (dest / "MNIST").mkdir(parents=True)
    shutil.copytree(data_root / "MNIST" / "raw", dest / "MNIST" / "raw")
    for f in (dest / "MNIST" / "raw").iterdir():
        f.chmod(0o644)
    return dest / "MNIST" / "raw" / "train-labels-idx1-ubyte"


def test_a_corrupt_label_byte_fails_the_cell_naming_the_file_and_a_plain_rerun_retries_it(tmp_path, data_root, capsys):
    labels = _mnist_copy(data_root, tmp_path / "data")
    good = labels.read_bytes()
    raw = bytearray(good)
    raw[8 + 1234] = 200  # one label byte out of range: IndexError "Target 200 is out of bounds" before, no file named
    labels.write_bytes(bytes(raw))
    data = {"name": "m", "output": str(tmp_path / "runs"), "data_root": str(tmp_path / "data"), "seeds": [0],
            "benchmarks": [{"name": "split_mnist", "n_experiences": 5}],
            "strategies": [{"name": "nmc"}]}
    cfg = str(write_config(tmp_path / "m.yaml", data))
    assert main(["run", cfg, "--no-report", "--quiet"]) == 1
    cells = pd.read_csv(tmp_path / "runs" / "m" / "cells.csv")
    assert f"{labels} is corrupt: label 200 at position 1234 is out of range 0..9" in cells.error[0]
    assert "(1 such label(s))" in cells.error[0]
    labels.write_bytes(good)  # the user fixes the file; a plain rerun (no --retry-failed) runs the cell again
    assert main(["run", cfg, "--no-report"]) == 0
    assert "1 to run" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "runs" / "m" / "cells.csv").status.tolist() == ["ok"]


@pytest.mark.parametrize("damage", ["cut_at_member", "bad_header"])
def test_an_incomplete_cifar10_tar_is_refused_and_nothing_is_cached(tmp_path, data_root, damage):
    """A tar cut at a member boundary (or with one damaged header) ran "ok" on partial data before, and was cached."""
    import tarfile

    src = data_root / "cifar10-jpeg.tar"
    (tmp_path / "data").mkdir()
    dest = tmp_path / "data" / "cifar10-jpeg.tar"
    with tarfile.open(src) as t:  # a member of the test split, about four fifths into the archive
        victim = next(m.offset for m in t if m.name.startswith("test/") and m.offset > 88 * 2**20)
    shutil.copyfile(src, dest)
    dest.chmod(0o644)
    if damage == "cut_at_member":
        with open(dest, "r+b") as f:  # cut exactly at the start of a member (plus the two zero blocks of a tar's end)
            f.truncate(victim)
            f.seek(victim)
            f.write(bytes(1024))
    else:
        with open(dest, "r+b") as f:
            f.seek(victim + 148)  # the header checksum field of that member
            f.write(b"99999999")
    with pytest.raises(DataError, match=r"cifar10-jpeg.tar is incomplete or not the expected dataset: split test has \d+ images, expected 10000"):
        CIFAR10.load(tmp_path / "data", download=False, cache_dir=str(tmp_path / "cache"))
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_missing_data_is_one_error_before_anything_runs(tmp_path, capsys):
    data = {"name": "m", "output": str(tmp_path / "runs"), "data_root": str(tmp_path / "empty"),
            "benchmarks": [{"name": "split_mnist"}, {"name": "split_fmnist"}], "strategies": [{"name": "nmc"}]}
    assert main(["run", str(write_config(tmp_path / "m.yaml", data)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nothing was run" in err and "MNIST/raw" in err and "FashionMNIST/raw" in err and err.count("\n  - ") == 2
    assert not list((tmp_path / "runs").rglob("*.json"))


def test_writing_that_fails_says_so_and_loses_nothing(tmp_path, capsys, monkeypatch):
    cfg = str(write_config(tmp_path / "m.yaml", tiny_matrix(tmp_path / "runs", "m", seeds=(0,), epochs=1)))
    (tmp_path / "afile").write_text("x")
    assert main(["run", cfg, "--output", str(tmp_path / "afile"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'afile'}" in err and "Fix:" in err and "Traceback" not in err
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "taken").write_text("mine")
    assert main(["run", cfg, "--name", "taken", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'runs' / 'taken'}: File exists" in err and (tmp_path / "runs" / "taken").read_text() == "mine"
    assert main(["run", cfg, "--quiet", "--no-report"]) == 0
    before = folder_digest(tmp_path / "runs" / "m")
    assert main(["report", str(tmp_path / "runs" / "m"), "--out", str(tmp_path / "afile")]) == 2
    assert f"cannot write {tmp_path / 'afile'}" in capsys.readouterr().err
    real = files.tempfile.mkstemp
    monkeypatch.setattr(files.tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, os.strerror(errno.EROFS))))
    assert main(["run", cfg, "--seeds", "1", "--quiet", "--no-report"]) == 2
    assert "Read-only file system" in capsys.readouterr().err
    monkeypatch.setattr(files.tempfile, "mkstemp", real)
    assert {k: v for k, v in folder_digest(tmp_path / "runs" / "m").items() if k != "config.yaml"} == \
        {k: v for k, v in before.items() if k != "config.yaml"}


def test_a_full_disk_while_optuna_writes_is_one_clear_error(tmp_path, capsys, monkeypatch):
    data = {"name": "t", "output": str(tmp_path / "runs"), "seeds": [0],
            "tuning": {"name": "split_digits", "classes": [0, 1, 2, 3, 4]},
            "evaluation": {"name": "split_digits", "classes": [5, 6, 7, 8, 9]},
            "strategies": [{"name": "nmc"}], "search": {"protocol": "two-phase"}}

    def full(*a, **k):
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. (sqlite3.OperationalError) database or disk is full")

    monkeypatch.setattr(optuna.storages.RDBStorage, "_create_new_trial", full)
    assert main(["tune", str(write_config(tmp_path / "t.yaml", data)), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the tuning storage sqlite:///{tmp_path / 'runs' / 't' / 'tune.db'}" in err
    assert "database or disk is full" in err and "Traceback" not in err
