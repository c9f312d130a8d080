"""ACIL / DS-AL / G-ACIL: weight invariance against the joint ridge solution computed independently, and the
random buffer at the official nn.Linear scale (issue 11, item 2)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from clbench.benchmarks.blurry import with_blurry
from clbench.benchmarks.registry import build_stream
from clbench.benchmarks.sources import get_source
from clbench.benchmarks.split import split_stream
from clbench.stream import TensorData
from clbench.strategies.analytic import ACIL, DSAL, GACIL


def _data(n: int, d: int, k: int, seed: int) -> TensorData:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(k, d))
    y = rng.integers(0, k, n)
    return TensorData(torch.from_numpy(centres[y] + rng.normal(size=(n, d))).float(), torch.from_numpy(y))


def _joint_ridge(strategy, xs: list[torch.Tensor], ys: list[torch.Tensor], gamma: float) -> np.ndarray:
    """(sum X^T X + gamma I)^-1 sum X^T Y with X = ReLU(f B), written out in numpy float64."""
    B = strategy.B.numpy()
    X = np.maximum(np.concatenate([x.double().numpy() for x in xs]) @ B, 0.0)
    Y = np.eye(strategy.info.n_classes)[np.concatenate([y.numpy() for y in ys])]
    return np.linalg.solve(X.T @ X + gamma * np.eye(X.shape[1]), X.T @ Y)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check_invariance(s, stream, gamma: float) -> None:
    """After every phase, W (float64) equals the joint ridge solution on all data seen, to 1e-8 relative."""
    xs, ys = [], []
    for exp in stream:
        s.train_experience(exp.train_view())
        xs.append(exp.train.x)
        ys.append(exp.train.y)
        assert s.W.dtype == np.float64
        assert _rel(s.W, _joint_ridge(s, xs, ys, gamma)) < 1e-8


@pytest.mark.parametrize("init", ["uniform", "normal"])
@pytest.mark.parametrize("solver", ["gram", "rls"])
def test_acil_weights_equal_joint_ridge_after_every_phase(solver, init):
    train, test = _data(600, 8, 6, 0), _data(60, 8, 6, 1)
    stream = split_stream("toy", (train, test), seed=0, n_experiences=3)
    _check_invariance(ACIL(stream.info, seed=3, buffer_size=96, gamma=0.1, solver=solver, batch_size=37, init=init), stream, 0.1)


def test_acil_weights_equal_a_batch_ridge_on_real_features_at_the_official_scale(data_root):
    """Digits pixels (64-d, in [0, 1]) through the default (uniform) buffer: W after every phase = the batch ridge
    computed here by numpy lstsq on the stacked system [X; sqrt(gamma) I] W = [Y; 0] (no normal equations)."""
    stream = build_stream({"name": "split_digits", "n_experiences": 3, "classes": [0, 1, 2, 3, 4, 5]}, 0, data_root)
    s = ACIL(stream.info, seed=1, buffer_size=128, gamma=0.1, batch_size=100)
    xs, ys = [], []
    for exp in stream:
        s.train_experience(exp.train_view())
        xs.append(exp.train.float_x().reshape(len(exp.train), -1).double().numpy())
        ys.append(exp.train.y.numpy())
        X = np.maximum(np.concatenate(xs) @ s.B.numpy(), 0.0)
        Y = np.eye(stream.info.n_classes)[np.concatenate(ys)]
        A = np.vstack([X, np.sqrt(0.1) * np.eye(X.shape[1])])
        T = np.vstack([Y, np.zeros((X.shape[1], Y.shape[1]))])
        W = np.linalg.lstsq(A, T, rcond=None)[0]
        assert _rel(s.W, W) < 1e-8


def test_buffer_has_nn_linear_default_scale():
    """init uniform: entries U(-1/sqrt(D), 1/sqrt(D)) (nn.Linear's kaiming_uniform_(a=sqrt(5))), by a KS test and the
    bound; the same seed gives the same B, another seed another; init normal: N(0, 1)."""
    D, w = 50, 400
    info = split_stream("toy", (_data(40, D, 4, 0), _data(8, D, 4, 1)), seed=0, n_experiences=2).info
    B = ACIL(info, seed=5, buffer_size=w).B.numpy().ravel()
    bound = 1 / np.sqrt(D)
    assert np.abs(B).max() <= bound
    assert scipy.stats.kstest(B, "uniform", args=(-bound, 2 * bound)).pvalue > 0.01
    assert np.var(B) == pytest.approx(bound**2 / 3, rel=0.02)  # 1/(3D)
    # nn.Linear itself: its default weight has the same bound
    lin = torch.nn.Linear(D, w, bias=False).weight.detach().numpy().ravel()
    assert np.abs(lin).max() <= bound and np.abs(lin).max() > 0.99 * bound
    assert np.array_equal(B, ACIL(info, seed=5, buffer_size=w).B.numpy().ravel())
    assert not np.array_equal(B, ACIL(info, seed=6, buffer_size=w).B.numpy().ravel())
    N = ACIL(info, seed=5, buffer_size=w, init="normal").B.numpy().ravel()
    assert scipy.stats.kstest(N, "norm").pvalue > 0.01
    assert ACIL.parameter_problems({"init": "gaussian"}) and not DSAL.parameter_problems({"init": "normal"})


def _saturated(s: DSAL, x: torch.Tensor) -> float:
    """Fraction of entries of DS-AL's compensation features tanh(f B) with |tanh| > 0.99."""
    return float((torch.tanh(s.projection(x)).abs() > 0.99).double().mean())


def test_dsal_tanh_branch_is_not_saturated_on_real_features(data_root):
    """Flattened digits (64-d) and Fashion-MNIST pixels (784-d): below 5% saturated entries with the default
    (official) buffer; the N(0, 1) buffer saturates far more (so this check can fail)."""
    digits = build_stream({"name": "split_digits", "n_experiences": 2}, 0, data_root)
    fm = get_source("fmnist").load(data_root).train
    fm_x = fm.float_x(slice(0, 2000)).reshape(2000, -1)
    dig_x = digits[0].train.float_x().reshape(len(digits[0].train), -1)
    for x in (dig_x, fm_x):
        info = split_stream("toy", (_data(40, x.shape[1], 4, 0), _data(8, x.shape[1], 4, 1)), seed=0, n_experiences=2).info
        official = DSAL(info, seed=0, buffer_size=1024)
        assert _saturated(official, x) < 0.05
        assert _saturated(DSAL(info, seed=0, buffer_size=1024, init="normal"), x) > 0.3


def test_gacil_weights_equal_joint_ridge_on_a_blurry_stream():
    train, test = _data(800, 8, 10, 2), _data(100, 8, 10, 3)
    blurry = with_blurry(split_stream("toy", (train, test), seed=1, n_experiences=5), {"disjoint_ratio": 0.5, "blurry_ratio": 0.3}, 1)
    mixed = [e for e in blurry if len(set(e.classes) - set(e.info["new_classes"]))]
    assert mixed, "the blurry stream must mix already-seen classes into later experiences"
    for solver in ("gram", "rls"):
        _check_invariance(GACIL(blurry.info, seed=0, buffer_size=80, gamma=100.0, solver=solver, batch_size=64), blurry, 100.0)


def test_dsal_main_stream_is_acil_and_compensation_fits_the_new_class_residual():
    train, test = _data(400, 6, 4, 4), _data(40, 6, 4, 5)
    stream = split_stream("toy", (train, test), seed=0, n_experiences=2)
    d = DSAL(stream.info, seed=0, buffer_size=48, gamma=0.1, comp_gamma=0.1, comp_scale=0.6)
    a = ACIL(stream.info, seed=0, buffer_size=48, gamma=0.1)
    for exp in stream:
        d.train_experience(exp.train_view())
        a.train_experience(exp.train_view())
    assert np.allclose(d.W, a.W, rtol=0, atol=1e-10)
    # compensation: ridge of tanh(f B) on the residual of each phase, old-class columns zeroed, written out here
    B = d.B.numpy()
    Xc, R = [], []
    seen: set[int] = set()
    W_main = None
    xs, ys = [], []
    for exp in stream:
        xs.append(exp.train.x)
        ys.append(exp.train.y)
        W_main = _joint_ridge(d, xs, ys, 0.1)
        f = exp.train.x.double().numpy()
        res = np.eye(4)[exp.train.y.numpy()] - np.maximum(f @ B, 0) @ W_main
        new = set(exp.train.y.tolist()) - seen
        seen |= new
        res[:, [c for c in range(4) if c not in new]] = 0.0
        Xc.append(np.tanh(f @ B))
        R.append(res)
    Xc_all, R_all = np.concatenate(Xc), np.concatenate(R)
    Wc = np.linalg.solve(Xc_all.T @ Xc_all + 0.1 * np.eye(48), Xc_all.T @ R_all)
    assert _rel(d.comp.W, Wc) < 1e-8
    x = test.x
    expected = np.maximum(x.double().numpy() @ B, 0) @ W_main + 0.6 * np.tanh(x.double().numpy() @ B) @ Wc
    assert np.allclose(d.predict(x).numpy(), expected, atol=1e-4)


def test_acil_and_gacil_learn_online_in_chunks_with_the_same_result():
    """With the loop's eval_period (chunks of 50 samples) gacil records anytime accuracy and ends with the joint
    ridge W of the whole stream, the same accuracy matrix as without chunks; dsal is not online."""
    from clbench.protocols.loop import run_stream
    from clbench.results import CellRecord

    train, test = _data(400, 8, 6, 6), _data(60, 8, 6, 7)
    blurry = with_blurry(split_stream("toy", (train, test), seed=2, n_experiences=3), {"disjoint_ratio": 0.5, "blurry_ratio": 0.3}, 2)
    assert ACIL.online and GACIL.online and not DSAL.online
    chunked = GACIL(blurry.info, seed=0, buffer_size=64)
    rec = run_stream(chunked, blurry, CellRecord("t", "toy", "gacil", 0), eval_period=50)
    whole = GACIL(blurry.info, seed=0, buffer_size=64)
    ref = run_stream(whole, blurry, CellRecord("t", "toy", "gacil", 0))
    assert len(rec.anytime) == sum(-(-len(e.train) // 50) for e in blurry) and not ref.anytime
    W = _joint_ridge(chunked, [e.train.x for e in blurry], [e.train.y for e in blurry], 100.0)
    assert _rel(chunked.W, W) < 1e-8 and _rel(whole.W, W) < 1e-8
    assert rec.accuracy == ref.accuracy
