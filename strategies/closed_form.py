"""Closed-form linear algebra shared by the frozen-feature heads (ranpac, slda, fecam, randumb).

Everything is float64 numpy. The heads split their fit in two parts, and this module keeps the two apart so
that a tuning study can pay for the first part once and for the second part per trial (issue 16):

1. **Accumulate statistics once** (cost grows with the data): :class:`RidgeStatistics` holds
   G = sum X^T X (upper triangle, BLAS ``syrk``) and Q = sum X^T Y for a ridge regression; the covariance
   heads keep class means and scatter matrices (:func:`merge_scatter` folds a batch in exactly).
2. **Solve** (cost independent of the data size):

   * one value: :meth:`RidgeStatistics.solve` (a Cholesky solve of G + lambda I, M^3/3 flops);
   * many values: :meth:`RidgeStatistics.factor` returns an :class:`EigenRidge`, one eigendecomposition
     G = V diag(s) V^T after which W(lambda) = V diag(1/(s + lambda)) V^T Q costs M^2 C flops per lambda
     (:meth:`EigenRidge.solve`), and scores of fixed inputs cost N r C per lambda once they are projected
     (:meth:`EigenRidge.project`, :meth:`EigenRidge.scores`). :func:`validation_losses` is RanPAC's per-task
     choice of lambda with one eigendecomposition for the whole grid.

   An eigendecomposition costs several Cholesky factorisations (``bench/ptm_heads.py`` measures both), so
   the factor pays off from a handful of values of lambda on.

**Re-solving a trained head** (:class:`Resolvable`): a head whose hyperparameters ``retunable`` enter only
the solve (ranpac's ``ridge`` when it is fixed, slda's ``shrinkage``, fecam's ``gamma1``/``gamma2``) exposes

* ``solver_state()``: called after ``train_experience``; a snapshot of what the solve needs at this point of
  the stream, independent of later training (ranpac: ``solver_state(factor=True)`` the eigendecomposition,
  ``factor=False`` a copy of (G, Q) re-solved by Cholesky; slda, fecam: the class statistics);
* ``resolve(state, **params)``: puts the head in the state it would have after the same experiences had it
  been trained with ``params`` (only names in ``retunable``), without seeing data.

A tuning protocol then fits once per (stream, seed) and evaluates every trial from the snapshots::

    head = cls(info, seed=seed, **fixed)
    states = []
    for exp in stream:
        head.train_experience(exp.train_view())
        states.append(head.solver_state())
    for params in trials:                      # each trial: cheap solves only
        for t, state in enumerate(states):
            head.resolve(state, **params)
            row_t = [accuracy(head, e.test) for e in stream]

The snapshots hold one M x M matrix per experience for ridge heads (memory T M^2 8 bytes); a protocol short
of memory can instead run all trials' solves at each experience before training the next one.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
import torch
from scipy.linalg.blas import dsyrk

from clbench.errors import UserError

#: RanPAC's grid of ridge values, 10^-8 .. 10^8 (RanPAC.py ``optimise_ridge_parameter``)
RIDGE_GRID: tuple[float, ...] = tuple(float(10.0 ** k) for k in range(-8, 9))


# ---------------------------------------------------------------- Gram matrices and symmetric solves


def gram_upper(X: np.ndarray, G: np.ndarray | None = None) -> np.ndarray:
    """G + X^T X on the upper triangle (BLAS ``dsyrk``, N M^2 flops); G is float64 Fortran-ordered (M, M).

    X is float64 (N, M); the strict lower triangle of the result is not meaningful.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    if G is None:
        G = np.zeros((X.shape[1], X.shape[1]), order="F")
    # X C-contiguous means X^T is Fortran-contiguous: syrk(a = X^T, trans=0) gives a a^T = X^T X without a copy
    return dsyrk(1.0, X.T, beta=1.0, c=G, trans=0, lower=0, overwrite_c=1)


def kernel_upper(X: np.ndarray) -> np.ndarray:
    """X X^T on the upper triangle (``dsyrk``, N^2 M flops), for the dual form when N < M."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    return dsyrk(1.0, X.T, trans=1, lower=0)


def symmetrize_upper(A: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose upper triangle is that of A."""
    return np.triu(A) + np.triu(A, 1).T


def eigh_psd(A_upper: np.ndarray, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition A = V diag(s) V^T of a positive semi-definite matrix given by its upper triangle.

    LAPACK ``dsyevd`` (divide and conquer) through scipy; eigenvalues below 0 (rounding) are set to 0, since
    A is PSD. ``overwrite`` lets LAPACK destroy A (saves one M x M copy).
    """
    s, V = scipy.linalg.eigh(A_upper, lower=False, driver="evd", overwrite_a=overwrite, check_finite=False)
    return np.maximum(s, 0.0), V


def solve_shifted(A_upper: np.ndarray, B: np.ndarray, shift: float) -> np.ndarray:
    """(A + shift I)^{-1} B for symmetric A (upper triangle read) by Cholesky, M^3/3 + M^2 C flops.

    Falls back to a least-squares solve when A + shift I is not numerically positive definite.
    """
    A = np.array(A_upper, dtype=np.float64, order="F", copy=True)
    A[np.diag_indices_from(A)] += shift
    try:
        c = scipy.linalg.cho_factor(A, lower=False, overwrite_a=True, check_finite=False)
        return scipy.linalg.cho_solve(c, B, check_finite=False)
    except np.linalg.LinAlgError:
        A = symmetrize_upper(np.asarray(A_upper, dtype=np.float64)) + shift * np.eye(A.shape[0])
        return scipy.linalg.lstsq(A, B)[0]


# ---------------------------------------------------------------- ridge regression


@dataclass
class EigenRidge:
    """Ridge solutions for any lambda > 0 from one eigendecomposition.

    Primal form (from G = X^T X and Q = X^T Y, or rows with N >= M): G = V diag(s) V^T and

        W(lambda) = (G + lambda I)^{-1} Q = V diag(1 / (s + lambda)) V^T Q.

    Dual form (from rows X (N, M) with N < M): K = X X^T = U diag(s) U^T and, by the push-through identity
    (X^T X + lambda I)^{-1} X^T = X^T (X X^T + lambda I)^{-1},

        W(lambda) = X^T U diag(1 / (s + lambda)) U^T Y.

    ``coef`` is V^T Q (primal) or U^T Y (dual); both forms give the same W for every lambda > 0.
    """

    s: np.ndarray  # (r,) eigenvalues, >= 0
    vectors: np.ndarray  # V (M, r) primal, U (N, r) dual
    coef: np.ndarray  # (r, C)
    rows: np.ndarray | None = None  # X (N, M) in the dual form, None in the primal form

    @classmethod
    def from_gram(cls, G_upper: np.ndarray, Q: np.ndarray) -> "EigenRidge":
        """Primal form from G (upper triangle) and Q: one M x M eigendecomposition."""
        s, V = eigh_psd(G_upper)
        return cls(s, V, V.T @ Q)

    @classmethod
    def from_rows(cls, X: np.ndarray, Y: np.ndarray) -> "EigenRidge":
        """The cheaper form for rows X (N, M) and targets Y (N, C): dual when N < M, primal otherwise."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.shape[0] < X.shape[1]:
            s, U = eigh_psd(kernel_upper(X), overwrite=True)
            return cls(s, U, U.T @ Y, rows=X)
        return cls.from_gram(gram_upper(X), X.T @ Y)

    def _weights(self, lam: float) -> np.ndarray:
        return self.coef / (self.s + lam)[:, None]

    def solve(self, lam: float) -> np.ndarray:
        """W(lambda) (M, C): M r C flops (primal) or (N r + M N) C flops (dual)."""
        inner = self.vectors @ self._weights(lam)
        return inner if self.rows is None else self.rows.T @ inner

    def project(self, X_eval: np.ndarray) -> np.ndarray:
        """P = X_eval V (primal) or X_eval X^T U (dual), so that scores(P, lambda) = X_eval W(lambda)."""
        X_eval = np.asarray(X_eval, dtype=np.float64)
        if self.rows is None:
            return X_eval @ self.vectors
        return (X_eval @ self.rows.T) @ self.vectors

    def scores(self, P: np.ndarray, lam: float) -> np.ndarray:
        """X_eval W(lambda) from the projection P of :meth:`project`: N r C flops."""
        return P @ self._weights(lam)


def validation_losses(X_fit: np.ndarray, Y_fit: np.ndarray, X_val: np.ndarray, Y_val: np.ndarray,
                      lams: Sequence[float] = RIDGE_GRID) -> np.ndarray:
    """Mean squared error of X_val W(lambda) against Y_val for each lambda, W(lambda) the ridge fit on (X_fit, Y_fit).

    loss(lambda) = mean over all entries of (X_val (X_fit^T X_fit + lambda I)^{-1} X_fit^T Y_fit - Y_val)^2,
    as RanPAC's ``optimise_ridge_parameter`` (17 ``torch.linalg.solve`` calls) but from one eigendecomposition
    of the smaller of X_fit^T X_fit and X_fit X_fit^T (:class:`EigenRidge`).
    """
    er = EigenRidge.from_rows(X_fit, Y_fit)
    P = er.project(X_val)
    return np.array([float(np.mean((er.scores(P, lam) - Y_val) ** 2)) for lam in lams])


class RidgeStatistics:
    """Sufficient statistics of a ridge regression from features X (N, M) to targets Y (N, C), float64.

    G = sum X^T X (upper triangle, Fortran order), Q = sum X^T Y, n = number of rows. Any split of the rows
    into batches gives the same G and Q (exact sums).
    """

    def __init__(self, width: int, n_out: int) -> None:
        self.G = np.zeros((width, width), order="F")
        self.Q = np.zeros((width, n_out))
        self.n = 0

    def add(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Fold rows X (N, M) with targets Y (N, C) in."""
        self.G = gram_upper(X, self.G)
        self.Q += np.asarray(X, dtype=np.float64).T @ Y
        self.n += int(X.shape[0])

    @classmethod
    def of(cls, G_upper: np.ndarray, Q: np.ndarray) -> "RidgeStatistics":
        """Statistics around existing G (upper triangle) and Q (not copied)."""
        out = cls.__new__(cls)
        out.G, out.Q, out.n = G_upper, Q, -1
        return out

    def solve(self, lam: float) -> np.ndarray:
        """W = (G + lambda I)^{-1} Q by one Cholesky factorisation."""
        return solve_shifted(self.G, self.Q, lam)

    def factor(self) -> EigenRidge:
        """One eigendecomposition of G, after which any lambda is a cheap solve (:class:`EigenRidge`)."""
        return EigenRidge.from_gram(self.G, self.Q)

    def copy(self) -> "RidgeStatistics":
        out = RidgeStatistics.__new__(RidgeStatistics)
        out.G, out.Q, out.n = self.G.copy(order="F"), self.Q.copy(), self.n
        return out

    def nbytes(self) -> int:
        return int(self.G.nbytes + self.Q.nbytes)


# ---------------------------------------------------------------- class means and scatter matrices


def merge_scatter(n_a: np.ndarray, mean_a: np.ndarray, X: np.ndarray, y: np.ndarray,
                  scatter_a: np.ndarray | MutableMapping[int, np.ndarray] | None = None,
                  pooled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fold a batch (X, y) into per-class counts, means and scatter matrices, exactly (Chan et al. 1979).

    For class k with n_a earlier samples of mean m_a and scatter S_a = sum (x - m_a)(x - m_a)^T, and n_b batch
    samples of mean m_b and scatter S_b:

        n = n_a + n_b,  m = m_a + (n_b / n)(m_b - m_a),
        S = S_a + S_b + (n_a n_b / n) (m_b - m_a)(m_b - m_a)^T.

    ``n_a`` (K,) and ``mean_a`` (K, d) are updated in place; ``scatter_a`` (K, d, d), or a dict of class to
    (d, d), per class and/or
    ``pooled`` (d, d) = sum_k S_k are updated in place when given. Returns (n, mean).
    """
    X = np.asarray(X, dtype=np.float64)
    for k in np.unique(y).tolist():
        Xk = X[y == k]
        nb = Xk.shape[0]
        mb = Xk.mean(0)
        Z = Xk - mb
        Sb = Z.T @ Z
        delta = mb - mean_a[k]
        na = n_a[k]
        n = na + nb
        between = (na * nb / n) * np.outer(delta, delta)
        if scatter_a is not None:
            scatter_a[k] += Sb + between
        if pooled is not None:
            pooled += Sb + between
        mean_a[k] += (nb / n) * delta
        n_a[k] = n
    return n_a, mean_a


def oas_shrinkage(emp_cov: np.ndarray, n_samples: float) -> float:
    """The Oracle Approximating Shrinkage coefficient (Chen et al. 2010, as scikit-learn's ``oas``).

    With S the biased covariance (d x d) of n samples, mu = tr(S)/d and alpha = mean(S^2):

        rho = min((alpha + mu^2) / ((n + 1)(alpha - mu^2 / d)), 1)   (rho = 1 when the denominator is 0).
    """
    d = emp_cov.shape[0]
    if d == 1:
        return 0.0
    alpha = float(np.mean(emp_cov ** 2))
    mu = float(np.trace(emp_cov)) / d
    num = alpha + mu ** 2
    den = (n_samples + 1) * (alpha - mu ** 2 / d)
    return 1.0 if den == 0 else min(num / den, 1.0)


def oas(emp_cov: np.ndarray, n_samples: float) -> tuple[np.ndarray, float]:
    """OAS estimate (1 - rho) S + rho (tr(S)/d) I of a biased covariance S of n samples, and rho."""
    rho = oas_shrinkage(emp_cov, n_samples)
    d = emp_cov.shape[0]
    out = (1.0 - rho) * emp_cov
    out[np.diag_indices(d)] += rho * float(np.trace(emp_cov)) / d
    return out, rho


def one_hot(y: torch.Tensor | np.ndarray, n_classes: int) -> np.ndarray:
    """Float64 one-hot rows (N, n_classes)."""
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    out = np.zeros((len(y), n_classes))
    out[np.arange(len(y)), y] = 1.0
    return out


# ---------------------------------------------------------------- re-solving a trained head


def memoized(memo: dict | None, x: torch.Tensor, compute: Any) -> Any:
    """``compute()``, or its earlier result for the same input tensor when ``memo`` is a dict.

    The key is the tensor's storage address, shape, strides and dtype; the memo keeps a reference to ``x`` so
    that the address cannot be reused by another tensor while the entry lives. A tuning protocol sets a head's
    ``feature_memo`` after fitting, so that the projections of the (fixed) test inputs are computed once for
    all trials; callers must not modify the returned value.
    """
    if memo is None:
        return compute()
    key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()), str(x.dtype))
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = (x, compute())
    return hit[1]


class Resolvable:
    """Mixin of heads whose ``retunable`` hyperparameters enter only the solve (see the module docstring)."""

    #: hyperparameters that :meth:`resolve` can change without the data
    retunable: ClassVar[tuple[str, ...]] = ()
    #: projections of fixed inputs reused across re-solves (see :func:`memoized`); None while training
    feature_memo: dict | None = None

    def solver_state(self) -> Any:  # pragma: no cover - implemented by each head
        """A snapshot of what the solve needs after the experiences trained so far."""
        raise NotImplementedError

    def resolve(self, state: Any, **params: Any) -> None:  # pragma: no cover - implemented by each head
        """Set the head as if trained on the same experiences with ``params`` (names in ``retunable``)."""
        raise NotImplementedError

    def _check_retunable(self, params: dict[str, Any]) -> None:
        bad = sorted(set(params) - set(self.retunable))
        if bad:
            raise UserError(f"{type(self).__name__} cannot re-solve for {bad} from a snapshot; "
                            f"retunable: {', '.join(self.retunable) or '(none)'}")


@dataclass
class Snapshot:
    """A head's state after some experiences: ``data`` for the solve, ``seen`` the classes seen so far."""

    data: Any
    seen: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)
