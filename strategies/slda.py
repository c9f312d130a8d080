"""Deep Streaming LDA (Hayes & Kanan, CVPRW 2020) on frozen features (official ``SLDA_Model.py``)."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from clbench.constraints import Boolean, Interval, Options
from clbench.errors import UserError
from clbench.stream import StreamInfo, TrainView

from .closed_form import Resolvable, Snapshot, merge_scatter, oas
from .frozen import FrozenFeatureStrategy, as_features
from .space import Float

SIGMA_UPDATES = ("paper", "exact")


class SLDA(Resolvable, FrozenFeatureStrategy):
    """Streaming LDA: class means mu_k, counts c_k, one shared covariance Sigma, float64.

    * Base initialisation (``base_init: true``, the official ``fit_base``) on the first experience: mu_k and
      c_k are its class means and counts, t = N, and Sigma = OAS(assume_centered) of the residuals f - mu_y
      (the biased covariance shrunk by the Oracle Approximating Shrinkage).
    * Streaming updates of every later sample (f, y), in order:

      - ``sigma_update: paper`` (the published recursion, ``fit`` of the official code): with
        d = f - mu_y taken *before* the mean update (mu_y = 0 for a class never seen),
        Sigma <- (t Sigma + (t / (t + 1)) d d^T) / (t + 1). It weights by the global count t and adds an
        uncentred f f^T for the first sample of a class, so it is not the pooled within-class covariance.
      - ``sigma_update: exact``: Welford's pooled within-class covariance, Sigma = (1/t) sum_k sum_{i in k}
        (f_i - mu_k)(f_i - mu_k)^T, updated exactly per batch (:func:`~.closed_form.merge_scatter`);
        without base initialisation it equals the batch pooled covariance of every sample seen.

      Then mu_y <- mu_y + (f - mu_y)/(c_y + 1), c_y <- c_y + 1, t <- t + 1. With ``plastic_cov: false``
      Sigma stays at its base estimate (the official "fixed" variant; needs ``base_init``).
    * Prediction: Lambda = pinv((1 - eps) Sigma + eps I) with eps = ``shrinkage`` (1e-4), W = Lambda M,
      b_k = -1/2 mu_k^T Lambda mu_k, scores f^T W + b (no priors), restricted to the classes seen (the official
      code lets unseen classes, whose mu = 0 scores 0, win the argmax). For eps > 0 the matrix is positive
      definite and pinv is its inverse, computed by Cholesky.

    The paper recursion is vectorised per batch with the means each sample would have seen one at a time,
    so it equals the sample-by-sample loop; it depends on the sample order. ``online``: the loop may feed an
    experience in chunks; base initialisation then uses the first chunk.
    """

    online = True
    search_space = {"shrinkage": Float(1e-6, 1e-1, log=True)}
    parameter_constraints = {"shrinkage": Interval(float, 0, 1, "right"), "plastic_cov": Boolean(),
                             "sigma_update": Options(*SIGMA_UPDATES), "base_init": Boolean(),
                             "batch_size": Interval(int, 1)}
    retunable = ("shrinkage",)

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", shrinkage: float = 1e-4,
                 plastic_cov: bool = True, sigma_update: str = "paper", base_init: bool = True,
                 batch_size: int = 4096) -> None:
        super().__init__(info, seed=seed, device=device)
        if not plastic_cov and not base_init:
            raise UserError("slda: a fixed covariance (plastic_cov: false) is the base initialisation's estimate; "
                            "fix: set base_init: true, or plastic_cov: true")
        if sigma_update not in SIGMA_UPDATES:
            raise UserError(f"slda: unknown sigma_update {sigma_update!r}; valid: {', '.join(SIGMA_UPDATES)}")
        self.shrinkage, self.plastic_cov, self.sigma_update = shrinkage, plastic_cov, sigma_update
        self.base_init, self.batch_size = base_init, batch_size
        d, k = self.dim, info.n_classes
        self.mu = np.zeros((k, d))
        self.counts = np.zeros(k)
        self.scatter = np.zeros((d, d))  # t * Sigma
        self.t = 0
        self.base_t = 0  # samples of the base initialisation
        self._head: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def sigma(self) -> np.ndarray:
        """The current covariance: scatter / t (0 before any sample), or the base estimate when fixed."""
        if not self.plastic_cov and self.base_t:
            return self.scatter / self.base_t
        return self.scatter / self.t if self.t else np.zeros_like(self.scatter)

    # ---- training
    def fit_base(self, X: np.ndarray, y: np.ndarray) -> None:
        """Official ``fit_base``: batch means and counts, t = N, Sigma = OAS(assume_centered) of f - mu_y."""
        for k in np.unique(y):
            self.mu[k] = X[y == k].mean(0)
            self.counts[k] = float((y == k).sum())
        self.t = self.base_t = X.shape[0]
        R = X - self.mu[y]
        cov, _ = oas(R.T @ R / X.shape[0], X.shape[0])
        self.scatter = self.t * cov

    def update_paper(self, X: np.ndarray, y: np.ndarray) -> None:
        """The published recursion for the rows of X in order (see the class docstring)."""
        n = X.shape[0]
        D = np.empty_like(X)
        for k in np.unique(y):
            idx = np.flatnonzero(y == k)
            Xk = X[idx]
            c0 = self.counts[k]
            before = np.cumsum(Xk, 0) - Xk  # sum of the earlier batch samples of class k
            cnt = c0 + np.arange(len(idx), dtype=np.float64)
            mean_before = (c0 * self.mu[k] + before) / np.maximum(cnt, 1.0)[:, None]
            D[idx] = Xk - mean_before
            total = c0 + len(idx)
            self.mu[k] = (c0 * self.mu[k] + Xk.sum(0)) / total
            self.counts[k] = total
        if self.plastic_cov:
            t_i = self.t + np.arange(n, dtype=np.float64)
            Dw = D * np.sqrt(t_i / (t_i + 1.0))[:, None]
            self.scatter += Dw.T @ Dw
        self.t += n

    def update_exact(self, X: np.ndarray, y: np.ndarray) -> None:
        """Exact pooled within-class scatter, means and counts (Chan et al.'s batch merge)."""
        pooled = np.zeros_like(self.scatter) if self.plastic_cov else None
        merge_scatter(self.counts, self.mu, X, y, pooled=pooled)
        if pooled is not None:
            self.scatter += pooled
        self.t += X.shape[0]

    def train_experience(self, exp: TrainView) -> None:
        if self.base_init and self.t == 0 and len(exp.train):
            self.fit_base(as_features(exp.train.x).double().numpy(), exp.train.y.numpy())
            self.observe_labels(exp.train.y)
            self._head = None
            return
        for xb, yb in exp.train.batches(self.batch_size):
            X, y = as_features(xb).double().numpy(), yb.numpy()
            if self.sigma_update == "paper":
                self.update_paper(X, y)
            else:
                self.update_exact(X, y)
            self.observe_labels(yb)
        self._head = None

    # ---- prediction
    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """W = Lambda M^T (d, K) and b (K,), with Lambda = pinv((1 - eps) Sigma + eps I)."""
        if self._head is None:
            eps = self.shrinkage
            A = (1.0 - eps) * self.sigma + eps * np.eye(self.dim)
            try:
                W = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, check_finite=False), self.mu.T, check_finite=False)
            except np.linalg.LinAlgError:
                W = scipy.linalg.pinvh(A) @ self.mu.T
            b = -0.5 * np.einsum("kd,dk->k", self.mu, W)
            self._head = (W, b)
        return self._head

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        W, b = self.head()
        scores = torch.from_numpy(as_features(x).double().numpy() @ W + b)
        return self.mask_unseen(scores.float())

    # ---- re-solving (the statistics do not depend on the shrinkage)
    def solver_state(self) -> Snapshot:
        return Snapshot((self.mu.copy(), self.scatter.copy(), self.t, self.base_t), self.seen.clone())

    def resolve(self, state: Snapshot, **params) -> None:
        self._check_retunable(params)
        mu, scatter, self.t, self.base_t = state.data
        self.mu, self.scatter = mu.copy(), scatter.copy()
        self.shrinkage = float(params.get("shrinkage", self.shrinkage))
        self.seen = state.seen.clone()
        self._head = None

    def state_bytes(self) -> int:
        return int(self.mu.nbytes + self.counts.nbytes + self.scatter.nbytes)
