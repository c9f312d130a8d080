"""Every shipped config is valid (run configs by the run parser, tune configs by the tune parser)."""

from pathlib import Path

import pytest

from clbench.protocols.config import load_yaml, parse_config
from clbench.protocols.tune_config import parse_tune_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs():
    names = {p.stem for p in CONFIGS}
    assert {"permuted_mnist", "split_mnist", "split_cifar10_frozen", "power_law_pmnist", "reality_check"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses(path):
    data = load_yaml(path)
    if "tuning" in data:
        tc = parse_tune_config(data, default_name=path.stem)
        assert tc.strategies
    else:
        cfg = parse_config(data, default_name=path.stem)
        assert cfg.cells()
