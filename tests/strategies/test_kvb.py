"""KVB: frozen keys/projections, untouched values of never-selected keys, only values trained."""

from __future__ import annotations

import numpy as np
import torch

from clbench.benchmarks.split import split_stream
from clbench.stream import TensorData
from clbench.strategies.kvb import KVB


def _stream():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(6, 16))
    y = rng.integers(0, 6, 360)
    x = torch.from_numpy(centres[y] + rng.normal(size=(360, 16))).float()
    train, test = TensorData(x[:300], torch.from_numpy(y[:300])), TensorData(x[300:], torch.from_numpy(y[300:]))
    return split_stream("toy", (train, test), seed=0, n_experiences=3)


def test_kvb_keys_and_projection_frozen_values_of_unused_keys_zero_only_values_move():
    stream = _stream()
    s = KVB(stream.info, seed=0, n_codebooks=8, key_dim=4, n_keys=64, key_epochs=2, key_batch=32, epochs=2, batch_size=64)
    s.receive_unlabelled(torch.cat([e.train.x for e in stream]))
    s.fit_keys(s._unlabelled)
    keys, proj = s.keys.clone(), s.projection.clone()
    assert torch.count_nonzero(s.values) == 0  # values start at zero
    assert [p for g in s.optimizer.param_groups for p in g["params"]] == [s.values]  # the only trained tensor
    values_before = s.values.detach().clone()
    for exp in stream:
        s.train_experience(exp.train_view())
    assert torch.equal(s.keys, keys) and torch.equal(s.projection, proj)  # bit-identical
    assert (~s.used).any(), "the test needs keys never selected"
    assert torch.count_nonzero(s.values.detach()[~s.used]) == 0  # never-selected keys keep zero values
    moved = (s.values.detach() != values_before).any(-1)
    assert moved.any() and not (moved & ~s.used).any()  # training moved values, and only of selected keys
    # the selected keys are exactly the nearest keys of the training samples
    z = torch.cat([e.train.x for e in stream]) @ proj
    z = z.reshape(len(z), 8, 4).transpose(0, 1)
    nearest = torch.cdist(z, keys).argmin(-1)  # (C, N)
    used = torch.zeros_like(s.used)
    used[torch.arange(8)[:, None].expand_as(nearest), nearest] = True
    assert torch.equal(used, s.used)


def test_kvb_masks_unused_keys_at_test_time():
    stream = _stream()
    s = KVB(stream.info, seed=1, n_codebooks=4, key_dim=3, n_keys=32, key_epochs=2, key_batch=32, epochs=3, key_data="first_experience")
    s.train_experience(stream[0].train_view())
    x = stream[2].test.x
    z = (x @ s.projection).reshape(len(x), 4, 3).transpose(0, 1)
    d = torch.cdist(z, s.keys).masked_fill(~s.used[:, None, :], float("inf"))
    idx = d.argmin(-1).T  # nearest *used* key per codebook
    expected = s.values.detach()[torch.arange(4)[None, :], idx].mean(1)
    assert torch.allclose(s.predict(x), expected, atol=1e-6)
    assert s.used[torch.arange(4)[None, :], idx].all()
