"""Nearest-mean classifier on frozen features (Janson et al. 2022)."""

from __future__ import annotations

import torch

from clbench.constraints import Options
from clbench.stream import StreamInfo, TrainView

from .base import tensor_bytes
from .frozen import FrozenFeatureStrategy, as_features, l2_normalize


class NMC(FrozenFeatureStrategy):
    """Nearest class mean of L2-normalised frozen features (exemplar-free, task-free).

    Feature z = f / ||f||. Per class c a running, sample-weighted mean is kept in float64:
    after a batch with n_b samples of class c and sum s_b,  mu_c <- mu_c + (s_b - n_b mu_c) / (n_c + n_b),
    n_c <- n_c + n_b, which equals the mean over every sample of c seen so far.
    Prediction: argmin_c ||z - mu_c||_2 (scores are -||z - mu_c||; unseen classes get -inf), or with
    ``metric: cosine`` argmax_c cos(z, mu_c) (``normalize: false, metric: cosine`` is SimpleCIL).
    Task-free (``online``): learning an experience in chunks gives the same means as learning it at once.
    """

    online = True
    parameter_constraints = {"metric": Options("euclidean", "cosine")}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", normalize: bool = True,
                 metric: str = "euclidean") -> None:
        super().__init__(info, seed=seed, device=device)
        self.normalize, self.metric = normalize, metric
        self.means = torch.zeros(info.n_classes, self.dim, dtype=torch.float64)
        self.counts = torch.zeros(info.n_classes, dtype=torch.float64)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Fold a batch (any size, down to one sample) into the running means."""
        z = as_features(x).double()
        if self.normalize:
            z = l2_normalize(z)
        sums = torch.zeros_like(self.means).index_add_(0, y, z)
        n_b = torch.bincount(y, minlength=self.info.n_classes).double()
        new = self.counts + n_b
        has = n_b > 0
        self.means[has] += (sums[has] - n_b[has, None] * self.means[has]) / new[has, None]
        self.counts = new
        self.observe_labels(y)

    def train_experience(self, exp: TrainView) -> None:
        for x, y in exp.train.batches(4096):
            self.update(x, y)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        z = as_features(x).double()
        if self.normalize:
            z = l2_normalize(z)
        if self.metric == "cosine":
            return self.mask_unseen((l2_normalize(z) @ l2_normalize(self.means).T).float())
        return self.mask_unseen(-torch.cdist(z, self.means).float())

    def state_bytes(self) -> int:
        return tensor_bytes(self.means, self.counts)
