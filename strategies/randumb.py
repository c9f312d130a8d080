"""RanDumb (Prabhu et al., arXiv 2402.08823, official ``src/main.py``): LDA with per-class OAS shrinkage,
on pretrained features or on random Fourier features of raw pixels."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

from clbench.constraints import Interval, Options
from clbench.errors import UserError
from clbench.stream import StreamInfo, TrainView

from .closed_form import merge_scatter, oas_shrinkage
from .frozen import FrozenFeatureStrategy, as_features

EMBEDDINGS = ("none", "rff")
#: per-class scatter matrices are all kept (exact in any stream) while they fit in this many bytes
MAX_KEPT_SCATTER_BYTES = 1 << 30


class RanDumb(FrozenFeatureStrategy):
    """scikit-learn's ``LinearDiscriminantAnalysis(solver='lsqr', covariance_estimator=OAS())``, fitted
    exactly from running statistics, float64.

    Embedding (``embedding``):

    * ``none`` (the pretrained-feature variant, ``scripts/runall.sh``): the features themselves.
    * ``rff`` (the raw-pixel variant; use a benchmark without a backbone, or ``backbone: flatten``): random
      Fourier features of scikit-learn's ``RBFSampler``, z(x) = sqrt(2/D) cos(x omega + b), omega ~ N(0, 2 gamma I)
      (d x D), b ~ U[0, 2 pi], D = ``rff_dim`` (10000), approximating exp(-gamma ||x - x'||^2). The bandwidth is
      ``gamma='scale'``, gamma = 1 / (d Var(X)), computed on the **first experience** and then fixed (the
      official code computes it on the whole training set, which a stream cannot). The official per-channel
      pixel standardisation is left out (it rescales the three channels by nearly equal factors).

    LDA on the embedded z, over the classes seen so far: per class k the count n_k, mean mu_k and biased
    covariance S_k; Sigma = sum_k pi_k OAS(S_k, n_k) with priors pi_k = n_k / N and OAS(S, n) =
    (1 - rho) S + rho (tr S / D) I (:func:`~.closed_form.oas_shrinkage`); w_k = Sigma^{-1} mu_k,
    b_k = -1/2 mu_k^T w_k + log pi_k; scores z^T w_k + b_k.

    Memory: per-class scatter matrices are kept for every class when n_classes D^2 8 bytes is at most 1 GiB,
    which is exact in any stream. Otherwise (e.g. ``rff`` with D = 10000) a class's scatter is kept only
    while its experience trains and is then folded into the pooled sum with its OAS weight; this is exact
    when each class's samples arrive in one experience (class-incremental splits); a class met again in a
    later experience adds a second group with its own OAS shrinkage. Nothing to tune (OAS chooses the
    shrinkage); ``search_space`` is empty on purpose.
    """

    search_space: dict = {}
    parameter_constraints = {"embedding": Options(*EMBEDDINGS), "rff_dim": Interval(int, 1),
                             "batch_size": Interval(int, 1)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", embedding: str = "none",
                 rff_dim: int = 10000, batch_size: int = 2048) -> None:
        super().__init__(info, seed=seed, device=device)
        if embedding not in EMBEDDINGS:
            raise UserError(f"randumb: unknown embedding {embedding!r}; valid: {', '.join(EMBEDDINGS)}")
        self.embedding, self.rff_dim, self.batch_size = embedding, rff_dim, batch_size
        self.width = rff_dim if embedding == "rff" else self.dim
        k, D = info.n_classes, self.width
        if embedding == "rff":
            g = torch.Generator().manual_seed(seed)
            self.normal = torch.randn(self.dim, D, generator=g, dtype=torch.float64)  # scaled by sqrt(2 gamma) later
            self.offset = torch.rand(D, generator=g, dtype=torch.float64) * (2 * math.pi)
            self.gamma: float | None = None
        self.counts = np.zeros(k)
        self.mean = np.zeros((k, D))
        self.keep_all = k * D * D * 8 <= MAX_KEPT_SCATTER_BYTES
        self.scatter: dict[int, np.ndarray] = {}  # per-class scatter sum (z - mu_k)(z - mu_k)^T (kept or open)
        # folded groups (keep_all false): sum of (1 - rho_g) S_g over groups, and per group (n_g, rho_g, tr S_g / D)
        self.folded = None if self.keep_all else np.zeros((D, D))
        self.groups: list[tuple[float, float, float]] = []
        self.group_n = np.zeros(k)  # fold mode: count and mean of each class's group in the current experience
        self.group_mean = np.zeros((k, D))
        self._head: tuple[np.ndarray, np.ndarray] | None = None

    # ---- embedding
    def fit_gamma(self, X: np.ndarray) -> float:
        """scikit-learn's ``gamma='scale'``: 1 / (d Var(X)) over every entry of X (1 when Var(X) = 0)."""
        var = float(X.var())
        return 1.0 / (X.shape[1] * var) if var != 0 else 1.0

    def embed(self, x: torch.Tensor) -> np.ndarray:
        """The features, or z(x) = sqrt(2/D) cos(x omega + b) (float64, (N, D))."""
        f = as_features(x).double()
        if self.embedding == "none":
            return f.numpy()
        if self.gamma is None:
            raise UserError("randumb: the random-feature bandwidth is set by the first training experience; train first")
        proj = torch.addmm(self.offset, f, self.normal, alpha=math.sqrt(2.0 * self.gamma))
        return (torch.cos_(proj) * math.sqrt(2.0 / self.width)).numpy()

    # ---- training
    def train_experience(self, exp: TrainView) -> None:
        if self.embedding == "rff" and self.gamma is None:
            self.gamma = self.fit_gamma(as_features(exp.train.x).double().numpy())
        for xb, yb in exp.train.batches(self.batch_size):
            Z, y = self.embed(xb), yb.numpy()
            if self.keep_all:
                for k in np.unique(y).tolist():
                    self.scatter.setdefault(k, np.zeros((self.width, self.width)))
                merge_scatter(self.counts, self.mean, Z, y, scatter_a=self.scatter)
            else:
                for k in np.unique(y).tolist():
                    if k not in self.scatter:  # a new group for this class in this experience
                        self.scatter[k] = np.zeros((self.width, self.width))
                        self.group_n[k], self.group_mean[k] = 0.0, 0.0
                merge_scatter(self.counts, self.mean, Z, y)
                merge_scatter(self.group_n, self.group_mean, Z, y, scatter_a=self.scatter)
            self.observe_labels(yb)
        if not self.keep_all:
            for k in sorted(self.scatter):
                self._fold(k)
        self._head = None

    def _fold(self, k: int) -> None:
        """Fold mode: add (1 - rho) S of the class's group of this experience to the pooled sum."""
        n = float(self.group_n[k])
        S = self.scatter.pop(k)
        emp = S / n
        rho = oas_shrinkage(emp, n)
        self.folded += (1.0 - rho) * S
        self.groups.append((n, rho, float(np.trace(emp)) / self.width))

    # ---- prediction
    def covariance(self) -> np.ndarray:
        """Sigma = sum_k pi_k OAS(S_k) over the classes (groups) seen, pi_k = n_k / N."""
        N = float(self.counts.sum())
        D = self.width
        if self.keep_all:
            Sigma = np.zeros((D, D))
            for k, S in self.scatter.items():
                n = self.counts[k]
                emp = S / n
                rho = oas_shrinkage(emp, n)
                Sigma += (n / N) * (1.0 - rho) * emp
                Sigma[np.diag_indices(D)] += (n / N) * rho * float(np.trace(emp)) / D
            return Sigma
        Sigma = self.folded / N
        Sigma[np.diag_indices(D)] += sum(n * rho * m for n, rho, m in self.groups) / N
        return Sigma

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """w_k = Sigma^{-1} mu_k (least squares when Sigma is singular, as scikit-learn's lstsq) and b_k."""
        if self._head is None:
            seen = self.seen.numpy()
            Sigma = self.covariance()
            M = self.mean[seen]
            try:
                Wt = scipy.linalg.cho_solve(scipy.linalg.cho_factor(Sigma, check_finite=False), M.T, check_finite=False)
            except np.linalg.LinAlgError:
                Wt = scipy.linalg.lstsq(Sigma, M.T)[0]
            W = np.zeros((self.width, self.info.n_classes))
            b = np.full(self.info.n_classes, -np.inf)
            W[:, seen] = Wt
            priors = self.counts[seen] / self.counts[seen].sum()
            b[seen] = -0.5 * np.einsum("kd,dk->k", M, Wt) + np.log(priors)
            self._head = (W, b)
        return self._head

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.seen.any()):
            return torch.full((len(x), self.info.n_classes), float("-inf"))
        W, b = self.head()
        out = [self.embed(xb) @ W + b for xb in x.split(self.batch_size)] if len(x) else [np.zeros((0, len(b)))]
        return torch.from_numpy(np.concatenate(out)).float()

    def state_bytes(self) -> int:
        mats = [self.counts, self.mean, *self.scatter.values()] + ([self.folded] if self.folded is not None else [])
        rff = 0 if self.embedding == "none" else (self.normal.nelement() + self.offset.nelement()) * 8
        return int(sum(m.nbytes for m in mats)) + rff
