"""clbench tune: the two-phase protocol, D_HT/D_E separation, and that the search finds a known best value.

Streams: scikit-learn digits, classes 0-4 for tuning (D_HT) and 5-9 for evaluation (D_E). Strategies:
the toy nearest-class-mean of ``tune_toys`` (known best values, milliseconds per trial), and a small
finetune once. Trials go to a real Optuna SQLite storage in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from clbench.errors import UserError
from clbench.protocols.cli import main as cli_main
from clbench.protocols.runner import StreamCache
from clbench.protocols.search import grid_of, space_problems
from clbench.protocols.tune import data_errors, run_tune
from clbench.protocols.tune_config import parse_tune_config
from clbench.strategies.baselines import Finetune
from clbench.strategies.space import Choice, Float, Int

TOY = "tune_toys:ToyNCM"
HT = {"name": "split_digits", "classes": [0, 1, 2, 3, 4], "n_experiences": 5}
DE = {"name": "split_digits", "classes": [5, 6, 7, 8, 9], "n_experiences": 5}


def config(tmp_path: Path, strategies: list, search: dict, seeds=(0, 1), **kw) -> dict:
    return {"name": "t", "output": str(tmp_path / "runs"), "seeds": list(seeds), "tuning": dict(HT), "evaluation": dict(DE),
            "strategies": strategies, "search": search, **kw}


def load_trials(run_dir: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Every study in the run folder's SQLite storage, read back with Optuna itself."""
    url = f"sqlite:///{run_dir / 'tune.db'}"
    return {name: optuna.load_study(study_name=name, storage=url).get_trials()
            for name in optuna.get_all_study_names(storage=url)}


def test_two_phase_runs_each_strategy_once_per_seed_and_never_sees_d_e(tmp_path, data_root):
    strategies = [
        {"name": TOY, "label": "toy_free", "knob": 0.3, "search_space": {"shift": [-1, 0, 2]}},
        {"name": TOY, "label": "toy_bad", "knob": 0.9, "search_space": {"shift": [0, 1]}},
        {"name": "finetune", "epochs": 2, "hidden": [32], "batch_size": 64, "search_space": {"lr": [0.02, 0.2]}},
    ]
    data = config(tmp_path, strategies, {"sampler": "grid", "objective": "acc", "seeds": [3]}, data_root=str(data_root))
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["tune", str(path), "--quiet", "--no-report"]) == 0
    run_dir = tmp_path / "runs" / "t"
    summary = json.loads((run_dir / "tune.json").read_text())
    cells = [json.loads(p.read_text()) for p in sorted((run_dir / "cells").glob("*.json"))]

    # phase 2: exactly one cell per strategy and evaluation seed, all on D_E (original classes 5-9)
    assert sorted((c["strategy"], c["seed"]) for c in cells) == sorted((s, seed) for s in ("toy_free", "toy_bad", "finetune") for seed in (0, 1))
    assert all(sorted(c["stream"]["params"]["classes"]) == DE["classes"] for c in cells)

    studies = load_trials(run_dir)
    tuning = {n.split("/")[2]: t for n, t in studies.items() if "/tuning/" in n}
    conventional = {n.split("/")[2]: t for n, t in studies.items() if "/conventional/" in n}
    assert set(tuning) == set(conventional) == {"toy_free", "toy_bad", "finetune"}
    for row in summary["strategies"]:
        label, trials = row["strategy"], tuning[row["strategy"]]
        # every phase-1 cell ran on D_HT (classes 0-4) with the tuning seed only
        for t in trials:
            assert t.user_attrs["data"] == "D_HT"
            assert all(sorted(c["classes"]) == HT["classes"] and c["seed"] == 3 for c in t.user_attrs["cells"])
        # the chosen values are the best D_HT trial's, whatever happened on D_E
        best = max(trials, key=lambda t: (t.value, -t.number))
        assert row["chosen"] == best.params and row["phase1_score"] == best.value
        phase2 = [c for c in cells if c["strategy"] == label]
        assert all(all(c["spec"]["strategy"][k] == v for k, v in best.params.items()) for c in phase2)
        # the conventional studies on D_E start only after the last phase-2 cell finished
        assert all(t.user_attrs["data"] == "D_E" for t in conventional[label])
        assert min(t.datetime_start.timestamp() for t in conventional[label]) >= max(c["finished"] for c in cells) - 1e-3
        assert row["conventional_score"] == max(t.value for t in conventional[label])
    # the known-best shift is found on D_HT; the toy with the bad knob ranks below the free one
    free = next(r for r in summary["strategies"] if r["strategy"] == "toy_free")
    assert free["chosen"] == {"shift": 0} and free["phase1_score"] > 0.8
    assert summary["rankings"]["two_phase"].index("toy_free") < summary["rankings"]["two_phase"].index("toy_bad")
    tau = summary["kendall_tau"]["two_phase_vs_conventional"]
    assert tau["n"] == 3 and -1.0 <= tau["tau"] <= 1.0
    table = (run_dir / "tune.csv").read_text().splitlines()
    assert table[0].startswith("strategy,") and len(table) == 4
    assert (run_dir / "results.csv").exists() and (run_dir / "trials.csv").exists()

    # rerunning the same command adds no cell and no trial (resume, never a second phase-2 run)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (run_dir / "cells").glob("*.json")}
    n_trials = {k: len(v) for k, v in load_trials(run_dir).items()}
    assert cli_main(["tune", str(path), "--quiet", "--no-report"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "cells").glob("*.json")} == mtimes
    assert {k: len(v) for k, v in load_trials(run_dir).items()} == n_trials


def test_tpe_finds_known_best_float_and_pruning_stops_bad_trials(tmp_path, data_root):
    strategies = [{"name": TOY, "shift": 0, "n_trials": 16}]
    shared = f"sqlite:///{tmp_path / 'shared.db'}"  # a user-given SQLAlchemy URL instead of the run folder's file
    search = {"sampler": "tpe", "objective": "aia", "seeds": [0], "protocol": "two-phase",
              "pruning": {"after": 2, "startup_trials": 3}, "storage": shared}
    tc = parse_tune_config(config(tmp_path, strategies, search, seeds=[0], data_root=str(data_root)))
    summary = run_tune(tc, quiet=True)
    assert not (tmp_path / "runs" / "t" / "tune.db").exists()
    assert len(optuna.load_study(study_name=summary["strategies"][0]["tuning"]["study"], storage=shared).trials) >= 16
    row = summary["strategies"][0]
    assert abs(row["chosen"]["knob"] - 0.3) < 0.08  # best by construction: knob = 0.3
    states = [t["state"] for t in row["tuning"]["trials"]]
    assert states.count("COMPLETE") + states.count("PRUNED") == 16 and "PRUNED" in states
    pruned = [t for t in row["tuning"]["trials"] if t["state"] == "PRUNED"]
    assert all(len(t["intermediate"]) <= 2 for t in pruned)  # stopped within the first 2 experiences
    assert row["conventional"] is None and summary["kendall_tau"]["two_phase_vs_conventional"]["tau"] is None


SUBSET = {"name": "clbench.benchmarks.subsets:permuted_mnist_subset", "n_experiences": 2, "train_per_task": 100,
          "test_per_task": 50}


@pytest.mark.parametrize("tuning, evaluation, message", [
    # class 5 of the digits: 127 training and 55 test images (sklearn's digits hold no duplicate image)
    ({"name": "split_digits", "classes": [0, 1, 2, 3, 5]}, {"name": "split_digits", "classes": [5, 6, 7, 8, 9]},
     "share 182 sample(s) by content"),
    # classes 5-9: 627 training and 269 test images
    ({"name": "split_digits", "n_experiences": 10}, {"name": "split_digits", "classes": [5, 6, 7, 8, 9]}, "share 896 sample(s)"),
    ({"name": "permuted_digits"}, {"name": "split_digits", "classes": [5, 6, 7, 8, 9]}, "share 896 sample(s)"),
    # the same MNIST images under another name, sub-sampled and permuted: refused by content, not by name
    (SUBSET, {"name": "permuted_mnist", "n_experiences": 2}, "share 150 sample(s)"),
])
def test_tuning_and_evaluation_sharing_samples_are_refused_by_content(tmp_path, data_root, tuning, evaluation, message):
    data = config(tmp_path, [{"name": "finetune"}], {}, data_root=str(data_root))
    data["tuning"], data["evaluation"] = tuning, evaluation
    tc = parse_tune_config(data)
    text = "\n".join(data_errors(tc, StreamCache(4)))
    assert message in text and "fix:" in text
    with pytest.raises(UserError, match="cannot be used together"):
        run_tune(tc, quiet=True)
    assert not (tmp_path / "runs" / "t").exists()  # nothing written


def test_disjoint_classes_or_other_dataset_are_accepted(tmp_path, data_root):
    tc = parse_tune_config(config(tmp_path, [{"name": "replay", "epochs": 1, "buffer_size": 200}], {"sampler": "random", "n_trials": 3}))
    assert data_errors(tc, StreamCache(4)) == []
    other = config(tmp_path, [{"name": "finetune"}], {}, data_root=str(data_root))
    other["tuning"], other["evaluation"] = {"name": "split_fmnist"}, {"name": "split_mnist"}
    assert data_errors(parse_tune_config(other), StreamCache(4)) == []
    assert tc.tuning == HT and tc.run.benchmarks == [DE] and tc.strategies[0].budget == 3
    assert set(tc.strategies[0].space) == {"lr", "batch_size"}  # fixed epochs and buffer_size are not searched


def test_different_scenarios_are_refused_before_any_trial(tmp_path, data_root):
    data = config(tmp_path, [{"name": TOY}], {"sampler": "random", "n_trials": 2}, data_root=str(data_root))
    data["evaluation"] = {"name": "split_digits", "classes": [5, 6, 7, 8, 9], "n_experiences": 1}
    tc = parse_tune_config(data)
    with pytest.raises(UserError, match="5 experiences, D_E has 1"):
        run_tune(tc, quiet=True)
    assert not (tmp_path / "runs" / "t").exists()  # no trial, nothing written


def test_search_space_overrides_fixed_values_and_errors():
    over = {"momentum": [0.0, 0.9], "lr": {"low": 1e-3, "high": 0.1, "log": True}}
    space, errors = space_problems(Finetune, over, {"epochs": 2}, "s")
    assert errors == []
    assert space == {"lr": Float(0.001, 0.1, True), "batch_size": Choice([32, 64, 128, 256]), "momentum": Choice([0.0, 0.9])}
    assert "not a hyperparameter" in space_problems(Finetune, {"gamma": [1, 2]}, {}, "s")[1][0]
    assert "both fixed" in space_problems(Finetune, {"lr": [0.1]}, {"lr": 0.1}, "s")[1][0]
    # range ends and choices are checked against the declared constraints (no trial can draw a bad value)
    assert "the value -1.0 is not valid (lr must be a finite number > 0" in space_problems(Finetune, {"lr": {"low": -1.0, "high": 1.0}}, {}, "s")[1][0]
    assert "optimizer" in space_problems(Finetune, {"optimizer": ["sgd", "rmsprop"]}, {}, "s")[1][0]
    with pytest.raises(UserError, match="grid search needs a finite list for 'lr'"):
        grid_of(space, "s")
    assert grid_of({"epochs": Int(1, 3), "b": Choice([[1, 2], [3]])}, "s") == {"epochs": [1, 2, 3], "b": ["[1, 2]", "[3]"]}


def test_search_space_numbers_as_people_write_them(tmp_path):
    text = ("seeds: [0]\ntuning: {name: split_digits, classes: [0, 1, 2, 3, 4]}\n"
            "evaluation: {name: split_digits, classes: [5, 6, 7, 8, 9]}\n"
            "strategies:\n  - {name: finetune, search_space: {lr: {low: 1e-2, high: 1e-1, log: true}}}\n")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    from clbench.protocols.config import load_yaml

    tc = parse_tune_config(load_yaml(path))
    assert tc.strategies[0].space["lr"] == Float(0.01, 0.1, True)


def test_bad_search_block_lists_every_mistake(tmp_path):
    data = config(tmp_path, [{"name": "finetune", "search_space": {"lr": "big"}}],
                  {"sampler": "bayes", "objective": "loss", "n_trials": 0, "colour": 1})
    with pytest.raises(UserError) as err:
        parse_tune_config(data)
    text = str(err.value)
    for part in ("search.sampler", "search.objective", "search.n_trials", "unknown key 'colour'", "search_space.lr"):
        assert part in text
