"""Metrics against values computed by hand on small matrices."""

import math

import numpy as np
import pytest

from clbench import metrics as M

# R[i, j]: accuracy on experience j after training on i (3 experiences)
R = np.array([
    [0.9, 0.1, 0.2],
    [0.6, 0.8, 0.3],
    [0.5, 0.7, 0.95],
])


def test_final_accuracy():
    assert M.final_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.95) / 3)


def test_backward_transfer():
    # ((0.5 - 0.9) + (0.7 - 0.8)) / 2
    assert M.backward_transfer(R) == pytest.approx(-0.25)


def test_forward_transfer():
    b = [0.1, 0.05, 0.25]
    # ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.1 - 0.05) + (0.3 - 0.25)) / 2
    assert M.forward_transfer(R, b) == pytest.approx(0.05)


def test_forgetting():
    # j=0: max(0.9, 0.6) - 0.5 = 0.4 ; j=1: max(0.1, 0.8) - 0.7 = 0.1 ; mean = 0.25
    assert M.forgetting(R) == pytest.approx(0.25)


def test_average_incremental_accuracy_equal_and_weighted():
    # equal sizes: a0 = 0.9, a1 = (0.6+0.8)/2 = 0.7, a2 = 0.7166..; mean
    a = [0.9, 0.7, (0.5 + 0.7 + 0.95) / 3]
    assert M.average_incremental_accuracy(R) == pytest.approx(sum(a) / 3)
    # test sizes 100, 300, 100: a1 = (0.6*100 + 0.8*300)/400 = 0.75 ; a2 = (50 + 210 + 95)/500 = 0.71
    w = M.seen_accuracy(R, [100, 300, 100])
    assert w == pytest.approx([0.9, 0.75, 0.71])
    assert M.average_incremental_accuracy(R, [100, 300, 100]) == pytest.approx((0.9 + 0.75 + 0.71) / 3)


def test_intransigence():
    assert M.intransigence(R, [0.95, 0.9, 0.97]) == pytest.approx([0.05, 0.1, 0.02])


def test_single_experience_and_shape_checks():
    assert math.isnan(M.backward_transfer([[0.5]]))
    assert math.isnan(M.forgetting([[0.5]]))
    with pytest.raises(ValueError):
        M.final_accuracy([[0.1, 0.2]])


def test_an_experience_without_test_data_is_left_out_not_counted_as_zero():
    """A blurry stream's experience that brings no new class has an empty test set: NaN in R, skipped."""
    nan = float("nan")
    R = np.array([[0.9, nan, 0.1], [0.8, nan, 0.2], [0.6, nan, 0.7]])
    sizes = [100, 0, 300]
    assert M.final_accuracy(R) == pytest.approx((0.6 + 0.7) / 2)
    assert M.seen_accuracy(R, sizes).tolist() == pytest.approx([0.9, 0.8, (0.6 * 100 + 0.7 * 300) / 400])
    assert M.backward_transfer(R) == pytest.approx(0.6 - 0.9)  # only j = 0 has test data among j < 2
    assert M.forgetting(R) == pytest.approx(0.9 - 0.6)
    assert M.average_incremental_accuracy(R, sizes) == pytest.approx((0.9 + 0.8 + 0.675) / 3)
