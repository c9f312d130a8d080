"""Tuning closed-form heads by re-solving one fit (protocols/resolve.py).

The re-solved heads are checked against a batch ridge regression computed here with numpy on the head's own
random layer, and a tuning study with re-solving against the same study refitting every trial.
"""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import torch
import yaml

from clbench.benchmarks.registry import build_stream
from clbench.protocols.cli import main as cli_main
from clbench.stream import TrainData, TrainView
from clbench.strategies.analytic import ACIL, DSAL, GACIL

HT = {"name": "split_digits", "classes": [0, 1, 2, 3, 4], "n_experiences": 5, "backbone": "flatten"}
DE = {"name": "split_digits", "classes": [5, 6, 7, 8, 9], "n_experiences": 5, "backbone": "flatten"}


def train(head, stream, upto: int | None = None):
    states = []
    for exp in stream.experiences[:upto]:
        head.train_experience(TrainView(exp.index, exp.task_id, exp.classes, TrainData(exp.train)))
        states.append(head.solver_state(factor=True))
    return states


@pytest.fixture(scope="module")
def digits(data_root):
    return build_stream({"name": "split_digits", "n_experiences": 5}, 0, str(data_root))


@pytest.mark.parametrize("factor", [True, False])
@pytest.mark.parametrize("cls", [ACIL, GACIL])
def test_resolved_gamma_is_the_batch_ridge_of_the_data_seen(digits, cls, factor):
    head = cls(digits.info, seed=3, buffer_size=96, gamma=5.0)
    states = []
    for exp in digits.experiences:
        head.train_experience(TrainView(exp.index, exp.task_id, exp.classes, TrainData(exp.train)))
        states.append(head.solver_state(factor=factor))
    B = head.B.numpy()
    for t in (0, 2, 4):
        F = np.concatenate([e.train.float_x().double().reshape(len(e.train), -1).numpy() for e in digits.experiences[:t + 1]])
        y = np.concatenate([e.train.y.numpy() for e in digits.experiences[:t + 1]])
        X, Y = np.maximum(F @ B, 0.0), np.eye(10)[y]
        for gamma in (1e-2, 0.7, 300.0):
            head.resolve(states[t], gamma=gamma)
            W = np.linalg.solve(X.T @ X + gamma * np.eye(X.shape[1]), X.T @ Y)
            assert np.abs(head.W - W).max() <= 1e-8 * max(1.0, np.abs(W).max())
            assert head.seen.tolist() == [c in set(y.tolist()) for c in range(10)]


def test_dsal_compensation_values_resolve_to_a_fresh_fit(digits):
    head = DSAL(digits.info, seed=1, buffer_size=64, comp_gamma=0.1, comp_scale=0.6)
    states = train(head, digits)
    x = digits.experiences[-1].test.float_x()
    for comp_gamma, comp_scale in ((3.0, 0.2), (0.01, 1.5)):
        fresh = DSAL(digits.info, seed=1, buffer_size=64, comp_gamma=comp_gamma, comp_scale=comp_scale)
        train(fresh, digits)
        head.resolve(states[-1], comp_gamma=comp_gamma, comp_scale=comp_scale)
        assert np.abs(head.comp.W - fresh.comp.W).max() <= 1e-8 * max(1.0, np.abs(fresh.comp.W).max())
        assert torch.allclose(head.predict(x), fresh.predict(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="cannot re-solve"):
        head.resolve(states[-1], gamma=1.0)  # the residual depends on gamma: not re-solvable


def _tune(tmp_path, name, data_root, resolve: bool, n_values: int):
    gammas = [float(g) for g in np.logspace(-2, 3, n_values)]
    data = {"name": name, "output": str(tmp_path / "runs"), "seeds": [0], "data_root": str(data_root),
            "tuning": dict(HT), "evaluation": dict(DE),
            "strategies": [{"name": "acil", "buffer_size": 128, "search_space": {"gamma": gammas}}],
            "search": {"sampler": "grid", "objective": "aia", "seeds": [0, 1], "protocol": "two-phase", "resolve": resolve}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["tune", str(path), "--quiet", "--no-report"]) == 0
    run_dir = tmp_path / "runs" / name
    url = f"sqlite:///{run_dir / 'tune.db'}"
    (study,) = [optuna.load_study(study_name=n, storage=url) for n in optuna.get_all_study_names(storage=url)]
    return study.get_trials(), json.loads((run_dir / "tune.json").read_text())


@pytest.mark.parametrize("n_values", [4, 16])  # copies of (G, Q) below FACTOR_MIN_TRIALS, eigendecompositions above
def test_a_resolved_study_is_the_refitting_study_with_one_fit_per_seed(tmp_path, data_root, monkeypatch, n_values):
    fits = []
    original = ACIL.train_experience
    monkeypatch.setattr(ACIL, "train_experience", lambda self, exp: (fits.append(exp.index), original(self, exp))[1])
    plain, plain_summary = _tune(tmp_path, "plain", data_root, False, n_values)
    plain_fits = len(fits)
    fits.clear()
    resolved, resolved_summary = _tune(tmp_path, "resolved", data_root, True, n_values)
    # phase 1 refits every trial on both seeds; re-solving trains once per seed (phase 2: 1 seed, 5 experiences)
    assert plain_fits == n_values * 2 * 5 + 5
    assert len(fits) == 2 * 5 + 5
    by_params = {t.params["gamma"]: t for t in plain}
    assert len(resolved) == len(plain) == n_values
    for t in resolved:
        ref = by_params[t.params["gamma"]]
        assert t.state == ref.state == optuna.trial.TrialState.COMPLETE
        assert t.value == pytest.approx(ref.value, abs=1e-9)
        for a, b in zip(t.user_attrs["cells"], ref.user_attrs["cells"]):
            assert a["acc"] == pytest.approx(b["acc"], abs=1e-9) and a["aia"] == pytest.approx(b["aia"], abs=1e-9)
    assert resolved_summary["strategies"][0]["chosen"] == plain_summary["strategies"][0]["chosen"]


def test_rls_solver_is_not_resolved_and_its_study_refits(tmp_path, data_root, monkeypatch):
    """acil with solver: rls keeps no Gram matrix: a gamma study refits every trial instead of failing them."""
    head = ACIL(build_stream(HT, 0, str(data_root)).info, buffer_size=16, solver="rls")
    assert head.retunable == () and ACIL(head.info, buffer_size=16).retunable == ("gamma",)
    data = {"name": "rls", "output": str(tmp_path / "runs"), "seeds": [0], "data_root": str(data_root),
            "tuning": dict(HT), "evaluation": dict(DE),
            "strategies": [{"name": "acil", "buffer_size": 32, "solver": "rls", "search_space": {"gamma": [0.1, 10.0]}}],
            "search": {"sampler": "grid", "seeds": [0], "protocol": "two-phase"}}
    path = tmp_path / "rls.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["tune", str(path), "--quiet", "--no-report"]) == 0
    url = f"sqlite:///{tmp_path / 'runs' / 'rls' / 'tune.db'}"
    (name,) = optuna.get_all_study_names(storage=url)
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
