"""The power-law rehearsal wrapper checked against METHODS.md (Gandhi et al. 2024, v1)."""

from __future__ import annotations

import math

import pytest
import torch

from clbench.benchmarks.rehearsal import RehearsalSchedule, schedule_from_config, with_rehearsal
from clbench.benchmarks.registry import build_stream
from clbench.errors import UserError


def test_reconstruction_preset_counts():
    """N(k) = 57927 (1 + 0.1 k)^-5.6 for lags 1..9, as listed in METHODS.md (no total budget)."""
    s = schedule_from_config({"preset": "gandhi2024_reconstruction"})
    listed = [33969, 20867, 13329, 8802, 5981, 4167, 2968, 2155, 1592]  # lags 1..9
    counts = s.counts(9, [60000] * 10)  # index j = task j, lag 9 - j
    assert counts[::-1] == pytest.approx(listed, abs=1)


@pytest.mark.parametrize("block", [
    {"schedule": "power_law", "exponent": 5.6, "offset": 0.1, "budget": 0.5},
    {"schedule": "exponential", "beta": 2.0, "budget": 0.5},
    {"schedule": "uniform", "budget": 0.5},
])
def test_equal_budget_and_shape(block):
    s = schedule_from_config(block)
    for p in range(1, 10):
        c = s.counts(p, [3000] * 10)
        assert sum(c) == 1500  # r * N0 in total per phase, whatever the split
        lags = [p - j for j in range(p)]
        if block["schedule"] == "uniform":
            assert max(c) - min(c) <= 1  # r N0 / i per past task
        else:  # more recent tasks (smaller lag) get at least as many samples
            by_lag = [c[j] for j in sorted(range(p), key=lambda j: lags[j])]
            assert by_lag == sorted(by_lag, reverse=True)
    pl = schedule_from_config({"schedule": "power_law", "budget": 1.0, "exponent": 2.0, "offset": 1.0})
    c = pl.counts(3, [7000] * 4)  # lags 3, 2, 1: weights 1/16, 1/9, 1/4 -> split of 7000
    w = [(1 + k) ** -2.0 for k in (3, 2, 1)]
    assert c == [round(7000 * x / sum(w)) for x in w]


def test_bounds_and_reproducible_sampling(data_root):
    stream = build_stream({"name": "permuted_digits", "n_experiences": 4}, 0, data_root)
    n0 = len(stream[0].train)
    none = with_rehearsal(stream, RehearsalSchedule("none"), 0)
    full = with_rehearsal(stream, RehearsalSchedule("all"), 0)
    assert [len(e.train) for e in none] == [n0] * 4
    assert [len(e.train) for e in full] == [n0 * (p + 1) for p in range(4)]
    pl = RehearsalSchedule("power_law", budget=0.5)
    a, b, c = with_rehearsal(stream, pl, 3), with_rehearsal(stream, pl, 3), with_rehearsal(stream, pl, 4)
    assert all(torch.equal(x.train.x, y.train.x) for x, y in zip(a, b))
    assert not torch.equal(a[3].train.x, c[3].train.x)
    assert [len(e.train) - n0 for e in a] == [0] + [round(0.5 * n0)] * 3
    # the test set of phase p stays task p's own
    assert all(torch.equal(x.test.x, y.test.x) for x, y in zip(a, stream))


def test_bad_schedule_is_a_user_error():
    with pytest.raises(UserError, match="budget"):
        schedule_from_config({"schedule": "uniform"})
    with pytest.raises(UserError, match="valid keys"):
        schedule_from_config({"schedule": "power_law", "exponentt": 2})
    assert math.isclose(RehearsalSchedule("exponential", beta=2.0).weight(2), math.exp(-1) / 2)
