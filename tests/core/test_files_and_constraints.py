"""YAML read as people write it, writes that fail with one clear message, and declared constraints."""

from __future__ import annotations

import errno
import os

import pytest

from clbench import files
from clbench.constraints import AnyOf, Interval, ListOf, NoneValue, Options, from_annotation, problems
from clbench.errors import UserError


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("1e6", 1e6), ("1.0e9", 1e9), ("-2E-2", -0.02), (".5", 0.5),
                                         ("3", 3), ("1_000", 1000), ("v1e3", "v1e3"), ("1.2.3", "1.2.3")])
def test_every_number_people_write_is_a_number(text, value):
    got = files.load_yaml_text(f"x: {text}")["x"]
    assert got == value and type(got) is type(value)


def test_a_failed_write_names_the_path_the_reason_and_the_fix(tmp_path, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"cannot write {blocker}.*Fix: .*folder"):
        files.atomic_write_text(blocker / "inside.txt", "y")

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    target = tmp_path / "ok" / "t.txt"
    with pytest.raises(UserError, match=f"cannot write {target}: Read-only file system.*Fix: the file system is read-only"):
        files.atomic_write_text(target, "y")
    assert not target.exists()


def test_constraints_name_the_value_and_the_rule():
    c = {"epochs": Interval(int, 0), "lr": Interval(float, 0, None, "neither"), "opt": Options("sgd", "adam"),
         "hidden": ListOf(Interval(int, 1)), "n": AnyOf(NoneValue(), Interval(int, 1))}
    assert problems({"epochs": 1.5, "lr": 0, "opt": "rmsprop", "hidden": [4, 0], "n": None}, c) == [
        "epochs must be an integer >= 0, got 1.5",
        "lr must be a finite number > 0, got 0",
        "opt must be one of 'sgd', 'adam', got 'rmsprop'",
        "hidden must be a list of items that are each an integer >= 1: item 1 is not, got 0",
    ]
    assert problems({"epochs": True, "lr": float("nan")}, c) == ["epochs must be an integer >= 0, got True",
                                                                  "lr must be a finite number > 0, got nan"]
    assert from_annotation(float, 0.1).problem("0.1") and from_annotation("int | None", None).problem(None) is None
