"""FeTrIL (Petit et al., WACV 2023): feature translation for exemplar-free class-incremental learning."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clbench.stream import StreamInfo, TrainView
from clbench.constraints import Interval, Options

from .base import tensor_bytes
from .frozen import FrozenFeatureStrategy, as_features, l2_normalize
from .space import Choice, Float, Int

HEADS = ("svc", "linear")


def pseudo_features(feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor,
                    past: list[int], new: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-features of the past classes by translating the features of the nearest new class.

    For each past class c: n* = argmin_{n in new} ||mu_c - mu_n||_2 (Euclidean between centroids), and every
    feature f of class n* becomes a pseudo-feature of c:  f_hat = f - mu_{n*} + mu_c.
    ``feats``/``labels`` are the current state's (un-normalised) features; ``centroids`` (n_classes, D).
    Returns (pseudo features, their labels c), in the order of ``past``.
    """
    if not past:
        return feats.new_zeros(0, feats.shape[1]), labels.new_zeros(0)
    mu_new = centroids[new]
    xs, ys = [], []
    for c in past:
        n_star = new[int(torch.cdist(centroids[c][None], mu_new).argmin())]
        f = feats[labels == n_star]
        xs.append(f - centroids[n_star].to(f.dtype) + centroids[c].to(f.dtype))
        ys.append(torch.full((len(f),), c, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


class FeTrIL(FrozenFeatureStrategy):
    """FeTrIL: class centroids, pseudo-features of past classes by nearest-new-class translation, linear head.

    Each state t: centroids mu_c (un-normalised features) of the new classes are stored; pseudo-features
    f - mu_{n*} + mu_c stand in for every past class c (see :func:`pseudo_features`); real + pseudo features
    are L2-normalised and a linear classifier over all seen classes is retrained from scratch.
    ``head: svc`` is the paper's one-vs-rest LinearSVC (C = ``C``, sklearn/liblinear); ``head: linear`` is the
    fast variant (FeTrIL^fc-like): a multinomial softmax linear layer trained by Adam (``lr``, ``epochs``,
    ``batch_size``). Test: L2-normalise, argmax of the scores (integer labels, no sign flips).
    """

    search_space = {"C": Float(1e-2, 1e2, log=True), "lr": Float(1e-4, 1e-1, log=True), "epochs": Int(1, 30),
                    "head": Choice(HEADS)}
    parameter_constraints = {"head": Options(*HEADS), "C": Interval(float, 0, None, "neither"),
                             "lr": Interval(float, 0, None, "neither"), "epochs": Interval(int, 0), "batch_size": Interval(int, 1)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", head: str = "svc", C: float = 1.0,
                 lr: float = 0.01, epochs: int = 10, batch_size: int = 256) -> None:
        super().__init__(info, seed=seed, device=device)
        self.head, self.C, self.lr, self.epochs, self.batch_size = head, C, lr, epochs, batch_size
        self.centroids = torch.zeros(info.n_classes, self.dim, dtype=torch.float64)
        self.counts = torch.zeros(info.n_classes, dtype=torch.float64)
        self.weight = torch.zeros(info.n_classes, self.dim)
        self.bias = torch.zeros(info.n_classes)
        self.generator = torch.Generator().manual_seed(seed)

    def train_experience(self, exp: TrainView) -> None:
        f = as_features(exp.train.x)
        y = exp.train.y
        present = y.unique().tolist()
        past = [c for c in torch.nonzero(self.seen).squeeze(1).tolist() if c not in present]
        for c in present:  # running centroid of every class in the data (exact mean over all its samples)
            fc = f[y == c].double()
            n = self.counts[c] + len(fc)
            self.centroids[c] += (fc.sum(0) - len(fc) * self.centroids[c]) / n
            self.counts[c] = n
        new = [c for c in present if not self.seen[c]] or present
        px, py = pseudo_features(f, y, self.centroids, past, new)
        x = l2_normalize(torch.cat([f, px.float()]))
        t = torch.cat([y, py])
        self.observe_labels(y)
        classes = torch.nonzero(self.seen).squeeze(1)
        if self.head == "svc":
            self._fit_svc(x, t, classes)
        else:
            self._fit_linear(x, t, classes)

    def _fit_svc(self, x: torch.Tensor, y: torch.Tensor, classes: torch.Tensor) -> None:
        from sklearn.svm import LinearSVC

        self.weight.zero_()
        self.bias.zero_()
        if len(classes) == 1:
            return
        svc = LinearSVC(C=self.C, dual="auto", random_state=self.seed, max_iter=2000).fit(x.numpy(), y.numpy())
        cls = torch.as_tensor(svc.classes_)
        coef, icpt = torch.as_tensor(svc.coef_, dtype=torch.float32), torch.as_tensor(svc.intercept_, dtype=torch.float32)
        if len(cls) == 2:  # binary: one decision function d, positive means classes_[1]
            self.weight[cls[1]], self.bias[cls[1]] = coef[0], icpt[0]
            self.weight[cls[0]], self.bias[cls[0]] = -coef[0], -icpt[0]
        else:
            self.weight[cls], self.bias[cls] = coef, icpt

    def _fit_linear(self, x: torch.Tensor, y: torch.Tensor, classes: torch.Tensor) -> None:
        layer = torch.nn.Linear(x.shape[1], self.info.n_classes)
        with torch.no_grad():
            layer.weight.normal_(0, 0.01, generator=self.generator)
            layer.bias.zero_()
        opt = torch.optim.Adam(layer.parameters(), lr=self.lr)
        mask = torch.full((self.info.n_classes,), float("-inf"))
        mask[classes] = 0.0
        for _ in range(self.epochs):
            for idx in torch.randperm(len(y), generator=self.generator).split(self.batch_size):
                loss = F.cross_entropy(layer(x[idx]) + mask, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.weight, self.bias = layer.weight.detach().clone(), layer.bias.detach().clone()

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_unseen(l2_normalize(as_features(x)) @ self.weight.T + self.bias)

    def state_bytes(self) -> int:
        return tensor_bytes(self.centroids, self.counts, self.weight, self.bias)
