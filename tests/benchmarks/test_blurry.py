"""Blurry streams: Si-Blurry's stochastic split of classes over tasks (issue 11, item 3) on hand-counted streams."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from clbench.benchmarks.blurry import blurry_problems, stochastic_chunks, with_blurry
from clbench.errors import UserError
from clbench.stream import Experience, Stream, TensorData

PER_CLASS = 4
SEED_OFFSET = 104729  # with_blurry draws from seed + this offset


def _toy(n_classes: int = 12, T: int = 3) -> Stream:
    """Classes 0..n-1, ``PER_CLASS`` training samples each (x = sample number), 1 test sample each; experience t
    holds classes t*k .. t*k + k - 1 (k = n / T)."""
    k = n_classes // T
    exps = []
    for t in range(T):
        cls = list(range(t * k, (t + 1) * k))
        y = torch.tensor([c for c in cls for _ in range(PER_CLASS)])
        x = torch.tensor([c * PER_CLASS + i for c in cls for i in range(PER_CLASS)], dtype=torch.float32).reshape(-1, 1)
        exps.append(Experience(t, 0, tuple(cls), TensorData(x, y), TensorData(torch.tensor(cls, dtype=torch.float32).reshape(-1, 1), torch.tensor(cls))))
    return Stream("toy", "class-il", n_classes, tuple(exps))


def _si_blurry_classes(n_classes: int, T: int, n_percent: int, seed: int) -> list[list[int]]:
    """The class split of Si-Blurry's ``OnlineSampler`` in its stochastic (``varing_NM``) mode, transcribed:
    disjoint_num = floor(|C| n / 100) rounded down to a multiple of T, blurry_num the rest (likewise); a class
    permutation; each group cut at T - 1 sorted randint(0, num) points. Returns each task's classes."""
    g = torch.Generator().manual_seed(seed)
    disjoint_num = (n_classes * n_percent // 100) // T * T
    blurry_num = (n_classes - disjoint_num) // T * T
    order = torch.randperm(n_classes, generator=g)
    d = order[:disjoint_num].tolist()
    ds = [0] + torch.randint(0, disjoint_num, (T - 1,), generator=g).sort().values.tolist() + [disjoint_num]
    bs = [0] + torch.randint(0, blurry_num, (T - 1,), generator=g).sort().values.tolist() + [blurry_num]
    b = order[disjoint_num:disjoint_num + blurry_num].tolist()
    return [sorted(d[ds[t]:ds[t + 1]] + b[bs[t]:bs[t + 1]]) for t in range(T)]


def test_stochastic_split_equals_si_blurry_class_split_and_counts_by_hand():
    """blurry_ratio 0 (nothing moves): experience t's training set is exactly PER_CLASS samples of each class Si-Blurry's
    sampler gives task t (12 classes, N = 50%, T = 3), and its test set those classes; the sizes vary across seeds."""
    stream = _toy()
    sizes_seen = set()
    built = 0
    for seed in range(12):
        want = _si_blurry_classes(12, 3, 50, seed + SEED_OFFSET)
        if any(not w for w in want):
            with pytest.raises(UserError, match="without any training sample"):
                with_blurry(stream, {"disjoint_ratio": 0.5, "blurry_ratio": 0.0, "split": "stochastic"}, seed)
            continue
        s = with_blurry(stream, {"disjoint_ratio": 0.5, "blurry_ratio": 0.0, "split": "stochastic"}, seed)
        built += 1
        assert s.params["blurry"]["split"] == "stochastic" and s.params["blurry"]["home_classes"] == want
        for t, e in enumerate(s):
            assert sorted(e.train.y.unique().tolist()) == want[t]
            assert len(e.train) == PER_CLASS * len(want[t])  # hand count: 4 samples per class
            assert sorted(e.train.x[:, 0].long().tolist()) == [c * PER_CLASS + i for c in want[t] for i in range(PER_CLASS)]
            assert e.info["new_classes"] == tuple(want[t]) and sorted(e.test.y.tolist()) == want[t]
        sizes_seen.add(tuple(len(w) for w in want))
    assert built >= 6 and len(sizes_seen) > 1  # the number of classes per task is random


def test_stochastic_chunk_sizes_follow_the_cut_point_distribution():
    """3 disjoint classes over T = 3 tasks: the two cut points are uniform on {0, 1, 2}^2, so by enumeration of the 9
    equally likely pairs the last task gets 1 class with probability 5/9, 2 with 3/9, 3 with 1/9."""
    exact = Counter()
    for c in itertools.product(range(3), repeat=2):
        exact[3 - max(c)] += 1
    assert exact == {1: 5, 2: 3, 3: 1}
    counts = Counter()
    n = 900
    for seed in range(n):
        chunks = stochastic_chunks([10, 11, 12], 3, torch.Generator().manual_seed(seed))
        assert [c for chunk in chunks for c in chunk] == [10, 11, 12]  # contiguous chunks, in order
        counts[len(chunks[2])] += 1
    for k, m in exact.items():
        assert abs(counts[k] / n - m / 9) < 0.05, (counts, k)


def test_stochastic_blurry_moves_each_blurry_class_share_to_other_experiences():
    """blurry_ratio 0.5 of 4 samples: every blurry class sends exactly 2 samples away from home, disjoint classes none;
    the training samples are a partition of the original ones."""
    stream = _toy()
    s = with_blurry(stream, {"disjoint_ratio": 0.5, "blurry_ratio": 0.5, "split": "stochastic"}, seed=3)
    home = {c: t for t, cls in enumerate(s.params["blurry"]["home_classes"]) for c in cls}
    disjoint = set(s.params["blurry"]["disjoint_classes"])
    assert len(disjoint) == 6 and len(home) == 12
    away = Counter()
    ids = []
    for t, e in enumerate(s):
        for c in e.train.y.tolist():
            if home[c] != t:
                away[c] += 1
        ids += e.train.x[:, 0].long().tolist()
    assert sorted(ids) == list(range(12 * PER_CLASS))
    assert all(away[c] == 0 for c in disjoint) and all(away[c] == 2 for c in set(range(12)) - disjoint)


def test_even_split_is_the_default_and_unchanged():
    """Without ``split`` the homes are the wrapped stream's experiences (the earlier behaviour, recorded as even)."""
    stream = _toy()
    a = with_blurry(stream, {"disjoint_ratio": 0.5, "blurry_ratio": 0.0}, seed=0)
    assert a.params["blurry"]["split"] == "even" and "home_classes" not in a.params["blurry"]
    for t, e in enumerate(a):
        assert sorted(e.train.y.unique().tolist()) == list(stream[t].classes)
    assert blurry_problems({"split": "random"}) and not blurry_problems({"split": "stochastic"})
