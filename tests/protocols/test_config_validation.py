"""Every bad value is refused up front (exit 2, one message per mistake, nothing written); numbers as people write them."""

from __future__ import annotations

import pytest
from helpers import tiny_matrix, write_config

from clbench.protocols.cli import main
from clbench.protocols.config import load_yaml, parse_config

FT = {"name": "finetune", "hidden": [16]}


@pytest.mark.parametrize("change, message", [
    ({"strategies": [{**FT, "epochs": 1.5}]}, "epochs must be an integer >= 0, got 1.5"),
    ({"strategies": [{**FT, "optimizer": "rmsprop"}]}, "optimizer must be one of 'sgd', 'adam', got 'rmsprop'"),
    ({"strategies": [{**FT, "model": "transformer"}]}, "model must be one of 'auto', 'mlp', 'resnet', got 'transformer'"),
    ({"strategies": [{**FT, "dropout": 5.0}]}, "dropout must be a finite number >= 0 and < 1, got 5.0"),
    ({"strategies": [{**FT, "batch_size": 0}]}, "batch_size must be an integer >= 1, got 0"),
    ({"seeds": [2**64]}, "seeds must be a list of items that are each an integer >= 0 and <= 2147483647: item 0 is not, got 18446744073709551616"),
    ({"benchmarks": [{"name": "split_digits", "classes": [0, 12]}]}, "classes [12] are not in the dataset (it has classes 0..9)"),
    ({"benchmarks": [{"name": "split_digits", "classes": [1, 1, 2, 3, 4]}]}, "classes must be null or a list"),
    ({"benchmarks": [{"name": "split_digits", "class_order": [0, 1, 2]}]}, "class_order must be a permutation of the class labels 0..9"),
    ({"timeout": True}, "timeout must be null or a finite number > 0, got True"),
    ({"workers": True}, "workers must be an integer >= 1, got True"),
    ({"device": "gpu"}, "device must be cpu, cuda, cuda:N or mps, got 'gpu'"),
    ({"eval_period": 0}, "eval_period must be null or an integer >= 1, got 0"),
])
def test_bad_values_are_refused_before_anything_runs(tmp_path, capsys, change, message):
    data = {**tiny_matrix(tmp_path, "m"), **change}
    assert main(["run", str(write_config(tmp_path / "m.yaml", data)), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_every_mistake_is_listed_at_once(tmp_path, capsys):
    data = {**tiny_matrix(tmp_path, "m"), "workers": 0, "strategies": [{**FT, "lr": -1, "epochs": "two"}]}
    assert main(["run", str(write_config(tmp_path / "m.yaml", data)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n  - ") == 3 and "lr must be" in err and "epochs must be" in err and "workers" in err


def test_a_nan_timeout_from_the_command_line_is_refused(tmp_path, capsys):
    cfg = str(write_config(tmp_path / "m.yaml", tiny_matrix(tmp_path, "m")))
    assert main(["run", cfg, "--timeout", "nan", "--quiet"]) == 2
    assert "timeout must be null or a finite number > 0, got nan" in capsys.readouterr().err


def test_numbers_as_people_write_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("benchmarks: [{name: split_digits}]\nstrategies:\n  - {name: finetune, lr: 1e-3, weight_decay: 5E-4}\n"
                    "timeout: 1e3\n")
    cfg = parse_config(load_yaml(path))
    assert cfg.strategies[0]["lr"] == 0.001 and cfg.strategies[0]["weight_decay"] == 0.0005 and cfg.timeout == 1000.0


def test_add_strategy_keeps_the_config_entries_and_reads_numbers(tmp_path):
    from clbench.protocols.cli import build_parser
    from clbench.protocols.cli.common import apply_overrides

    data = tiny_matrix(tmp_path, "m")
    args = build_parser().parse_args(["run", "x.yaml", "--add-strategy", "spy_strategy:Spy note=hi", "--add-strategy",
                                      "finetune lr=1e-3 hidden=[8] label=small", "--timeout", "2e2"])
    cfg = parse_config(apply_overrides(data, args))
    assert [s.get("label", s["name"]) for s in cfg.strategies] == ["finetune", "replay", "spy_strategy:Spy", "small"]
    assert cfg.strategies[0]["epochs"] == 2  # the config's own values are kept
    assert cfg.strategies[3]["lr"] == 0.001 and cfg.strategies[3]["hidden"] == [8] and cfg.timeout == 200.0
