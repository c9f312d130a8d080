"""Analytic (closed-form) class-incremental learning on frozen features: ACIL, DS-AL, G-ACIL.

All three learn a ridge regression from a fixed random "buffer" layer to one-hot labels, exactly and
recursively, in float64 (float32 breaks the weight invariance below):

    X = ReLU(f B)           B in R^{D x w}, entries N(0, 1), bias-free, drawn from the seed, never trained
    W_t = (sum_{k<=t} X_k^T X_k + gamma I)^{-1} sum_{k<=t} X_k^T Y_k          (joint ridge on all data seen)

Two exactly equivalent solvers:

* ``gram`` (default, cheap on CPU): accumulate G = sum X^T X (BLAS ``syrk``, upper triangle) and
  H = sum X^T Y, then one Cholesky solve W = (G + gamma I)^{-1} H per phase;
* ``rls``: recursive least squares, per batch of ``batch_size`` rows, starting from R_0 = I / gamma, W = 0:
  K = (I + X R X^T)^{-1};  R <- R - R X^T K X R;  W <- W + R X^T (Y - X W).

Weight invariance: after any sequence of phases W equals the joint ridge solution on all data seen.
Y is one-hot over all ``n_classes`` columns, so the columns of classes not seen yet are zero (the
zero-padding of new class columns); they are masked at prediction.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from scipy.linalg.blas import dsyrk

from clbench.stream import StreamInfo, TrainView
from clbench.constraints import Interval, Options
from clbench.errors import UserError

from .frozen import FrozenFeatureStrategy, as_features
from .space import Choice, Float

SOLVERS = ("gram", "rls")


class RidgeStream:
    """float64 recursive ridge regression of targets Y on buffer features X (see the module docstring)."""

    def __init__(self, width: int, n_out: int, gamma: float, solver: str) -> None:
        if solver not in SOLVERS:
            raise UserError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
        if gamma <= 0:
            raise UserError(f"gamma must be > 0 (the ridge term keeps the solve well posed), got {gamma}")
        self.width, self.n_out, self.gamma, self.solver = width, n_out, gamma, solver
        self.W = np.zeros((width, n_out))
        if solver == "gram":
            self.G = np.zeros((width, width), order="F")  # upper triangle of sum X^T X
            self.H = np.zeros((width, n_out))
        else:
            self.R = np.eye(width) / gamma

    def add(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Fold rows X (n, w) float64 with targets Y (n, n_out) into the statistics (or RLS state)."""
        if self.solver == "gram":
            # X is C-contiguous, so X.T is Fortran-contiguous: syrk(a = X^T) gives a a^T = X^T X, no copy
            self.G = dsyrk(1.0, X.T, beta=1.0, c=self.G, trans=0, lower=0, overwrite_c=1)
            self.H += X.T @ Y
        else:
            RXt = self.R @ X.T
            # R X^T K X R with K = (I + X R X^T)^{-1}, by a symmetric solve; R kept exactly symmetric
            self.R -= RXt @ scipy.linalg.solve(np.eye(X.shape[0]) + X @ RXt, RXt.T, assume_a="pos")
            self.R = (self.R + self.R.T) / 2
            self.W += self.R @ (X.T @ (Y - X @ self.W))

    def solve(self) -> np.ndarray:
        """W = (G + gamma I)^{-1} H by Cholesky (gram); the RLS state already holds W."""
        if self.solver == "gram":
            A = self.G.copy(order="F")
            A[np.diag_indices_from(A)] += self.gamma
            self.W = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, lower=False, overwrite_a=True, check_finite=False),
                                            self.H, check_finite=False)
        return self.W

    def nbytes(self) -> int:
        mats = [self.W] + ([self.G, self.H] if self.solver == "gram" else [self.R])
        return int(sum(m.nbytes for m in mats))


class ACIL(FrozenFeatureStrategy):
    """ACIL (Zhuang et al., NeurIPS 2022): random ReLU buffer + exact recursive ridge, float64.

    Hyperparameters: ``buffer_size`` w (8192), ``gamma`` (0.1), ``solver`` gram|rls, ``batch_size`` (rows
    per update; the result does not depend on it). Prediction: scores X W (unseen classes -inf).
    """

    search_space = {"buffer_size": Choice([1024, 2048, 4096, 8192]), "gamma": Float(1e-3, 1e3, log=True)}
    parameter_constraints = {"buffer_size": Interval(int, 1), "gamma": Interval(float, 0, None, "neither"),
                             "solver": Options(*SOLVERS), "batch_size": Interval(int, 1)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", buffer_size: int = 8192,
                 gamma: float = 0.1, solver: str = "gram", batch_size: int = 2048) -> None:
        super().__init__(info, seed=seed, device=device)
        self.buffer_size, self.batch_size = buffer_size, batch_size
        g = torch.Generator().manual_seed(seed)
        self.B = torch.randn(self.dim, buffer_size, generator=g, dtype=torch.float64)
        self.main = RidgeStream(buffer_size, info.n_classes, gamma, solver)

    # ---- the buffer layer
    def projection(self, x: torch.Tensor) -> torch.Tensor:
        """f B in float64 (N, w)."""
        return as_features(x).double() @ self.B

    def buffer(self, x: torch.Tensor) -> np.ndarray:
        """X = ReLU(f B), float64, C-contiguous (N, w)."""
        return np.ascontiguousarray(torch.relu_(self.projection(x)).numpy())

    def one_hot(self, y: torch.Tensor) -> np.ndarray:
        return np.eye(self.info.n_classes)[y.numpy()]

    def train_experience(self, exp: TrainView) -> None:
        for x, y in exp.train.batches(self.batch_size):
            self.main.add(self.buffer(x), self.one_hot(y))
            self.observe_labels(y)
        self.main.solve()

    @property
    def W(self) -> np.ndarray:
        return self.main.W

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.buffer(x) @ self.main.W)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.scores(xb) for xb in x.split(self.batch_size)]) if len(x) else torch.zeros(0, self.info.n_classes)
        return self.mask_unseen(out.float())

    def state_bytes(self) -> int:
        return int(self.B.nelement() * self.B.element_size()) + self.main.nbytes()


class DSAL(ACIL):
    """DS-AL (Zhuang et al., AAAI 2024): ACIL main stream + a compensation stream.

    The compensation stream is a second exact ridge (``comp_gamma``, 0.1) on X_c = tanh(f B) (tanh of the
    raw projection, not of the ReLU buffer), fitted to the main stream's residual on the phase's data,
    Y_res = Y - X W_main, keeping only the columns of the classes first seen in this phase (previous-label
    cleansing). Output = X W_main + C * X_c W_comp with C = ``comp_scale`` (0.6 for CIFAR).
    """

    search_space = {**ACIL.search_space, "comp_scale": Float(0.0, 2.0), "comp_gamma": Float(1e-3, 1e3, log=True)}
    parameter_constraints = {"comp_gamma": Interval(float, 0, None, "neither"), "comp_scale": Interval(float)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", buffer_size: int = 8192,
                 gamma: float = 0.1, solver: str = "gram", batch_size: int = 2048, comp_gamma: float = 0.1,
                 comp_scale: float = 0.6) -> None:
        super().__init__(info, seed=seed, device=device, buffer_size=buffer_size, gamma=gamma, solver=solver,
                         batch_size=batch_size)
        self.comp = RidgeStream(buffer_size, info.n_classes, comp_gamma, solver)
        self.comp_scale = comp_scale

    def train_experience(self, exp: TrainView) -> None:
        before = self.seen.clone()
        super().train_experience(exp)  # main stream, solved
        new_cols = self.seen & ~before
        for x, y in exp.train.batches(self.batch_size):
            p = self.projection(x)
            X = np.ascontiguousarray(torch.relu(p).numpy())
            res = self.one_hot(y) - X @ self.main.W
            res[:, ~new_cols.numpy()] = 0.0
            self.comp.add(np.ascontiguousarray(torch.tanh(p).numpy()), res)
        self.comp.solve()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        p = self.projection(x)
        main = np.ascontiguousarray(torch.relu(p).numpy()) @ self.main.W
        comp = np.ascontiguousarray(torch.tanh(p).numpy()) @ self.comp.W
        return torch.from_numpy(main + self.comp_scale * comp)

    def state_bytes(self) -> int:
        return super().state_bytes() + self.comp.nbytes()


class GACIL(ACIL):
    """G-ACIL / GACL (Zhuang et al., NeurIPS 2024): analytic learning for the generalized (blurry) setting.

    A phase may mix new and already-seen classes (Si-Blurry streams: ``blurry:`` on a benchmark); the
    label space grows with every class met in the data, not with the experience's declared classes, and
    the same closed form holds: W = (sum X^T X + gamma I)^{-1} sum X^T Y over all samples seen, whatever
    the class mixture of each phase. The paper learns online in batches of 64; on CPU the exactly
    equivalent accumulate-and-solve form is used (``solver: rls`` with ``batch_size: 64`` gives the
    per-batch recursion). Defaults follow the paper's pretrained setting: buffer 5000, gamma 100.
    """

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", buffer_size: int = 5000,
                 gamma: float = 100.0, solver: str = "gram", batch_size: int = 2048) -> None:
        super().__init__(info, seed=seed, device=device, buffer_size=buffer_size, gamma=gamma, solver=solver,
                         batch_size=batch_size)
