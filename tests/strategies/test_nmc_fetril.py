"""NMC running means and FeTrIL pseudo-features, against independent numpy computations."""

from __future__ import annotations

import numpy as np
import torch

from clbench.stream import StreamInfo, TensorData, TrainView
from clbench.strategies.fetril import FeTrIL, pseudo_features
from clbench.strategies.nmc import NMC


def _view(i: int, x: np.ndarray, y: np.ndarray) -> TrainView:
    return TrainView(i, 0, tuple(sorted(set(y.tolist()))), TensorData(torch.from_numpy(x).float(), torch.from_numpy(y)))


def test_nmc_means_equal_numpy_means_of_normalised_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32) + 3 * rng.normal(size=(1, 12)).astype(np.float32)
    y = rng.integers(0, 6, 300)
    nmc = NMC(StreamInfo((12,), 6, "class-il"))
    nmc.train_experience(_view(0, x[:150], y[:150]))
    nmc.train_experience(_view(1, x[150:], y[150:]))
    z = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    expected = np.stack([z[y == c].mean(0) for c in range(6)])
    np.testing.assert_allclose(nmc.means.numpy(), expected, rtol=0, atol=1e-6)
    # prediction = nearest mean
    d = ((z[:, None, :] - expected[None]) ** 2).sum(-1)
    assert (nmc.predict(torch.from_numpy(x)).argmax(1).numpy() == d.argmin(1)).all()


def test_nmc_running_update_equals_batch_mean():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(80, 5)))
    y = torch.from_numpy(rng.integers(0, 3, 80))
    one_by_one, batch = NMC(StreamInfo((5,), 3, "class-il")), NMC(StreamInfo((5,), 3, "class-il"))
    for i in range(80):
        one_by_one.update(x[i : i + 1], y[i : i + 1])
    batch.update(x, y)
    np.testing.assert_allclose(one_by_one.means.numpy(), batch.means.numpy(), rtol=0, atol=1e-6)
    assert torch.equal(one_by_one.counts, batch.counts)


def test_fetril_pseudo_features_translate_the_nearest_new_class_by_hand():
    # centroids by hand: old classes 0 at (0, 0) and 1 at (10, 0); new classes 2 at (1, 1) and 3 at (9, -1)
    centroids = torch.tensor([[0.0, 0.0], [10.0, 0.0], [1.0, 1.0], [9.0, -1.0]], dtype=torch.float64)
    feats = torch.tensor([[1.0, 2.0], [1.0, 0.0], [8.0, -1.0], [10.0, -1.0]])
    labels = torch.tensor([2, 2, 3, 3])
    px, py = pseudo_features(feats, labels, centroids, past=[0, 1], new=[2, 3])
    # class 0's nearest new class is 2: f - (1, 1) + (0, 0); class 1's is 3: f - (9, -1) + (10, 0)
    expected = torch.tensor([[0.0, 1.0], [0.0, -1.0], [9.0, 0.0], [11.0, 0.0]])
    assert torch.allclose(px.float(), expected)
    assert py.tolist() == [0, 0, 1, 1]


def test_fetril_centroids_and_head_on_hand_made_states():
    rng = np.random.default_rng(2)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [-5.0, 0, 0]])
    y = np.repeat(np.arange(4), 40)
    x = (centres[y] + rng.normal(scale=0.3, size=(160, 3))).astype(np.float32)
    for head in ("svc", "linear"):
        s = FeTrIL(StreamInfo((3,), 4, "class-il"), head=head, epochs=15, lr=0.1, batch_size=64)
        s.train_experience(_view(0, x[y < 2], y[y < 2]))  # binary state: checks the LinearSVC sign handling
        acc0 = (s.predict(torch.from_numpy(x[y < 2])).argmax(1).numpy() == y[y < 2]).mean()
        s.train_experience(_view(1, x[y >= 2], y[y >= 2]))
        np.testing.assert_allclose(s.centroids.numpy(), np.stack([x[y == c].astype(np.float64).mean(0) for c in range(4)]), atol=1e-5)
        acc = (s.predict(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
        assert acc0 == 1.0 and acc > 0.9, (head, acc0, acc)
