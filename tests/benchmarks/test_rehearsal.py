"""The power-law rehearsal wrapper checked against Gandhi et al. 2024 (v1) and its reconstruction (docs/methods/streams.md)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from clbench.benchmarks.rehearsal import RehearsalSchedule, rehearsal_problems, schedule_from_config, with_rehearsal
from clbench.benchmarks.registry import build_stream
from clbench.errors import UserError
from clbench.stream import Experience, Stream, TensorData


def test_reconstruction_preset_counts():
    """N(k) = 57927 (1 + 0.1 k)^-5.6 for lags 1..9, as the reconstruction lists them (no total budget)."""
    s = schedule_from_config({"preset": "gandhi2024_reconstruction"})
    listed = [33969, 20867, 13329, 8802, 5981, 4167, 2968, 2155, 1592]  # lags 1..9
    counts = s.counts(9, [60000] * 10)  # index j = task j, lag 9 - j
    assert counts[::-1] == pytest.approx(listed, abs=1)
    assert s.counts(9, [57927] * 10) == counts  # tasks of 57927 images or more: the reconstruction's own counts


def test_reconstruction_preset_scales_to_small_tasks():
    """On 1500-image tasks (power_law_pmnist's subset) the preset's counts are multiplied by 1500 / 57927:
    N(k) = round(1500 (1 + 0.1 k)^-5.6), hand-computed 879.6, 540.4, 345.2, 227.9, 154.9, 107.9, 76.8, 55.8, 41.2
    for k = 1..9, i.e. 2430 replayed samples in phase 9 (the unscaled counts asked for 93,829: with the current task
    a 95,329-sample phase, 63 tasks' worth, the issue's figure)."""
    s = schedule_from_config({"preset": "gandhi2024_reconstruction"})
    assert s.scale_to_task
    assert s.counts(9, [1500] * 10)[::-1] == [880, 540, 345, 228, 155, 108, 77, 56, 41]
    assert sum(s.counts(9, [1500] * 10)) == 2430
    unscaled = schedule_from_config({"preset": "gandhi2024_reconstruction", "scale_to_task": False})
    assert sum(unscaled.requested(9, [1500] * 10)) + 1500 == 95329
    assert unscaled.counts(9, [1500] * 10) == [1500] * 9  # capped at the task: every task once, no copies


def _toy(sizes: list[int]) -> Stream:
    """Tasks of the given sizes whose inputs number the samples 0, 1, 2, ... across the whole stream."""
    exps, start = [], 0
    for t, n in enumerate(sizes):
        x = torch.arange(start, start + n, dtype=torch.float32).reshape(n, 1)
        exps.append(Experience(t, t, (0,), TensorData(x, torch.zeros(n, dtype=torch.int64)),
                               TensorData(x[:1], torch.zeros(1, dtype=torch.int64))))
        start += n
    return Stream("toy", "domain-il", 1, tuple(exps))


def test_hand_counted_stream_caps_requests_without_copies_and_warns_once():
    """Tasks of 4, 5, 6 samples; power law scale 10, offset 1, exponent 1: w(k) = 1 / (1 + k).
    Phase 1: task 0 (lag 1) asked round(10 / 2) = 5 > 4 -> all 4, once.
    Phase 2: task 0 (lag 2) round(10 / 3) = 3 of 4; task 1 (lag 1) 5 of 5 -> 6 + 3 + 5 = 14 samples, none twice."""
    stream = _toy([4, 5, 6])
    sched = RehearsalSchedule("power_law", scale=10.0, offset=1.0, exponent=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = with_rehearsal(stream, sched, seed=0)
    assert len(caught) == 1 and "task 0's 4" in str(caught[0].message) and "phase 1" in str(caught[0].message)
    assert [e.info["rehearsal_counts"] for e in out] == [[], [4], [3, 5]]
    assert out.params["rehearsal"]["requested"] == [[], [5], [3, 5]] and out.params["rehearsal"]["capped"]
    assert [len(e.train) for e in out] == [4, 9, 14]
    for p, e in enumerate(out):
        ids = e.train.x[:, 0].long().tolist()
        assert len(ids) == len(set(ids))  # without replacement: no sample twice in a phase
        assert ids[: len(stream[p].train)] == stream[p].train.x[:, 0].long().tolist()  # the current task first, in full
    phase2 = set(out[2].train.x[6:, 0].long().tolist())
    assert set(range(4, 9)) <= phase2 and len(phase2 & set(range(4))) == 3
    # no request above a task's size: no warning, not capped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = with_rehearsal(stream, RehearsalSchedule("power_law", scale=10.0, offset=1.0, exponent=1.0, scale_to_task=True), 0)
    # S_j = min(10, n_j) = 4, 5: phase 1 round(4 / 2) = 2; phase 2 round(4 / 3) = 1, round(5 / 2) = round(2.5) = 2
    assert [e.info["rehearsal_counts"] for e in quiet] == [[], [2], [1, 2]]
    assert not quiet.params["rehearsal"]["capped"] and "requested" not in quiet.params["rehearsal"]


def test_budget_above_a_task_is_capped_too():
    """budget 3 with one past task of 4 samples: asks for 3 * 5 = 15 of task 0 in phase 1, replays its 4."""
    stream = _toy([4, 5])
    with pytest.warns(UserWarning, match="15 of task 0's 4"):
        out = with_rehearsal(stream, RehearsalSchedule("power_law", budget=3.0), seed=1)
    assert out[1].info["rehearsal_counts"] == [4] and len(out[1].train) == 9


def test_scale_to_task_is_a_declared_boolean():
    assert rehearsal_problems({"schedule": "power_law", "scale_to_task": "yes"})
    assert not rehearsal_problems({"preset": "gandhi2024_reconstruction", "scale_to_task": False})


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
