"""Statistics across seeds and benchmarks: confidence intervals, paired tests, critical-difference ranks.

All functions are pure; scipy is imported inside them (no import-time work).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values with a two-sided Student-t confidence interval ``[low, high]``."""

    mean: float
    half_width: float
    n: int
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanCI:
    r"""Mean and two-sided Student-t confidence interval over seeds.

    For values x_1..x_n (NaN dropped): \bar x = (1/n) \sum x_i,
    s = sqrt(\sum (x_i - \bar x)^2 / (n - 1)), half-width h = t_{1-(1-c)/2, n-1} * s / sqrt(n),
    interval [\bar x - h, \bar x + h]. With n = 1 the half-width is NaN (no interval from one seed);
    with n = 0 the mean is NaN too.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), 0, confidence)
    m = float(x.mean())
    if n == 1:
        return MeanCI(m, float("nan"), 1, confidence)
    s = float(x.std(ddof=1))
    t = float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1))
    return MeanCI(m, t * s / np.sqrt(n), n, confidence)


@dataclass(frozen=True)
class Aggregate:
    """Mean over seeds with its spreads: sample standard deviation, t-based CI half-width, min and max.

    The one aggregation over seeds of clbench: the terminal summary, the tables and the report all use it
    and say which spread they show (see :data:`SPREADS`).
    """

    mean: float
    std: float
    ci: float
    n: int
    min: float
    max: float
    confidence: float = 0.95

    def spread(self, kind: str) -> float:
        """Half-width of the chosen spread (NaN with fewer than two values): ``std`` or ``ci``."""
        if kind == "std":
            return self.std
        if kind == "ci":
            return self.ci
        raise ValueError(f"unknown spread {kind!r}; valid: {', '.join(SPREADS)}")


#: how each spread is named wherever a mean ± spread is shown
SPREADS = {"std": "mean ± std over seeds (sample standard deviation)",
           "ci": "mean ± 95% CI over seeds (Student t, n−1 d.o.f.)"}


def aggregate(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Aggregate:
    r"""Mean, sample standard deviation s = sqrt(\sum (x_i - \bar x)^2 / (n - 1)), Student-t CI half-width
    t_{1-(1-c)/2, n-1} s / sqrt(n), minimum and maximum of the non-NaN ``values``.

    One value: std and CI are NaN (no spread from one seed); no value: everything NaN.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    ci = mean_ci(x, confidence)
    if x.size == 0:
        return Aggregate(float("nan"), float("nan"), float("nan"), 0, float("nan"), float("nan"), confidence)
    std = float(x.std(ddof=1)) if x.size > 1 else float("nan")
    return Aggregate(ci.mean, std, ci.half_width, int(x.size), float(x.min()), float(x.max()), confidence)


def format_aggregate(a: Aggregate, spread: str = "std", scale: float = 1.0, decimals: int = 2) -> str:
    """``"12.34 ± 0.56"`` (``"12.34"`` with one value, ``"—"`` with none)."""
    if a.n == 0 or math.isnan(a.mean):
        return "—"
    h = a.spread(spread)
    if math.isnan(h):
        return f"{scale * a.mean:.{decimals}f}"
    return f"{scale * a.mean:.{decimals}f} ± {scale * h:.{decimals}f}"


def ci_band(samples: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise mean and Student-t half-width of ``samples`` (seeds x points); NaN-aware, see :func:`mean_ci`."""
    samples = np.atleast_2d(np.asarray(samples, dtype=float))
    cis = [mean_ci(samples[:, j], confidence) for j in range(samples.shape[1])]
    return np.array([c.mean for c in cis]), np.array([c.half_width for c in cis])


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of ``a`` against ``b`` on ``n`` shared (seed, stream) pairs.

    ``diff`` is the mean and CI of d_i = a_i - b_i; ``p_t`` the two-sided paired t-test p-value,
    ``p_wilcoxon`` the two-sided exact Wilcoxon signed-rank p-value (NaN when undefined).
    """

    a: str
    b: str
    n: int
    diff: MeanCI
    p_t: float
    p_wilcoxon: float
    p_holm: float = float("nan")


def paired_test(a: str, b: str, x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> PairedTest:
    r"""Paired t-test and Wilcoxon signed-rank test of x against y (x_i, y_i measured on the same seed and stream).

    d_i = x_i - y_i; paired t: t = \bar d / (s_d / sqrt(n)) with n - 1 degrees of freedom, p = 2 P(T > |t|).
    Wilcoxon: W = min(W+, W-), the sums of the ranks of |d_i| over positive / negative d_i, exact null
    distribution for small n (minimum attainable p with n pairs is 2 / 2^n, e.g. 0.0625 for n = 5).
    p is NaN when n < 2, or when every d_i is equal (t: zero variance, the statistic is undefined, so p is
    NaN, not 0; Holm leaves it out) / zero (Wilcoxon).
    """
    from scipy import stats

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    d = x[keep] - y[keep]
    n = int(d.size)
    p_t = p_w = float("nan")
    if n >= 2 and np.ptp(d) > 1e-12:
        p_t = float(stats.ttest_rel(x[keep], y[keep]).pvalue)
    if n >= 2 and np.any(np.abs(d) > 1e-12):
        try:
            p_w = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
        except ValueError:
            p_w = float("nan")
    return PairedTest(a, b, n, mean_ci(d, confidence), p_t, p_w)


def holm(pvalues: Sequence[float]) -> list[float]:
    r"""Holm-Bonferroni adjusted p-values (NaN entries are left out of the family and stay NaN).

    Sorted ascending p_(1) <= ... <= p_(m): adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass
class RankResult:
    """Friedman test and Nemenyi critical difference over ``n_blocks`` blocks.

    ``avg_rank[name]`` is the mean rank (1 = best) over blocks; two treatments differ significantly
    at ``alpha`` when their average ranks differ by more than ``cd``.
    """

    names: list[str]
    avg_rank: dict[str, float]
    n_blocks: int
    chi2: float
    p_friedman: float
    cd: float
    alpha: float = 0.05
    blocks: str = ""
    groups: list[tuple[str, ...]] = field(default_factory=list)


def friedman_nemenyi(scores: Mapping[str, Sequence[float]], higher_is_better: bool = True, alpha: float = 0.05,
                     blocks: str = "") -> RankResult:
    r"""Average ranks, Friedman test and Nemenyi critical difference (Demšar 2006).

    ``scores[name][b]`` is the score of treatment ``name`` on block ``b`` (k treatments, N blocks).
    In each block the treatments are ranked (1 = best, ties get the mean rank); R_j = mean rank of j.
    Friedman: chi2_F = 12 N / (k (k+1)) * (\sum_j R_j^2 - k (k+1)^2 / 4), p from chi2 with k - 1 d.o.f.
    Nemenyi: CD = q_alpha * sqrt(k (k+1) / (6 N)) with q_alpha = studentized-range quantile
    q_{1-alpha}(k, inf) / sqrt(2) (2.343 for k = 3, 2.569 for k = 4 at alpha = 0.05).
    ``groups`` are the maximal sets of treatments (consecutive by rank) whose ranks lie within CD.
    """
    from scipy import stats

    names = list(scores)
    M = np.array([np.asarray(scores[n], dtype=float) for n in names]).T  # blocks x k
    if M.ndim != 2 or M.shape[1] < 2 or M.shape[0] < 1:
        raise ValueError("friedman_nemenyi needs at least 2 treatments and 1 block")
    N, k = M.shape
    ranks = np.vstack([stats.rankdata(-row if higher_is_better else row, method="average") for row in M])
    R = ranks.mean(0)
    chi2 = 12 * N / (k * (k + 1)) * (float((R**2).sum()) - k * (k + 1) ** 2 / 4)
    p = float(stats.chi2.sf(chi2, k - 1)) if N >= 2 else float("nan")
    q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / np.sqrt(2)
    cd = q * np.sqrt(k * (k + 1) / (6 * N))
    avg = {n: float(r) for n, r in zip(names, R)}
    order = sorted(names, key=lambda n: avg[n])
    groups: list[tuple[str, ...]] = []
    for i, lo in enumerate(order):
        grp = tuple(n for n in order[i:] if avg[n] - avg[lo] <= cd + 1e-12)
        if len(grp) > 1 and not any(set(grp) <= set(g) for g in groups):
            groups.append(grp)
    return RankResult(names, avg, N, float(chi2), p, float(cd), alpha, blocks, groups)


def pareto_front(cost: Sequence[float], score: Sequence[float]) -> list[int]:
    """Indices of the points not dominated when minimising ``cost`` and maximising ``score``, by increasing cost.

    Point i is dominated when some j has cost_j <= cost_i and score_j >= score_i, one of them strictly.
    """
    c = np.asarray(cost, dtype=float)
    s = np.asarray(score, dtype=float)
    ok = np.flatnonzero(~(np.isnan(c) | np.isnan(s)))
    front = []
    for i in ok:
        dominated = any((c[j] <= c[i] and s[j] >= s[i]) and (c[j] < c[i] or s[j] > s[i]) for j in ok if j != i)
        if not dominated:
            front.append(int(i))
    return sorted(front, key=lambda i: (c[i], -s[i]))
