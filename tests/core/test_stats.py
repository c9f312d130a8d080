"""Paired tests when every difference is equal (issue 11, item 6): the t statistic is undefined, so p_t is NaN."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from clbench.stats import holm, paired_test


def test_equal_differences_give_an_undefined_t_test_left_out_of_holm():
    """acil vs dsal, -0.18 pp in both of 2 seeds (the issue's case): scipy's ttest_rel divides by s_d = 0 and
    reports p = 0 (t = -inf); the test is undefined, so clbench reports NaN and Holm leaves it out."""
    acil = np.array([0.9712, 0.9650])
    dsal = np.array([0.9730, 0.9668])
    d = acil - dsal
    assert np.allclose(d, -0.0018, atol=1e-12)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's own "catastrophic cancellation" notice
        ref = stats.ttest_rel(acil, dsal)
    assert np.isinf(ref.statistic) or ref.pvalue < 1e-6  # what scipy makes of s_d = 0 (or ~1e-17): "significant"
    t = paired_test("acil", "dsal", acil, dsal)
    assert t.n == 2 and math.isnan(t.p_t)
    assert t.diff.mean == pytest.approx(-0.0018) and t.diff.half_width == pytest.approx(0.0, abs=1e-12)
    # the Wilcoxon test is defined (two nonzero differences of one sign): exact p = 2 / 2^2, as scipy computes it
    assert t.p_wilcoxon == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue) == pytest.approx(0.5)
    # Holm over a family with this NaN and two defined p-values: NaN stays NaN, the others form a family of m = 2
    x, y = np.array([0.80, 0.82, 0.85]), np.array([0.78, 0.81, 0.80])
    other = paired_test("a", "b", x, y)
    assert other.p_t == pytest.approx(stats.ttest_rel(x, y).pvalue)
    adj = holm([t.p_t, other.p_t, 0.04])
    assert math.isnan(adj[0])
    lo, hi = sorted([other.p_t, 0.04])
    expected = {lo: min(1.0, 2 * lo), hi: max(min(1.0, 2 * lo), min(1.0, hi))}
    assert adj[1] == pytest.approx(expected[other.p_t]) and adj[2] == pytest.approx(expected[0.04])


def test_differences_equal_to_the_last_bit_and_exactly_zero():
    """Exactly equal differences (0.0625 is a binary fraction): scipy says p = 0, clbench NaN; all-zero
    differences: both tests undefined (NaN)."""
    x = np.array([0.5, 0.25, 0.75])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert stats.ttest_rel(x, x + 0.0625).pvalue == 0.0
    t = paired_test("x", "y", x, x + 0.0625)
    assert math.isnan(t.p_t) and t.p_wilcoxon == pytest.approx(stats.wilcoxon(-0.0625 * np.ones(3)).pvalue)
    z = paired_test("x", "y", x, x)
    assert math.isnan(z.p_t) and math.isnan(z.p_wilcoxon)
