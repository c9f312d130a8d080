"""The plug-in contract, stated and checked: inputs in predict's domain, predictions validated, a plug-in that
exits or fails at import, broken entry points, a plug-in next to the baselines, and `clbench check`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from helpers import child_env, run_clbench, strategy_module, tiny_matrix, write_config

from clbench.protocols.check import check_strategy, format_results
from clbench.protocols.cli import main
from clbench.protocols.config import CellSpec
from clbench.protocols.runner import execute_cell
from clbench.strategies.registry import BUILTIN

RIDGE = """
class Ridge(Strategy):
    '''A ridge classifier on exp.train.x, exactly as a new user writes it.'''

    def __init__(self, info, *, seed=0, device="cpu", alpha: float = 1.0):
        super().__init__(info, seed=seed, device=device)
        self.alpha = alpha
        self.xs, self.ys = [], []

    def train_experience(self, exp):
        self.xs.append(exp.train.x.flatten(1))
        self.ys.append(exp.train.y)
        x, y = torch.cat(self.xs).double(), torch.cat(self.ys)
        t = torch.nn.functional.one_hot(y, self.info.n_classes).double()
        self.w = torch.linalg.solve(x.T @ x + self.alpha * torch.eye(x.shape[1], dtype=torch.float64), x.T @ t)

    def predict(self, x):
        return (x.flatten(1).double() @ self.w).float()
"""

BAD = """
class Bad(Strategy):
    def __init__(self, info, *, seed=0, device="cpu", mode: str = "nan"):
        super().__init__(info, seed=seed, device=device)
        self.mode = mode

    def train_experience(self, exp):
        if self.mode == "exit":
            sys.exit(3)

    def predict(self, x):
        n, c = len(x), self.info.n_classes
        if self.mode == "nan":
            return torch.full((n, c), float("nan"))
        if self.mode == "one":
            return torch.zeros(1)
        if self.mode == "three":
            return torch.zeros(n, 3)
        return torch.full((n,), c + 4)
"""


def test_training_inputs_are_in_predicts_domain(tmp_path, monkeypatch):
    """A ridge plug-in trained on exp.train.x scored 10.2% when it got uint8 bytes (94.1% with floats)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = strategy_module(tmp_path, "ridge_plugin", RIDGE)
    rec = execute_cell(CellSpec({"name": "split_digits"}, {"name": f"{mod}:Ridge", "alpha": 1.0}, 0))
    assert rec.ok, rec.error
    assert rec.metrics["acc"] > 0.9  # joint ridge on [0, 1] pixels of the digits


@pytest.mark.parametrize("mode, reason", [
    ("nan", "non-finite scores"), ("one", "shape (1,)"), ("three", "shape (109, 3)"), ("labels", "outside 0..9"),
])
def test_predictions_that_break_the_contract_fail_the_cell(tmp_path, monkeypatch, mode, reason):
    """All-NaN scores, a 1-element tensor and (N, 3) scores on a 10-class stream were recorded "ok" at 10.2%."""
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = strategy_module(tmp_path, "bad_plugin", BAD)
    rec = execute_cell(CellSpec({"name": "split_digits"}, {"name": f"{mod}:Bad", "mode": mode}, 0))
    assert rec.status == "failed" and reason in rec.error  # the first test set of split_digits seed 0 holds 109 images
    assert "expected scores of shape" in rec.error  # names the expected shape


def test_a_plugin_calling_sys_exit_is_a_failed_cell_and_the_matrix_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = strategy_module(tmp_path, "exit_plugin", BAD)
    data = tiny_matrix(tmp_path, "m", seeds=(0,), epochs=1)
    data["strategies"] = [{"name": f"{mod}:Bad", "mode": "exit"}, data["strategies"][0]]
    cfg = str(write_config(tmp_path / "m.yaml", data))
    for _ in range(2):  # a rerun does not stop at the same place either
        assert main(["run", cfg, "--quiet", "--no-report"]) == 1
    cells = pd.read_csv(tmp_path / "m" / "cells.csv").set_index("strategy")
    assert cells.status.to_dict() == {f"{mod}:Bad": "failed", "finetune": "ok"}
    assert "sys.exit(3)" in cells.error[f"{mod}:Bad"]


@pytest.mark.slow
def test_a_plugin_failing_at_import_is_one_error_naming_module_and_exception(tmp_path):
    (tmp_path / "broken_import.py").write_text("import numpy\nraise ValueError('bad constant in my module')\n")
    cfg = str(write_config(tmp_path / "m.yaml", tiny_matrix(tmp_path, "m")))
    p = run_clbench("run", cfg, "--strategy", "broken_import:X", env=child_env(tmp_path))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "importing 'broken_import'" in p.stderr and "ValueError: bad constant in my module" in p.stderr
    p = run_clbench("--debug", "run", cfg, "--strategy", "broken_import:X", env=child_env(tmp_path))
    assert p.returncode == 2 and "Traceback" in p.stderr and 'broken_import.py", line 2' in p.stderr


def _distribution(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.mark.slow
def test_broken_and_shadowing_entry_points_are_warned_about_and_list_goes_on(tmp_path):
    _distribution(tmp_path, "brokenplug", "[clbench.strategies]\nbroken = no_such_module_xyz:Thing\n")
    _distribution(tmp_path, "shadowplug", "[clbench.strategies]\nfinetune = spy_strategy:Spy\ngood_spy = spy_strategy:Spy\n")
    p = run_clbench("list", env=child_env(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "entry point 'broken' of brokenplug 1.0" in p.stderr and "no_such_module_xyz" in p.stderr
    assert "entry point 'finetune' of shadowplug 1.0" in p.stderr and "name of a built-in" in p.stderr
    assert "good_spy" in p.stdout and "Traceback" not in p.stderr


@pytest.mark.slow
def test_a_plugin_next_to_the_baselines_from_the_command_line(tmp_path):
    data = tiny_matrix(tmp_path, "m", seeds=(0,), epochs=1)
    cfg = str(write_config(tmp_path / "m.yaml", data))
    p = run_clbench("run", cfg, "--add-strategy", "spy_strategy:Spy note=x", "--quiet", "--no-report")
    assert p.returncode == 0, p.stderr
    records = [json.loads(f.read_text()) for f in (tmp_path / "m" / "cells").glob("*.json")]
    by = {r["strategy"]: r for r in records}
    assert set(by) == {"finetune", "replay", "spy_strategy:Spy"}
    assert by["finetune"]["spec"]["strategy"]["epochs"] == 1  # the config's own values, not class defaults


SMALL = {"acil": {"buffer_size": 64}, "dsal": {"buffer_size": 64}, "gacil": {"buffer_size": 64},
         "kvb": {"n_codebooks": 8, "n_keys": 16, "key_epochs": 1, "epochs": 1},
         "fetril": {"head": "linear", "epochs": 2}, "finetune": {"hidden": [32]}, "joint": {"hidden": [32]},
         "replay": {"hidden": [32]}, "ewc": {"hidden": [32]}, "si": {"hidden": [32]}, "lwf": {"hidden": [32]},
         "linear": {"epochs": 2}, "joint_linear": {"epochs": 2}, "ranpac": {"projection_dim": 200}}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_strategy_passes_the_conformance_check(name):
    results = check_strategy(name, SMALL.get(name, {}))
    assert all(r.ok for r in results), format_results(name, results)
    assert len(results) >= 8


def test_the_conformance_check_names_what_a_broken_class_gets_wrong(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    strategy_module(tmp_path, "odd", BAD + textwrap.dedent("""
        from clbench.strategies.space import Float

        class Odd(Bad):
            search_space = {"gamma": Float(0.1, 1.0)}

            def train_experience(self, exp):
                self.noise = torch.rand(1)  # unseeded

            def predict(self, x):
                return torch.rand(len(x), self.info.n_classes)
    """))
    assert main(["check", "odd:Odd"]) == 1
    out = capsys.readouterr().out
    assert "FAIL search_space" in out and "'gamma', which is not a hyperparameter" in out
    assert main(["check", "odd:Bad", "--set", "mode=nan"]) == 1
    out = capsys.readouterr().out
    assert "FAIL class-il: trains through the loop" in out and "non-finite scores" in out
    assert main(["check", "finetune", "--set", "hidden=[16]"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "ok   class-il, one class per experience" in out
