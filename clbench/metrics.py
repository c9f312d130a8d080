"""Continual-learning metrics on an accuracy matrix.

``R[i, j]`` is the accuracy on the test set of experience ``j`` after training on experience ``i``
(``T`` experiences, 0-based). All functions are pure and take the matrix as a 2-D array. An experience
without test data (e.g. a blurry stream's experience that brings no new class) has NaN in its column and is
left out of every mean (not counted as 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _R(R: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"accuracy matrix must be square T x T, got shape {R.shape}")
    return R


def _nanmean(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def final_accuracy(R) -> float:
    r"""ACC = (1/T) \sum_j R[T-1, j]: mean accuracy over all experiences after the last one."""
    R = _R(R)
    return _nanmean(R[-1])


def seen_accuracy(R, test_sizes: Sequence[int] | None = None) -> np.ndarray:
    r"""a_i = accuracy on the union of the test sets seen after step i.

    a_i = \sum_{j<=i} n_j R[i, j] / \sum_{j<=i} n_j with n_j the size of test set j (equal weights
    when ``test_sizes`` is None). In class-IL this is the accuracy over all seen classes' test data.
    """
    R = _R(R)
    T = R.shape[0]
    n = np.ones(T) if test_sizes is None else np.asarray(test_sizes, dtype=float)
    n = np.where(np.isnan(R).all(0), 0.0, n)  # an experience without test data weighs nothing

    def a(i: int) -> float:
        w = n[: i + 1].sum()
        return float(np.nansum(R[i, : i + 1] * n[: i + 1]) / w) if w > 0 else float("nan")

    return np.array([a(i) for i in range(T)])


def average_incremental_accuracy(R, test_sizes: Sequence[int] | None = None) -> float:
    r"""AIA (iCaRL) = (1/T) \sum_i a_i with a_i from :func:`seen_accuracy`; the base step i=0 counts."""
    return _nanmean(seen_accuracy(R, test_sizes))


def backward_transfer(R) -> float:
    r"""BWT (GEM) = 1/(T-1) \sum_{i<T-1} (R[T-1, i] - R[i, i]); NaN for T = 1."""
    R = _R(R)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return _nanmean([R[-1, i] - R[i, i] for i in range(T - 1)])


def forward_transfer(R, baseline: Sequence[float]) -> float:
    r"""FWT (GEM) = 1/(T-1) \sum_{i>=1} (R[i-1, i] - b_i), b_i = accuracy of the untrained model on task i."""
    R = _R(R)
    T = R.shape[0]
    b = np.asarray(baseline, dtype=float)
    if T < 2:
        return float("nan")
    return _nanmean([R[i - 1, i] - b[i] for i in range(1, T)])


def forgetting(R) -> float:
    r"""F (Chaudhry et al. 2018) = mean_{j<T-1} f_j, f_j = max_{l<T-1} R[l, j] - R[T-1, j].

    As in the paper the max runs over all earlier steps l (for j > l the entry is the accuracy on a
    not-yet-trained experience, which is at most chance in class-IL); NaN for T = 1.
    """
    R = _R(R)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return _nanmean([np.nanmax(R[: T - 1, j]) - R[T - 1, j] if not np.isnan(R[: T - 1, j]).all() else np.nan
                     for j in range(T - 1)])


def intransigence(R, joint_accuracy: Sequence[float]) -> np.ndarray:
    r"""I_k = a*_k - R[k, k], with a*_k the accuracy of a model trained jointly on experiences 0..k."""
    R = _R(R)
    return np.asarray(joint_accuracy, dtype=float) - np.diag(R)


def last_seen_accuracy(R, test_sizes: Sequence[int] | None = None) -> float:
    r"""A_last (generalized CIL): accuracy on the test data of every experience seen, after the last step,
    weighted by test-set size: a_{T-1} of :func:`seen_accuracy`. Equals ACC only when the test sets have equal sizes.

    (A_avg, the mean of a_i over the experience ends, is :func:`average_incremental_accuracy`.)
    """
    return float(seen_accuracy(R, test_sizes)[-1])


def anytime_accuracy(points: Sequence[Sequence[float]]) -> float:
    r"""A_auc (Si-Blurry, Moon et al. 2023): the mean of the accuracies on the seen classes' test data measured
    every ``eval_period`` training samples, A_auc = (1/K) \sum_k acc(n_k) over the K evaluation points
    ``[n_k samples seen, acc]``; NaN without points."""
    if not len(points):
        return float("nan")
    return float(np.mean([p[1] for p in points]))


def summary_metrics(R, test_sizes: Sequence[int] | None = None, baseline: Sequence[float] | None = None,
                    anytime: Sequence[Sequence[float]] = ()) -> dict[str, float]:
    """All scalar metrics of one cell."""
    return {
        "acc": final_accuracy(R),
        "aia": average_incremental_accuracy(R, test_sizes),
        "a_last": last_seen_accuracy(R, test_sizes),
        "a_auc": anytime_accuracy(anytime),
        "bwt": backward_transfer(R),
        "forgetting": forgetting(R),
        "fwt": forward_transfer(R, baseline) if baseline is not None else float("nan"),
    }
