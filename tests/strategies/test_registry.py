"""Strategy lookup: built-in names, module:Class, the clbench.strategies entry-point group."""

from pathlib import Path

import pytest

from clbench.errors import UserError
from clbench.strategies import Strategy, resolve_strategy, strategy_names
from clbench.strategies.registry import BUILTIN


def test_every_builtin_resolves_to_a_strategy_with_a_search_space():
    for name in BUILTIN:
        cls = resolve_strategy(name)
        assert issubclass(cls, Strategy), name
        hp = cls.hyperparameters()
        assert set(cls.search_space) <= set(hp), f"{name}: search space names unknown hyperparameters"


def test_entry_point_group(tmp_path, monkeypatch):
    dist = tmp_path / "myplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clbench.strategies]\nmy_spy = spy_strategy:Spy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    assert "my_spy" in strategy_names()
    assert resolve_strategy("my_spy").__name__ == "Spy"


def test_module_path_and_errors(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    assert resolve_strategy("spy_strategy:Spy").__name__ == "Spy"
    with pytest.raises(UserError, match="is not a subclass of clbench.strategies.Strategy"):
        resolve_strategy("spy_strategy:NotAStrategy")
    with pytest.raises(UserError, match="has no class 'Nope'"):
        resolve_strategy("spy_strategy:Nope")
    with pytest.raises(UserError, match="cannot import 'no_such_module_xyz'"):
        resolve_strategy("no_such_module_xyz:Cls")
    with pytest.raises(UserError, match="valid names: .*finetune"):
        resolve_strategy("finetunee")
