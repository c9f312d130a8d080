"""RanPAC (McDonnell et al., NeurIPS 2023) on frozen features: random projection + ReLU, then a ridge head.

This is the **frozen-features variant** (the official code's Phase 2 alone): the backbone is never adapted;
the official method additionally trains a parameter-efficient adapter on the first task (Phase 1), which the
official tables credit with 0 to 11.5 points (see docs/methods/ptm-heads.md).
"""

from __future__ import annotations

import numpy as np
import torch

from clbench.constraints import AnyOf, Interval, NoneValue
from clbench.stream import StreamInfo, TrainView

from .closed_form import RIDGE_GRID, EigenRidge, Resolvable, RidgeStatistics, Snapshot, memoized, one_hot, validation_losses
from .frozen import FrozenFeatureStrategy, as_features
from .space import Float

VAL_FRACTION = 0.2


class RanPAC(Resolvable, FrozenFeatureStrategy):
    """RanPAC Phase 2 (RanPAC.py, inc_net.py of the official code), float64.

    * Projection: W in R^{d x M}, entries N(0, 1) unscaled (``torch.randn``), drawn once from the seed;
      h = ReLU(f^T W) with f the raw (not normalised) feature. ``projection_dim: 0`` is the "no RP" ablation:
      h = f, no ReLU.
    * Statistics over every sample seen: G = sum h h^T (M x M), Q = sum h y^T (y one-hot over all classes).
    * Ridge lambda_t, chosen again at every experience (``ridge: null``, the official default): the
      experience's samples are shuffled (a generator seeded from ``seed``), the first floor(0.8 N_t) fit and
      the rest validate; for each lambda in 10^-8 .. 10^8 (17 values) the validation loss is the mean squared
      error of H_val W_lambda against Y_val, with W_lambda the ridge fit on the first part only (the task-local
      Gram, not G), and lambda_t is the first argmin. One eigendecomposition of the smaller of H_fit^T H_fit and
      H_fit H_fit^T serves all 17 values (:func:`~clbench.strategies.closed_form.validation_losses`).
      A number for ``ridge`` fixes lambda instead (what a tuning study sets; re-solvable from a snapshot).
    * Head: W_o = (G + lambda_t I)^{-1} Q (Cholesky); score s_c = h^T W_o[:, c] (plain dot product, no bias);
      classes not seen yet are masked.

    For a fixed lambda, W_o equals batch ridge regression on every sample seen (exact sums); the choice of
    lambda depends on the shuffle and the experience boundaries. ``chosen_ridges`` lists lambda_t per experience.
    """

    search_space = {"ridge": Float(1e-8, 1e8, log=True)}
    parameter_constraints = {"projection_dim": Interval(int, 0),
                             "ridge": AnyOf(NoneValue(), Interval(float, 0, None, "neither")),
                             "batch_size": Interval(int, 1)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", projection_dim: int = 10000,
                 ridge: float | None = None, batch_size: int = 2048) -> None:
        super().__init__(info, seed=seed, device=device)
        self.projection_dim, self.ridge, self.batch_size = projection_dim, ridge, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.W_rand = (torch.randn(self.dim, projection_dim, generator=self.generator, dtype=torch.float64)
                       if projection_dim > 0 else None)
        width = projection_dim if projection_dim > 0 else self.dim
        self.stats = RidgeStatistics(width, info.n_classes)
        self.W_o: np.ndarray | None = None
        self.chosen_ridges: list[float] = []

    @property
    def retunable(self) -> tuple[str, ...]:  # type: ignore[override]
        """``ridge`` can be re-solved from a snapshot when it is fixed (not chosen per experience)."""
        return ("ridge",) if self.ridge is not None else ()

    # ---- the random-projection layer
    def embed(self, x: torch.Tensor) -> np.ndarray:
        """h = ReLU(f W) (or f when ``projection_dim`` is 0), float64, C-contiguous (N, M)."""
        def compute() -> np.ndarray:
            f = as_features(x).double()
            if self.W_rand is None:
                return np.ascontiguousarray(f.numpy())
            return np.ascontiguousarray(torch.relu_(f @ self.W_rand).numpy())

        return memoized(self.feature_memo, x, compute)

    def _embed_all(self, x: torch.Tensor) -> np.ndarray:
        if len(x) <= self.batch_size:
            return self.embed(x)
        return np.concatenate([self.embed(xb) for xb in x.split(self.batch_size)])

    def choose_ridge(self, H: np.ndarray, Y: np.ndarray) -> float:
        """lambda_t: the official 80/20 validation over :data:`RIDGE_GRID` on rows already in shuffled order."""
        n_fit = int(H.shape[0] * (1 - VAL_FRACTION))
        if n_fit < 1 or n_fit >= H.shape[0]:  # too few samples to validate: keep the previous choice
            return self.chosen_ridges[-1] if self.chosen_ridges else 1.0
        losses = validation_losses(H[:n_fit], Y[:n_fit], H[n_fit:], Y[n_fit:], RIDGE_GRID)
        return RIDGE_GRID[int(np.argmin(losses))]

    def train_experience(self, exp: TrainView) -> None:
        x, y = exp.train.x, exp.train.y
        perm = torch.randperm(len(y), generator=self.generator) if self.ridge is None else torch.arange(len(y))
        x, y = x[perm], y[perm]
        H, Y = self._embed_all(x), one_hot(y, self.info.n_classes)
        self.stats.add(H, Y)
        lam = self.choose_ridge(H, Y) if self.ridge is None else float(self.ridge)
        del H
        self.chosen_ridges.append(lam)
        self.W_o = self.stats.solve(lam)
        self.observe_labels(y)

    # ---- re-solving from a snapshot (issue 16: a tuning study pays the Gram and the factor once)
    def solver_state(self, factor: bool = True) -> Snapshot:
        """What a re-solve needs after the experiences so far, and the seen classes.

        ``factor=True``: the eigendecomposition of the current G (one M x M ``eigh`` now; each re-solve then
        costs M^2 C flops). ``factor=False``: a copy of (G, Q) (each re-solve is then one Cholesky
        factorisation, M^3/3 flops); cheaper when few values will be tried.
        """
        return Snapshot(self.stats.factor() if factor else self.stats.copy(), self.seen.clone())

    def resolve(self, state: Snapshot, **params) -> None:
        """W_o = (G + ridge I)^{-1} Q from the snapshot (eigendecomposition or statistics)."""
        self._check_retunable(params)
        data: EigenRidge | RidgeStatistics = state.data
        self.ridge = float(params.get("ridge", self.ridge))
        self.W_o = data.solve(self.ridge)
        self.seen = state.seen.clone()

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.W_o is None:
            return torch.full((len(x), self.info.n_classes), float("-inf"))
        out = [torch.from_numpy(self.embed(xb) @ self.W_o) for xb in x.split(self.batch_size)] if len(x) else []
        scores = torch.cat(out) if out else torch.zeros(0, self.info.n_classes, dtype=torch.float64)
        return self.mask_unseen(scores.float())

    def state_bytes(self) -> int:
        rand = 0 if self.W_rand is None else self.W_rand.nelement() * self.W_rand.element_size()
        return int(rand + self.stats.nbytes() + (0 if self.W_o is None else self.W_o.nbytes))
