"""FeCAM (Goswami et al., NeurIPS 2023): class prototypes with Mahalanobis distances on frozen features."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from clbench.constraints import Boolean, Interval, Options
from clbench.errors import UserError
from clbench.stream import StreamInfo, TrainView

from .closed_form import Resolvable, Snapshot, merge_scatter
from .frozen import FrozenFeatureStrategy, as_features
from .space import Float

COVARIANCES = ("per_class", "common")
TUKEY = ("auto", "on", "off")
NORM_EPS = 1e-12  # F.normalize's eps
TUKEY_NORM_EPS = 1e-8  # EPSILON of the official ResNet code's test-time normalisation


def shrink(cov: np.ndarray, gamma1: float, gamma2: float) -> np.ndarray:
    """FeCAM's covariance shrinkage (``shrink_cov`` of the official code).

    S' = S + gamma1 V1 I + gamma2 V2 (1 1^T - I), with V1 = mean of the diagonal of S and V2 = mean of the
    non-zero off-diagonal entries of S (0 when there is none).
    """
    d = cov.shape[0]
    v1 = float(np.mean(np.diagonal(cov)))
    off = cov[~np.eye(d, dtype=bool)]
    nz = off[off != 0.0]
    v2 = float(nz.mean()) if nz.size else 0.0
    out = cov + gamma2 * v2
    out[np.diag_indices(d)] += gamma1 * v1 - gamma2 * v2
    return out


def correlation(cov: np.ndarray) -> np.ndarray:
    """Correlation normalisation R_ij = S_ij / sqrt(S_ii S_jj) (``normalize_cov`` of the official code)."""
    sd = np.sqrt(np.diagonal(cov))
    return cov / np.outer(sd, sd)


def precision_factor(A: np.ndarray) -> tuple[str, np.ndarray]:
    """A way to evaluate z^T pinv(A) z for symmetric PSD A: ("chol", L) with A = L L^T when A is numerically
    positive definite (then pinv(A) = A^{-1} and z^T A^{-1} z = ||L^{-1} z||^2), else ("pinv", pinvh(A)).

    Numerically definite: Cholesky succeeds and every pivot L_ii^2 exceeds d eps max_i A_ii (pinvh's cutoff
    scale); a singular A (e.g. an unshrunk covariance with a constant or repeated feature) can pass Cholesky
    with rounding-sized pivots, whose inverse would blow the distances up.
    """
    d = A.shape[0]
    try:
        L = scipy.linalg.cholesky(A, lower=True, check_finite=False)
        if float(np.min(np.diagonal(L)) ** 2) > d * np.finfo(float).eps * float(np.max(np.diagonal(A))):
            return "chol", L
    except np.linalg.LinAlgError:
        pass
    return "pinv", scipy.linalg.pinvh(A)


def squared_mahalanobis(Z: np.ndarray, factor: tuple[str, np.ndarray]) -> np.ndarray:
    """Row-wise z^T pinv(A) z for the rows of Z, with A given by :func:`precision_factor`."""
    kind, M = factor
    if kind == "chol":
        V = scipy.linalg.solve_triangular(M, Z.T, lower=True, check_finite=False)
        return np.einsum("ij,ij->j", V, V)
    return np.einsum("ij,ij->i", Z @ M, Z)


class FeCAM(Resolvable, FrozenFeatureStrategy):
    """FeCAM's frozen-feature classifier, float64: argmin over seen classes c of (z - mu_c)^T pinv(R_c) (z - mu_c).

    Features (``tukey``):

    * off (the official ViT scripts, signed ViT features): z = f / ||f||; mu_c = mean of z over the class;
      the class covariance S_c = np.cov of z (unbiased); the test distance uses z - mu_c (mu_c not
      re-normalised).
    * on (the official ResNet code; post-ReLU features only): Tukey's transform phi(f) = f^beta
      (``tukey_beta``, 0.5). S_c = np.cov of phi(f) of the raw features; mu_c = mean of the raw f; the test
      distance uses normalize(phi(f / (||f|| + 1e-8))) - normalize(phi(mu_c)).
    * auto (default): on when every feature of the first training experience is >= 0, else off.

    Covariance (``covariance``):

    * per_class (default): R_c = correlation(shrink(S_c, gamma1, gamma2)) (:func:`shrink`, :func:`correlation`;
      ``normalize_cov: false`` skips the correlation normalisation). Defaults (gamma1, gamma2) = (1, 0) are
      those of the official ViT CIFAR-100 / CoRe50 scripts ((10, 10) for ImageNet-R; the ResNet code shrinks
      twice with (1, 1), the same as one shrink with (3, 3)).
    * common (``utils/maha_utils.py``): one matrix for all classes; Sigma_1 = np.cov of all the first
      experience's features (not shrunk), then Sigma_t = r Sigma_{t-1} + (1 - r) shrink(np.cov(experience t))
      with r = K_old / K_total (classes seen before the experience / after it). It includes between-class
      scatter and has no correlation normalisation.

    pinv(A) is computed as A^{-1} by Cholesky when A is positive definite (the same matrix), else by pinvh.
    Class statistics are running counts, means and scatter matrices (exact in any batch split). The official
    ResNet code's Euclidean first task and its trained backbone are not part of this frozen variant.
    """

    search_space = {"gamma1": Float(1e-2, 1e2, log=True), "gamma2": Float(0.0, 10.0)}
    parameter_constraints = {"gamma1": Interval(float, 0), "gamma2": Interval(float, 0),
                             "covariance": Options(*COVARIANCES), "tukey": Options(*TUKEY),
                             "tukey_beta": Interval(float, 0, None, "neither"), "normalize_cov": Boolean(),
                             "batch_size": Interval(int, 1)}
    @property
    def retunable(self) -> tuple[str, ...]:  # type: ignore[override]
        """``gamma1``, ``gamma2`` with per-class covariances; none with the common one (its running average mixes
        the shrinkage in)."""
        return ("gamma1", "gamma2") if self.covariance == "per_class" else ()

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", gamma1: float = 1.0,
                 gamma2: float = 0.0, covariance: str = "per_class", tukey: str = "auto", tukey_beta: float = 0.5,
                 normalize_cov: bool = True, batch_size: int = 4096) -> None:
        super().__init__(info, seed=seed, device=device)
        for name, value, valid in (("covariance", covariance, COVARIANCES), ("tukey", tukey, TUKEY)):
            if value not in valid:
                raise UserError(f"fecam: unknown {name} {value!r}; valid: {', '.join(valid)}")
        self.gamma1, self.gamma2, self.covariance = gamma1, gamma2, covariance
        self.tukey, self.tukey_beta, self.normalize_cov, self.batch_size = tukey, tukey_beta, normalize_cov, batch_size
        self.use_tukey: bool | None = {"on": True, "off": False}.get(tukey)
        d, k = self.dim, info.n_classes
        self.counts = np.zeros(k)  # samples per class
        self.mean = np.zeros((k, d))  # mean of the prototype features (z, or raw f with Tukey)
        self.cov_counts = np.zeros(k)
        self.cov_mean = np.zeros((k, d))  # mean of the covariance features (z, or phi(f) with Tukey)
        self.scatter = np.zeros((k, d, d)) if covariance == "per_class" else None
        self.common: np.ndarray | None = None  # common covariance (covariance: common)
        self._factors: dict[int, tuple[str, np.ndarray]] = {}

    # ---- feature maps
    def phi(self, f: np.ndarray) -> np.ndarray:
        """Tukey's transform f^beta (non-negative features only)."""
        if (f < 0).any():
            raise UserError("fecam: Tukey's transform needs non-negative features (post-ReLU), and these have "
                            "negative values; fix: set tukey: off")
        return np.power(f, self.tukey_beta)

    @staticmethod
    def _normalize(f: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), eps)

    def _train_features(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prototype features, covariance features) of training rows."""
        if self.use_tukey:
            return f, self.phi(f)
        z = self._normalize(f)
        return z, z

    def _test_features(self, f: np.ndarray) -> np.ndarray:
        if self.use_tukey:
            u = f / (np.linalg.norm(f, axis=1, keepdims=True) + TUKEY_NORM_EPS)
            return self._normalize(self.phi(u))
        return self._normalize(f)

    def prototypes(self) -> np.ndarray:
        """The class centres the test features are compared to (K, d)."""
        if self.use_tukey:
            return self._normalize(self.phi(np.maximum(self.mean, 0.0)))
        return self.mean

    # ---- training
    def train_experience(self, exp: TrainView) -> None:
        if self.use_tukey is None and len(exp.train):
            self.use_tukey = bool((exp.train.x >= 0).all())
        k_old = int(self.seen.sum())
        task_n, task_mean, task_scatter = 0.0, None, None
        changed = set()
        for xb, yb in exp.train.batches(self.batch_size):
            f = as_features(xb).double().numpy()
            y = yb.numpy()
            proto, covf = self._train_features(f)
            merge_scatter(self.counts, self.mean, proto, y)
            if self.scatter is not None:
                merge_scatter(self.cov_counts, self.cov_mean, covf, y, scatter_a=self.scatter)
            else:  # covariance of all the experience's features (one group)
                n1 = np.array([task_n])
                m1 = np.zeros((1, covf.shape[1])) if task_mean is None else task_mean
                s1 = np.zeros((1, covf.shape[1], covf.shape[1])) if task_scatter is None else task_scatter
                merge_scatter(n1, m1, covf, np.zeros(len(y), dtype=np.int64), scatter_a=s1)
                task_n, task_mean, task_scatter = float(n1[0]), m1, s1
            changed.update(np.unique(y).tolist())
            self.observe_labels(yb)
        if self.scatter is None and task_n > 1:
            cov_t = task_scatter[0] / (task_n - 1)
            if self.common is None:
                self.common = cov_t
            else:
                r = k_old / int(self.seen.sum())
                self.common = r * self.common + (1 - r) * shrink(cov_t, self.gamma1, self.gamma2)
            self._factors = {}
        for k in changed:
            self._factors.pop(k, None)

    # ---- prediction
    def class_matrix(self, k: int) -> np.ndarray:
        """R_k = correlation(shrink(S_k)) (per-class), with S_k = np.cov of the class's covariance features."""
        n = self.cov_counts[k]
        S = self.scatter[k] / (n - 1) if n > 1 else np.zeros((self.dim, self.dim))
        A = shrink(S, self.gamma1, self.gamma2)
        if self.normalize_cov:
            diag = np.diagonal(A)
            if not (diag > 0).all():  # a degenerate class (one sample, or constant features): Euclidean distance
                return np.eye(self.dim)
            A = correlation(A)
        return A

    def _factor(self, k: int) -> tuple[str, np.ndarray]:
        key = -1 if self.scatter is None else k
        if key not in self._factors:
            A = self.common if self.scatter is None else self.class_matrix(k)
            self._factors[key] = precision_factor(A)
        return self._factors[key]

    def distances(self, f: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances (N, K) of raw features f to every seen class (inf for unseen ones)."""
        z = self._test_features(f)
        mu = self.prototypes()
        out = np.full((f.shape[0], self.info.n_classes), np.inf)
        seen = np.flatnonzero(self.seen.numpy())
        if self.scatter is None:  # one matrix: whiten z and the centres once, then ||a - b||^2
            kind, M = self._factor(-1)
            if kind == "chol":
                a = scipy.linalg.solve_triangular(M, z.T, lower=True, check_finite=False).T
                b = scipy.linalg.solve_triangular(M, mu[seen].T, lower=True, check_finite=False).T
                out[:, seen] = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
            else:
                zp, mp = z @ M, mu[seen] @ M
                out[:, seen] = (zp * z).sum(1)[:, None] - 2 * z @ mp.T + (mp * mu[seen]).sum(1)[None, :]
            return np.maximum(out, 0.0)
        for k in seen:
            out[:, k] = squared_mahalanobis(z - mu[k], self._factor(int(k)))
        return out

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.scatter is None and self.common is None:
            return torch.full((len(x), self.info.n_classes), float("-inf"))
        d = self.distances(as_features(x).double().numpy())
        return torch.from_numpy(-d).float()

    # ---- re-solving (the statistics do not depend on gamma1, gamma2)
    def solver_state(self) -> Snapshot:
        if self.scatter is None:
            raise UserError("fecam: covariance: common mixes the shrinkage into its running average, so it cannot be "
                            "re-solved from a snapshot; fix: tune it by refitting")
        return Snapshot((self.cov_counts.copy(), self.scatter.copy()), self.seen.clone(),
                        {"counts": self.counts.copy(), "mean": self.mean.copy(), "cov_mean": self.cov_mean.copy(),
                         "use_tukey": self.use_tukey})

    def resolve(self, state: Snapshot, **params) -> None:
        self._check_retunable(params)
        self.cov_counts, self.scatter = state.data[0].copy(), state.data[1].copy()
        self.counts, self.mean = state.extra["counts"].copy(), state.extra["mean"].copy()
        self.cov_mean, self.use_tukey = state.extra["cov_mean"].copy(), state.extra["use_tukey"]
        self.gamma1 = float(params.get("gamma1", self.gamma1))
        self.gamma2 = float(params.get("gamma2", self.gamma2))
        self.seen = state.seen.clone()
        self._factors = {}

    def state_bytes(self) -> int:
        mats = [self.counts, self.mean, self.cov_counts, self.cov_mean]
        mats += [m for m in (self.scatter, self.common) if m is not None]
        return int(sum(m.nbytes for m in mats) + sum(f[1].nbytes for f in self._factors.values()))
