"""The run folder: damaged records run again, a changed config never mixes its cells, tables in linear time."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import stable_table, tiny_matrix, write_config

from clbench.protocols.cli import main
from clbench.protocols.config import parse_config
from clbench.protocols.runner import TableWriter, run_matrix
from clbench.results import CellRecord, read_run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny matrix (2 strategies x 2 seeds)."""
    out = tmp_path_factory.mktemp("ref")
    run_matrix(parse_config(tiny_matrix(out, "m", epochs=1)), quiet=True)
    return out / "m"


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("accuracy"),  # a valid JSON record missing a field (KeyError: 'accuracy' on every rerun before)
    lambda d: d.update(accuracy="[[0.5]]", seed="zero"),  # wrong value types (garbage rows in results.csv before)
])
def test_a_damaged_record_is_run_again_and_the_results_equal_an_uninterrupted_run(tmp_path, reference, damage, capsys):
    data = tiny_matrix(tmp_path, "m", epochs=1)
    cfg = str(write_config(tmp_path / "m.yaml", data))
    assert main(["run", cfg, "--quiet", "--no-report"]) == 0
    victim = sorted((tmp_path / "m" / "cells").glob("*.json"))[0]
    record = json.loads(victim.read_text())
    damage(record)
    victim.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match=f"cell record {victim} is not valid"):
        assert main(["run", cfg, "--no-report"]) == 0
    assert "3 already done, 1 to run" in capsys.readouterr().out
    assert CellRecord.from_dict(json.loads(victim.read_text())).ok
    assert stable_table(tmp_path / "m").equals(stable_table(reference))


def test_cells_of_an_earlier_config_are_never_mixed_into_the_tables(tmp_path, capsys):
    data = tiny_matrix(tmp_path, "m", epochs=1)
    data["strategies"] = data["strategies"][:1]
    cfg = tmp_path / "m.yaml"
    assert main(["run", str(write_config(cfg, data)), "--quiet", "--no-report"]) == 0
    data["strategies"][0]["epochs"] = 3
    data["seeds"] = [0]
    assert main(["run", str(write_config(cfg, data)), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "2 record(s)" in out and "earlier config" in out
    cells = pd.read_csv(tmp_path / "m" / "cells.csv")
    contents = read_run(tmp_path / "m")
    assert len(cells) == 1 and len(contents.current()) == 1 and len(contents.stale()) == 2
    assert contents.current()[0].spec["strategy"]["epochs"] == 3
    assert set(pd.read_csv(tmp_path / "m" / "results.csv").cell_id) == {contents.current()[0].cell_id}


def test_tables_are_rewritten_a_logarithmic_number_of_times(tmp_path, monkeypatch):
    rec = CellRecord.from_dict({"cell_id": "x", "benchmark": "b", "strategy": "s", "seed": 0, "status": "failed"})
    writes = []
    monkeypatch.setattr(TableWriter, "flush", lambda self: writes.append(len(self.rows)) or setattr(self, "written_at", len(self.rows)))
    writer = TableWriter(tmp_path, [], {}, interval=1e9)
    for i in range(1000):
        rec.cell_id = f"c{i}"
        writer.add(rec)
    assert writes == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]  # doubling: 1023 rows written for 1000 cells in all
