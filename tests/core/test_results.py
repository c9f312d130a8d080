"""The cell record: one owner of what a valid record is, schema versions, and the run folder reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clbench.metrics import final_accuracy
from clbench.results import SCHEMA_VERSION, CellRecord, InvalidRecord, cell_id, config_matrix, read_run


def _ok(**over) -> dict:
    R = [[0.9, 0.1], [0.5, 0.8]]
    d = {"cell_id": "abc", "benchmark": "b", "strategy": "s", "seed": 0, "status": "ok", "accuracy": R,
         "test_sizes": [10, 30], "train_seconds": [1.0, 2.0], "eval_seconds": [0.1, 0.1], "peak_memory_mb": [10.0, 11.0],
         "state_bytes": [5, 5], "metrics": {"acc": final_accuracy(np.array(R))}}
    d.update(over)
    return d


def test_a_valid_record_round_trips_and_knows_its_seen_accuracy():
    rec = CellRecord.from_dict(_ok())
    assert rec.ok and rec.schema == SCHEMA_VERSION and rec.n_experiences == 2
    assert CellRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    # a_1 = (10 * 0.5 + 30 * 0.8) / 40, computed by hand
    assert rec.seen_accuracy().tolist() == pytest.approx([0.9, (5 + 24) / 40])


@pytest.mark.parametrize("change, reason", [
    ({"accuracy": None}, "square accuracy matrix"),
    ({"accuracy": [[0.9, 0.1]]}, "square accuracy matrix"),
    ({"accuracy": [[0.9, "x"], [0.5, 0.8]]}, "square accuracy matrix"),
    ({"accuracy": [[1.5, 0.1], [0.5, 0.8]]}, "in [0, 1]"),
    ({"seed": "0"}, "'seed'"),
    ({"status": "done"}, "'status'"),
    ({"test_sizes": [10]}, "'test_sizes' must be a list of 2 numbers"),
    ({"metrics": {"acc": 0.1}}, "ACC 0.1 is not the mean of the last row"),
    ({"metrics": []}, "'metrics' must be an object"),
    ({"schema": 99}, "schema 99"),
])
def test_a_bad_record_is_refused_with_the_reason(change, reason):
    d = _ok()
    for k, v in change.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    with pytest.raises(InvalidRecord, match=reason.replace("[", r"\[").replace("]", r"\]")):
        CellRecord.from_dict(d)


def test_first_release_records_are_read():
    d = _ok()
    d.pop("metrics")
    d["metrics"] = {"acc": final_accuracy(np.array(d["accuracy"])), "final_seen_acc": 0.5}
    rec = CellRecord.from_dict(d)  # no schema key: version 1
    assert rec.schema == SCHEMA_VERSION and rec.alloc_peak_mb == [] and rec.anytime == []
    failed = CellRecord.from_dict({"cell_id": "x", "benchmark": "b", "strategy": "s", "seed": 1, "status": "failed",
                                   "error": "boom"})
    assert not failed.ok and failed.result_rows() == []


def test_read_run_leaves_out_invalid_and_earlier_config_records_with_a_warning(tmp_path):
    run = tmp_path / "r"
    (run / "cells").mkdir(parents=True)
    b, s_new, s_old = {"name": "split_digits"}, {"name": "finetune", "epochs": 3}, {"name": "finetune", "epochs": 1}
    (run / "config.yaml").write_text(json.dumps({"benchmarks": [b], "strategies": [s_new], "seeds": [0, 1]}))
    for s, seed in ((s_new, 0), (s_old, 0), (s_old, 1)):
        cid = cell_id(b, s, seed)
        (run / "cells" / f"{cid}.json").write_text(json.dumps(_ok(cell_id=cid, seed=seed)))
    bad = run / "cells" / f"{cell_id(b, s_new, 1)}.json"
    bad.write_text(json.dumps(_ok(cell_id=bad.stem, accuracy="garbage")))
    with pytest.warns(UserWarning, match=f"cell record {bad} is not valid"):
        contents = read_run(run)
    assert [r.cell_id for r in contents.current()] == [cell_id(b, s_new, 0)]
    assert {r.cell_id for r in contents.stale()} == {cell_id(b, s_old, 0), cell_id(b, s_old, 1)}
    assert [c.seed for c in contents.missing()] == [1] and contents.invalid[0][0] == bad


def test_config_matrix_order_is_benchmark_seed_strategy():
    cfg = {"benchmarks": [{"name": "a"}], "strategies": [{"name": "x"}, {"name": "y", "label": "Y"}], "seeds": [1, 0]}
    assert [(c.strategy, c.seed) for c in config_matrix(cfg)] == [("x", 1), ("Y", 1), ("x", 0), ("Y", 0)]
    assert config_matrix({"benchmarks": "nope"}) is None
