"""The class-balanced reservoir buffer: quotas exact, inclusion uniform (compared with k/n)."""

import torch

from clbench.stream import TensorData
from clbench.strategies.buffers import ClassBalancedBuffer


def _data(classes, n_per_class, offset=0):
    y = torch.tensor([c for c in classes for _ in range(n_per_class)])
    x = torch.arange(offset, offset + len(y)).float().unsqueeze(1)  # each sample's id as its input
    return TensorData(x, y)


def test_quotas_are_balanced_and_capacity_respected():
    buf = ClassBalancedBuffer(21, torch.Generator().manual_seed(0))
    buf.update(_data([0, 1], 50))
    assert len(buf) == 21 and sorted(int((buf.data().y == c).sum()) for c in (0, 1)) == [10, 11]
    buf.update(_data([2, 3, 4], 50, offset=100))
    counts = [int((buf.data().y == c).sum()) for c in range(5)]
    assert sum(counts) == 21 and max(counts) - min(counts) <= 1
    # what is kept are real samples of the right class
    d = buf.data()
    assert all((d.x[d.y == c] // 50 == c).all() for c in (0, 1))


def test_small_classes_fill_without_duplicates():
    buf = ClassBalancedBuffer(100, torch.Generator().manual_seed(0))
    buf.update(_data([0, 1], 7))
    d = buf.data()
    assert len(d) == 14 and len(set(d.x.squeeze(1).tolist())) == 14


def test_reservoir_inclusion_is_uniform():
    """After 100 samples of a class offered over two experiences, each is kept with probability 5/100."""
    trials, hits = 1000, torch.zeros(100)
    for t in range(trials):
        buf = ClassBalancedBuffer(10, torch.Generator().manual_seed(t))
        buf.update(_data([0, 1], 60))  # class 0 ids 0..59, quota 5 each
        part2 = TensorData(torch.arange(60, 100).float().unsqueeze(1), torch.zeros(40, dtype=torch.long))
        buf.update(part2)  # 40 more samples of class 0 (ids 60..99)
        kept = buf.data()
        ids = kept.x[kept.y == 0].squeeze(1).long()
        assert len(ids) == 5 and len(set(ids.tolist())) == 5
        hits[ids] += 1
    expected = trials * 5 / 100  # 50, binomial std ~6.9
    assert (hits - expected).abs().max() < 35, hits
    # early and late samples are equally likely (no recency bias)
    assert abs(hits[:60].mean() - hits[60:].mean()) < 5
