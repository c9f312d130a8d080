"""Bad input: a clear message, a non-zero exit, and nothing written before lost or altered."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import folder_digest, strategy_module, tiny_matrix, write_config

from dataclasses import replace

from clbench import files as store
from clbench.benchmarks.datasets import image_folder
from clbench.benchmarks.sources import MNIST
from clbench.errors import UserError
from clbench.protocols.cli import main
from clbench.protocols.config import parse_config
from clbench.protocols.runner import run_matrix


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[dict, Path]:
    """A run folder holding one finished cell, and its config (the tests must leave it as it is)."""
    tmp_path = tmp_path_factory.mktemp("finished")
    data = tiny_matrix(tmp_path / "runs", "m", seeds=(0,), epochs=1)
    data["strategies"] = data["strategies"][:1]
    run_matrix(parse_config(data), quiet=True)
    return data, tmp_path / "runs" / "m"


@pytest.mark.parametrize("bad, message", [
    ({"benchmarks": [{"name": "split_digits", "n_experiences": -2}]}, "n_experiences must be null or an integer >= 1, got -2"),
    ({"benchmarks": [{"name": "split_digits", "n_experiences": 20}]}, "n_experiences=20 is more than the 10 classes"),
    ({"benchmarks": [{"name": "split_digits", "scenario": "class-incremental"}]}, "scenario must be one of 'class-il', 'task-il', got 'class-incremental'"),
    ({"strategies": [{"name": "replay", "buffer_size": -10}]}, "buffer_size must be an integer >= 0, got -10"),
    ({"strategies": [{"name": "finetune", "hidden": [16, -3]}]}, "hidden must be a list of items that are each an integer >= 1: item 1 is not, got -3"),
    ({"strategies": [{"name": "finetune", "lr": float("nan")}]}, "lr must be a finite number"),
])
def test_out_of_range_config_is_refused_before_anything_is_written(tmp_path, capsys, finished_run, bad, message):
    data, run_dir = finished_run
    before = folder_digest(run_dir)
    assert main(["run", str(write_config(tmp_path / "bad.yaml", {**data, **bad})), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert folder_digest(run_dir) == before


def test_non_finite_loss_fails_the_cell_and_the_matrix_goes_on(tmp_path, capsys):
    data = tiny_matrix(tmp_path, "m", seeds=(0,), epochs=1)
    data["strategies"] = [{"name": "finetune", "hidden": [16], "lr": 1e12, "label": "diverges"},
                          {"name": "finetune", "hidden": [16], "label": "finetune"}]
    assert main(["run", str(write_config(tmp_path / "m.yaml", data)), "--quiet", "--no-report"]) == 1
    cells = pd.read_csv(tmp_path / "m" / "cells.csv").set_index("strategy")
    assert cells.status.to_dict() == {"diverges": "failed", "finetune": "ok"}
    assert "training diverged" in cells.error["diverges"]
    assert "training diverged" in capsys.readouterr().out  # the printed summary lists the reason


def _idx(path: Path, dims: tuple[int, ...], cut: int = 0) -> None:
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    body = np.zeros(int(np.prod(dims)), dtype=np.uint8).tobytes()
    path.write_bytes((header + body)[: len(header) + len(body) - cut])


def test_truncated_mnist_file_is_named_with_the_fix(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 20), ("t10k", 10)):
        _idx(raw / f"{split}-images-idx3-ubyte", (n, 28, 28), cut=100 if split == "train" else 0)
        _idx(raw / f"{split}-labels-idx1-ubyte", (n,))
    small = replace(MNIST, checksums={}, split_sizes={}, class_counts={})  # files in the format, not the canonical ones
    with pytest.raises(UserError) as exc:
        small.load(tmp_path, download=False)
    msg = str(exc.value)
    assert str(raw / "train-images-idx3-ubyte") in msg and "truncated" in msg and "Fix: delete it" in msg
    _idx(raw / "train-images-idx3-ubyte", (20, 28, 28))
    _idx(raw / "train-labels-idx1-ubyte", (19,))
    with pytest.raises(UserError, match="19 labels for the 20 images"):
        small.load(tmp_path, download=False)


def test_damaged_decoded_image_cache_is_named_and_rebuilt(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c, colour in (("cat", 40), ("dog", 200)):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            Image.new("RGB", (4, 4), (colour, 0, 0)).save(tmp_path / "imgs" / split / c / "0.png")
    first, _ = image_folder(tmp_path / "imgs", tmp_path / "cache")
    (cache,) = (tmp_path / "cache" / "decoded").glob("*.pt")
    blob = bytearray(cache.read_bytes())
    blob[-40] ^= 0xFF  # one flipped byte in the payload: only the checksum notices
    cache.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match=f"decoded-image cache {cache} is damaged.*SHA-256.*rebuilding"):
        again, _ = image_folder(tmp_path / "imgs", tmp_path / "cache")
    assert torch.equal(again[0].x, first[0].x) and torch.equal(again[1].y, first[1].y)
    store.load_checked(cache)  # rewritten intact


def test_strategy_class_missing_a_method_is_named(tmp_path, monkeypatch, capsys):
    mod = strategy_module(tmp_path, "broken", (
        "class NoPredict(Strategy):\n    def train_experience(self, exp):\n        pass\n\n"
        "class Duck:\n    def train_experience(self, exp):\n        pass\n\n    def predict(self, x):\n        return x\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = str(write_config(tmp_path / "m.yaml", tiny_matrix(tmp_path, "m")))
    assert main(["run", cfg, "--strategy", f"{mod}:NoPredict", "--quiet", "--no-report"]) == 2
    assert "does not implement predict()" in capsys.readouterr().err
    assert main(["run", cfg, "--strategy", f"{mod}:Duck", "--quiet", "--no-report"]) == 2
    assert "is not a subclass of clbench.strategies.Strategy" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


class _DiskFullAfterFirstRecord:
    """Stands in for ``os`` inside the store: fsync of a second cell record fails with ENOSPC."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if target.parent.name == "cells" and target.name.endswith(".tmp") and any(target.parent.glob("*.json")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)


def test_disk_full_leaves_a_consistent_folder_and_rerun_completes(tmp_path, monkeypatch, capsys):
    data = tiny_matrix(tmp_path, "m", seeds=(0,), epochs=1)
    cfg = str(write_config(tmp_path / "m.yaml", data))
    with monkeypatch.context() as m:
        m.setattr(store, "os", _DiskFullAfterFirstRecord())
        assert main(["run", cfg, "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "rerun the same command" in err and str(tmp_path / "m" / "cells") in err
    run_dir = tmp_path / "m"
    (record,) = (run_dir / "cells").glob("*.json")
    assert not list(run_dir.rglob("*.tmp"))  # nothing half-written
    assert set(pd.read_csv(run_dir / "results.csv").cell_id) == {json.loads(record.read_text())["cell_id"]}
    kept = record.read_bytes()

    assert main(["run", cfg, "--quiet", "--no-report"]) == 0
    assert record.read_bytes() == kept and len(list((run_dir / "cells").glob("*.json"))) == 2
    assert pd.read_csv(run_dir / "results.csv").cell_id.nunique() == 2
