"""The closed-form heads on frozen features (ranpac, slda, fecam, randumb, simplecil) against batch computations
written out independently here: numpy ridge solves, pooled covariances, scikit-learn's LDA/OAS/RBFSampler and
scipy's Mahalanobis distance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance
import torch
from sklearn.covariance import OAS
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.kernel_approximation import RBFSampler
from threadpoolctl import threadpool_limits

from clbench.benchmarks.split import split_stream
from clbench.errors import UserError
from clbench.stream import TensorData
from clbench.strategies import randumb as randumb_module
from clbench.strategies.closed_form import (RIDGE_GRID, EigenRidge, RidgeStatistics, merge_scatter, oas,
                                            validation_losses)
from clbench.strategies.fecam import FeCAM
from clbench.strategies.nmc import NMC
from clbench.strategies.randumb import RanDumb
from clbench.strategies.ranpac import RanPAC
from clbench.strategies.simplecil import SimpleCIL
from clbench.strategies.slda import SLDA


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread too (conftest sets torch's): tiny LAPACK calls on a busy 2-core machine stall otherwise."""
    with threadpool_limits(1):
        yield


def _data(n: int, d: int, k: int, seed: int, shift: float = 0.0, relu: bool = False) -> TensorData:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(k, d))
    y = rng.integers(0, k, n)
    x = centres[y] + rng.normal(size=(n, d)) + shift
    if relu:
        x = np.maximum(x, 0.0)
    return TensorData(torch.from_numpy(x).float(), torch.from_numpy(y))


def _stream(n=600, d=8, k=6, n_exp=3, seed=0, **kw):
    return split_stream("toy", (_data(n, d, k, seed, **kw), _data(n // 5, d, k, seed + 100, **kw)), seed=0, n_experiences=n_exp)


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _seen_so_far(stream, t):
    """float64 features and labels of the first t+1 experiences' training data."""
    x = np.concatenate([e.train.x.double().numpy() for e in stream.experiences[: t + 1]])
    y = np.concatenate([e.train.y.numpy() for e in stream.experiences[: t + 1]])
    return x, y


# ---------------------------------------------------------------- closed_form helpers


@pytest.mark.parametrize("n_fit, m", [(120, 30), (40, 90)])  # primal (N >= M) and dual (N < M)
def test_validation_losses_equal_one_numpy_solve_per_lambda(n_fit, m):
    rng = np.random.default_rng(1)
    X, Xv = rng.normal(size=(n_fit, m)), rng.normal(size=(25, m))
    Y, Yv = np.eye(4)[rng.integers(0, 4, n_fit)], np.eye(4)[rng.integers(0, 4, 25)]
    # the dual form's numpy reference X^T X + lambda I is singular up to rounding for tiny lambda
    lams = [lam for lam in RIDGE_GRID if n_fit >= m or lam >= 1e-3]
    ours = validation_losses(X, Y, Xv, Yv, lams)
    ref = [np.mean((Xv @ np.linalg.solve(X.T @ X + lam * np.eye(m), X.T @ Y) - Yv) ** 2) for lam in lams]
    np.testing.assert_allclose(ours, ref, rtol=1e-7)
    er = EigenRidge.from_rows(X, Y)
    assert (er.rows is not None) == (n_fit < m)
    for lam in (1e-2, 1.0, 1e3):
        np.testing.assert_allclose(er.solve(lam), np.linalg.solve(X.T @ X + lam * np.eye(m), X.T @ Y), rtol=1e-7, atol=1e-12)


def test_ridge_statistics_cholesky_and_eigen_solves_equal_numpy():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(200, 40)), rng.normal(size=(200, 3))
    st = RidgeStatistics(40, 3)
    for part in np.array_split(np.arange(200), 7):
        st.add(X[part], Y[part])
    factor = st.factor()
    for lam in (1e-4, 0.1, 10.0):
        ref = np.linalg.solve(X.T @ X + lam * np.eye(40), X.T @ Y)
        assert _rel(st.solve(lam), ref) < 1e-10
        assert _rel(factor.solve(lam), ref) < 1e-10


def test_oas_equals_scikit_learn_and_merge_scatter_equals_batch_covariance():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    ref = OAS(assume_centered=True).fit(X)
    ours, rho = oas(X.T @ X / len(X), len(X))
    np.testing.assert_allclose(ours, ref.covariance_, rtol=1e-12)
    assert rho == pytest.approx(ref.shrinkage_, rel=1e-12)
    y = rng.integers(0, 3, 50)
    n, mean, scatter = np.zeros(3), np.zeros((3, 6)), np.zeros((3, 6, 6))
    for part in np.array_split(rng.permutation(50), 5):
        merge_scatter(n, mean, X[part], y[part], scatter_a=scatter)
    for k in range(3):
        np.testing.assert_allclose(scatter[k], np.cov(X[y == k].T) * ((y == k).sum() - 1), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(mean[k], X[y == k].mean(0), rtol=1e-12)


# ---------------------------------------------------------------- ranpac


def _ranpac_h(s: RanPAC, x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ s.W_rand.numpy(), 0.0)


def test_ranpac_at_a_fixed_lambda_equals_batch_ridge_after_every_experience():
    stream = _stream()
    s = RanPAC(stream.info, seed=3, projection_dim=64, ridge=0.5, batch_size=37)
    for t, exp in enumerate(stream):
        s.train_experience(exp.train_view())
        x, y = _seen_so_far(stream, t)
        H, Y = _ranpac_h(s, x), np.eye(stream.n_classes)[y]
        assert s.W_o.dtype == np.float64
        assert _rel(s.W_o, np.linalg.solve(H.T @ H + 0.5 * np.eye(64), H.T @ Y)) < 1e-9
    test = stream[0].test.x
    ref = _ranpac_h(s, test.double().numpy()) @ s.W_o
    np.testing.assert_allclose(s.predict(test).numpy(), ref.astype(np.float32), rtol=1e-5)


def test_ranpac_chooses_lambda_on_a_shuffled_80_20_split_of_each_experience():
    stream = _stream(n=500)
    s = RanPAC(stream.info, seed=5, projection_dim=48)
    # the same generator as the strategy: W first, then one permutation per experience
    g = torch.Generator().manual_seed(5)
    W = torch.randn(8, 48, generator=g, dtype=torch.float64).numpy()
    H_all, Y_all = [], []
    for exp in stream:
        s.train_experience(exp.train_view())
        perm = torch.randperm(len(exp.train), generator=g).numpy()
        H = np.maximum(exp.train.x.double().numpy()[perm] @ W, 0.0)
        Y = np.eye(stream.n_classes)[exp.train.y.numpy()[perm]]
        n_fit = int(len(H) * 0.8)
        losses = []
        for lam in RIDGE_GRID:  # the official loop: one solve per lambda on the task-local Gram
            Wl = np.linalg.solve(H[:n_fit].T @ H[:n_fit] + lam * np.eye(48), H[:n_fit].T @ Y[:n_fit])
            losses.append(np.mean((H[n_fit:] @ Wl - Y[n_fit:]) ** 2))
        H_all.append(H)
        Y_all.append(Y)
        lam = RIDGE_GRID[int(np.argmin(losses))]
        assert s.chosen_ridges[-1] == lam
        Hc, Yc = np.concatenate(H_all), np.concatenate(Y_all)
        assert _rel(s.W_o, np.linalg.solve(Hc.T @ Hc + lam * np.eye(48), Hc.T @ Yc)) < 1e-8


def test_ranpac_without_projection_uses_the_features_and_masks_unseen_classes():
    stream = _stream()
    s = RanPAC(stream.info, seed=0, projection_dim=0, ridge=1.0)
    s.train_experience(stream[0].train_view())
    x = stream[0].train.x.double().numpy()
    Y = np.eye(stream.n_classes)[stream[0].train.y.numpy()]
    assert _rel(s.W_o, np.linalg.solve(x.T @ x + np.eye(8), x.T @ Y)) < 1e-10
    scores = s.predict(stream[1].test.x)
    unseen = [c for c in range(stream.n_classes) if c not in stream[0].classes]
    assert torch.isneginf(scores[:, unseen]).all() and torch.isfinite(scores[:, list(stream[0].classes)]).all()


def test_ranpac_resolve_from_snapshots_equals_training_with_that_lambda():
    stream = _stream()
    fitted = RanPAC(stream.info, seed=1, projection_dim=40, ridge=1.0)
    states = []
    for exp in stream:
        fitted.train_experience(exp.train_view())
        states.append((fitted.solver_state(), fitted.solver_state(factor=False)))
    fresh = RanPAC(stream.info, seed=1, projection_dim=40, ridge=3e-2)
    for exp, pair in zip(stream, states):
        fresh.train_experience(exp.train_view())
        for state in pair:  # from the eigendecomposition, and from the statistics (Cholesky)
            fitted.resolve(state, ridge=3e-2)
            assert _rel(fitted.W_o, fresh.W_o) < 1e-8
            assert torch.equal(fitted.predict(stream[0].test.x).argmax(1), fresh.predict(stream[0].test.x).argmax(1))
    auto = RanPAC(stream.info, seed=1, projection_dim=40)
    assert auto.retunable == ()
    with pytest.raises(UserError, match="cannot re-solve"):
        auto.resolve(states[0][0], ridge=1.0)


def test_ranpac_is_deterministic_for_a_seed():
    stream = _stream()
    a, b, c = (RanPAC(stream.info, seed=s, projection_dim=32) for s in (4, 4, 5))
    for exp in stream:
        for s in (a, b, c):
            s.train_experience(exp.train_view())
    assert np.array_equal(a.W_o, b.W_o) and a.chosen_ridges == b.chosen_ridges
    assert not np.array_equal(a.W_rand.numpy(), c.W_rand.numpy())


# ---------------------------------------------------------------- slda


class _ShrunkEmpirical:
    """A scikit-learn covariance estimator giving (1 - eps) S + eps I (S the biased covariance of a class)."""

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def fit(self, X):
        Z = X - X.mean(0)
        self.covariance_ = (1 - self.eps) * Z.T @ Z / len(X) + self.eps * np.eye(X.shape[1])
        return self

    def get_params(self, deep=True):
        return {"eps": self.eps}


def test_exact_slda_equals_batch_lda_with_the_same_shrinkage_after_every_experience():
    stream = _stream(n=900, d=6, k=6, n_exp=2)  # 3 classes per experience (scikit-learn's binary case has one column)
    eps = 1e-2
    s = SLDA(stream.info, sigma_update="exact", base_init=False, shrinkage=eps, batch_size=50)
    for t, exp in enumerate(stream):
        s.train_experience(exp.train_view())
        x, y = _seen_so_far(stream, t)
        classes = np.unique(y)
        pooled = sum(np.cov(x[y == k].T, bias=True) * (y == k).sum() for k in classes) / len(y)
        np.testing.assert_allclose(s.sigma, pooled, rtol=1e-9, atol=1e-12)
        lda = LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=_ShrunkEmpirical(eps)).fit(x, y)
        test = np.concatenate([e.test.x.double().numpy() for e in stream])
        ours = s.predict(torch.from_numpy(test).float()).double().numpy()
        ref = lda.decision_function(test) - np.log(lda.priors_)  # SLDA has no prior term
        np.testing.assert_allclose(ours[:, classes], ref, rtol=1e-4, atol=1e-3)
        assert np.isneginf(ours[:, [c for c in range(6) if c not in classes]]).all()


def test_slda_base_init_is_oas_of_the_residuals_and_the_fixed_covariance_stays():
    stream = _stream()
    x0, y0 = _seen_so_far(stream, 0)
    for plastic in (True, False):
        s = SLDA(stream.info, plastic_cov=plastic)
        s.train_experience(stream[0].train_view())
        mu = np.stack([x0[y0 == k].mean(0) if (y0 == k).any() else np.zeros(8) for k in range(6)])
        ref = OAS(assume_centered=True).fit(x0 - mu[y0]).covariance_
        np.testing.assert_allclose(s.sigma, ref, rtol=1e-10)
        s.train_experience(stream[1].train_view())
        if not plastic:
            np.testing.assert_allclose(s.sigma, ref, rtol=1e-10)
    with pytest.raises(UserError, match="base_init"):
        SLDA(stream.info, plastic_cov=False, base_init=False)


def _slda_paper_loop(X0, y0, batches, n_classes):
    """The official recursion written sample by sample (numpy float64): fit_base, then fit per sample."""
    d = X0.shape[1]
    mu, c = np.zeros((n_classes, d)), np.zeros(n_classes)
    for k in np.unique(y0):
        mu[k], c[k] = X0[y0 == k].mean(0), (y0 == k).sum()
    t = len(X0)
    Sigma = OAS(assume_centered=True).fit(X0 - mu[y0]).covariance_
    for X, y in batches:
        for f, k in zip(X, y):
            dlt = f - mu[k]
            Sigma = (t * Sigma + np.outer(dlt, dlt) * t / (t + 1)) / (t + 1)
            mu[k] += (f - mu[k]) / (c[k] + 1)
            c[k] += 1
            t += 1
    return mu, Sigma


def test_paper_slda_equals_the_sample_by_sample_recursion_and_differs_from_the_pooled_covariance():
    stream = _stream(n=600, d=5, k=6)
    s = SLDA(stream.info, batch_size=23)
    for exp in stream:
        s.train_experience(exp.train_view())
    x0, y0 = _seen_so_far(stream, 0)
    later = [(e.train.x.double().numpy(), e.train.y.numpy()) for e in stream.experiences[1:]]
    mu, Sigma = _slda_paper_loop(x0, y0, later, 6)
    np.testing.assert_allclose(s.mu, mu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s.sigma, Sigma, rtol=1e-9)
    x, y = _seen_so_far(stream, 2)
    pooled = sum(np.cov(x[y == k].T, bias=True) * (y == k).sum() for k in np.unique(y)) / len(y)
    assert np.abs(s.sigma - pooled).max() / np.abs(pooled).max() > 0.01  # the recursion is not the pooled covariance


def test_slda_chunks_and_resolve():
    stream = _stream()
    whole, chunked = SLDA(stream.info, base_init=False), SLDA(stream.info, base_init=False)
    for exp in stream:
        whole.train_experience(exp.train_view())
        for part in np.array_split(np.arange(len(exp.train)), 3):
            sub = exp.train.subset(torch.from_numpy(part))
            chunked.train_experience(type(exp)(exp.index, exp.task_id, exp.classes, sub, exp.test).train_view())
    np.testing.assert_allclose(chunked.sigma, whole.sigma, rtol=1e-10)
    state = whole.solver_state()
    fresh = SLDA(stream.info, base_init=False, shrinkage=0.3)
    for exp in stream:
        fresh.train_experience(exp.train_view())
    whole.resolve(state, shrinkage=0.3)
    x = stream[1].test.x
    np.testing.assert_allclose(whole.predict(x).numpy(), fresh.predict(x).numpy(), rtol=1e-5)


# ---------------------------------------------------------------- fecam


def _shrink_ref(S, g1, g2):
    """FeCAM's shrink_cov, transcribed."""
    diag_mean = np.mean(np.diagonal(S))
    off = S.copy()
    np.fill_diagonal(off, 0.0)
    mask = off != 0.0
    off_mean = (off * mask).sum() / mask.sum()
    I = np.eye(S.shape[0])
    return S + g1 * diag_mean * I + g2 * off_mean * (1 - I)


def _corr_ref(S):
    sd = np.sqrt(np.diagonal(S))
    return S / (sd[:, None] * sd[None, :])


@pytest.mark.parametrize("relu", [False, True])  # signed features (Tukey off, ViT script) / non-negative (Tukey on)
def test_fecam_distances_equal_scipy_mahalanobis_with_the_same_inverse(relu):
    stream = _stream(n=900, d=6, k=4, n_exp=2, relu=relu)
    s = FeCAM(stream.info, gamma1=1.0, gamma2=0.5)
    for exp in stream:
        s.train_experience(exp.train_view())
    assert s.use_tukey == relu
    x, y = _seen_so_far(stream, 1)
    test = np.concatenate([e.test.x.double().numpy() for e in stream])[:40]
    ours = -s.predict(torch.from_numpy(test).float()).double().numpy()
    for k in range(4):
        if relu:  # ResNet code: cov of f^0.5 of raw features, test normalize((f/||f||)^0.5) - normalize(mean(f)^0.5)
            cov = np.cov(np.sqrt(x[y == k]).T)
            u = np.sqrt(test / (np.linalg.norm(test, axis=1, keepdims=True) + 1e-8))
            z = u / np.linalg.norm(u, axis=1, keepdims=True)
            m = np.sqrt(x[y == k].mean(0))
            m = m / np.linalg.norm(m)
        else:  # ViT scripts: everything on f / ||f||
            xn = x / np.linalg.norm(x, axis=1, keepdims=True)
            cov = np.cov(xn[y == k].T)
            z = test / np.linalg.norm(test, axis=1, keepdims=True)
            m = xn[y == k].mean(0)
        VI = np.linalg.pinv(_corr_ref(_shrink_ref(cov, 1.0, 0.5)))
        ref = np.array([scipy.spatial.distance.mahalanobis(zi, m, VI) for zi in z])
        np.testing.assert_allclose(np.sqrt(ours[:, k]), ref, rtol=1e-4)


def _check_common_distances(s: FeCAM, stream, t: int, cov: np.ndarray) -> None:
    x, y = _seen_so_far(stream, t)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    test = stream[0].test.x.double().numpy()[:20]
    z = test / np.linalg.norm(test, axis=1, keepdims=True)
    VI = np.linalg.pinv(cov)
    ours = -s.predict(torch.from_numpy(test).float()).double().numpy()
    for k in np.unique(y):
        ref = [scipy.spatial.distance.mahalanobis(zi, xn[y == k].mean(0), VI) for zi in z]
        np.testing.assert_allclose(np.sqrt(ours[:, k]), ref, rtol=1e-4)


@pytest.mark.parametrize("singular", [False, True])
def test_fecam_common_covariance_recursion(singular):
    stream = _stream(n=900, d=6, k=6, n_exp=3)
    if singular:  # a repeated feature: the unshrunk Sigma_1 is singular, so the distance needs the pseudo-inverse
        stream = stream.with_experiences([type(e)(e.index, e.task_id, e.classes, _dup(e.train), _dup(e.test), e.info)
                                          for e in stream])
    s = FeCAM(stream.info, covariance="common", gamma1=1.0, gamma2=1.0, tukey="off")
    cov = None
    seen: set[int] = set()
    for t, exp in enumerate(stream):
        s.train_experience(exp.train_view())
        f = exp.train.x.double().numpy()
        c_t = np.cov((f / np.linalg.norm(f, axis=1, keepdims=True)).T)
        k_old = len(seen)
        seen |= set(exp.classes)
        r = k_old / len(seen)
        cov = c_t if cov is None else r * cov + (1 - r) * _shrink_ref(c_t, 1.0, 1.0)
        np.testing.assert_allclose(s.common, cov, rtol=1e-9, atol=1e-12)
        if t == 0:
            assert (s._factor(-1)[0] == "pinv") == singular
        if t in (0, 2):
            _check_common_distances(s, stream, t, cov)


def _dup(d: TensorData) -> TensorData:
    return d.with_x(torch.cat([d.x, d.x[:, :1]], 1))


def test_fecam_tukey_needs_non_negative_features_and_resolve_equals_a_fresh_fit():
    stream = _stream()
    with pytest.raises(UserError, match="tukey: off"):
        FeCAM(stream.info, tukey="on").train_experience(stream[0].train_view())
    a = FeCAM(stream.info, gamma1=1.0)
    states = []
    for exp in stream:
        a.train_experience(exp.train_view())
        states.append(a.solver_state())
    b = FeCAM(stream.info, gamma1=5.0, gamma2=2.0)
    x = stream[2].test.x
    for exp, state in zip(stream, states):
        b.train_experience(exp.train_view())
        a.resolve(state, gamma1=5.0, gamma2=2.0)
        np.testing.assert_allclose(a.predict(x).numpy(), b.predict(x).numpy(), rtol=1e-6)


# ---------------------------------------------------------------- randumb


@pytest.mark.parametrize("keep_all", [True, False])
def test_randumb_equals_scikit_learn_lda_with_oas_after_every_experience(keep_all, monkeypatch):
    if not keep_all:
        monkeypatch.setattr(randumb_module, "MAX_KEPT_SCATTER_BYTES", 0)
    stream = _stream(n=900, d=6, k=6, n_exp=2)
    s = RanDumb(stream.info, batch_size=64)
    assert s.keep_all == keep_all
    test = np.concatenate([e.test.x.double().numpy() for e in stream])
    for t, exp in enumerate(stream):
        s.train_experience(exp.train_view())
        x, y = _seen_so_far(stream, t)
        lda = LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=OAS()).fit(x, y)
        ours = s.predict(torch.from_numpy(test).float()).double().numpy()
        np.testing.assert_allclose(ours[:, lda.classes_], lda.decision_function(test), rtol=1e-4, atol=1e-3)
        assert np.array_equal(ours.argmax(1), lda.predict(test))


def test_randumb_keeps_exact_statistics_when_classes_come_back():
    data = _data(600, 5, 4, 7)
    parts = np.array_split(np.arange(600), 3)  # every experience holds every class (domain-style)
    s = RanDumb(split_stream("toy", (data, data), seed=0, n_experiences=1).info)
    for i, p in enumerate(parts):
        from clbench.stream import TrainData, TrainView
        s.train_experience(TrainView(i, 0, (0, 1, 2, 3), TrainData(data.subset(torch.from_numpy(p)))))
    x, y = data.x.double().numpy(), data.y.numpy()
    lda = LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=OAS()).fit(x, y)
    np.testing.assert_allclose(s.predict(data.x).double().numpy(), lda.decision_function(x), rtol=1e-4, atol=1e-3)


def test_randumb_random_fourier_features_are_scikit_learns_with_gamma_from_the_first_experience():
    stream = _stream(n=600, d=10, k=4, n_exp=2)
    s = RanDumb(stream.info, seed=2, embedding="rff", rff_dim=300)
    for exp in stream:
        s.train_experience(exp.train_view())
    x0 = stream[0].train.x.double().numpy()
    sampler = RBFSampler(gamma="scale", n_components=300).fit(x0)
    assert s.gamma == pytest.approx(sampler._gamma, rel=1e-12)
    sampler.random_weights_ = np.sqrt(2 * s.gamma) * s.normal.numpy()
    sampler.random_offset_ = s.offset.numpy()
    x, y = _seen_so_far(stream, 1)
    np.testing.assert_allclose(s.embed(torch.from_numpy(x)), sampler.transform(x), rtol=1e-9, atol=1e-12)
    Z = sampler.transform(x)
    lda = LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=OAS()).fit(Z, y)
    test = stream[1].test.x
    ours = s.predict(test).double().numpy()
    np.testing.assert_allclose(ours[:, lda.classes_], lda.decision_function(sampler.transform(test.double().numpy())),
                               rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- simplecil


def test_simplecil_is_cosine_to_the_mean_of_raw_features():
    stream = _stream(shift=1.0)
    s = SimpleCIL(stream.info)
    assert isinstance(s, NMC) and (s.normalize, s.metric) == (False, "cosine")
    for exp in stream.experiences[:2]:
        s.train_experience(exp.train_view())
    x, y = _seen_so_far(stream, 1)
    protos = {k: x[y == k].mean(0) for k in np.unique(y)}
    test = stream[2].test.x.double().numpy()
    ours = s.predict(torch.from_numpy(test).float()).numpy()
    for k, p in protos.items():
        ref = 1 - np.array([scipy.spatial.distance.cosine(t, p) for t in test])
        np.testing.assert_allclose(ours[:, k], ref, rtol=1e-5, atol=1e-6)
    assert np.isneginf(ours[:, [c for c in range(6) if c not in protos]]).all()


# ---------------------------------------------------------------- clbench check


@pytest.mark.parametrize("name, params", [
    ("ranpac", {"projection_dim": 200}),
    ("ranpac", {"projection_dim": 100, "ridge": 1.0}),
    ("slda", {}),
    ("slda", {"sigma_update": "exact", "plastic_cov": False}),
    ("fecam", {}),
    ("fecam", {"covariance": "common", "gamma2": 1.0}),
    ("randumb", {}),
    ("randumb", {"embedding": "rff", "rff_dim": 256}),
    ("simplecil", {}),
])
def test_heads_pass_clbench_check(name, params):
    from clbench.protocols.check import check_strategy

    results = check_strategy(name, params)
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, failed
