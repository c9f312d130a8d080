"""Analytic (closed-form) class-incremental learning on frozen features: ACIL, DS-AL, G-ACIL.

All three learn a ridge regression from a fixed random "buffer" layer to one-hot labels, exactly and
recursively, in float64 (float32 breaks the weight invariance below):

    X = ReLU(f B)           B in R^{D x w}, bias-free, drawn from the seed, never trained
    W_t = (sum_{k<=t} X_k^T X_k + gamma I)^{-1} sum_{k<=t} X_k^T Y_k          (joint ridge on all data seen)

The buffer B (``init``):

* ``uniform`` (default, the official code's): entries i.i.d. U(-1/sqrt(D), 1/sqrt(D)), D = feature
  dimension. This is ``torch.nn.Linear``'s default initialisation (``kaiming_uniform_(a=sqrt(5))`` gives the
  bound gain * sqrt(3 / D) with gain = sqrt(2 / (1 + 5)), i.e. 1 / sqrt(D)), which the official buffers keep:
  ACL ``analytic/Buffer.py`` L37-63 (``RandomBuffer`` subclasses ``nn.Linear``, bias False, calls
  ``reset_parameters``; ZHUANGHP/Analytic-continual-learning at 0afd6bf) and GACL ``models/pretrained.py``
  L60-62 (``nn.Linear(feature_dim, hidden, bias=False)``; CHEN-YIZHU/GACL at fc21369). Entry variance
  1 / (3 D), so a projection f b has standard deviation ||f|| / sqrt(3 D) and DS-AL's tanh branch stays
  out of saturation.
* ``normal``: entries N(0, 1) (clbench before issue 11). Its projections are sqrt(3 D) times larger, so the
  same gamma is 3 D times weaker relative to X^T X (3840x for 1280-d features) and tanh(f B) is nearly
  binary; kept only as an option for comparison with those earlier numbers.

Two exactly equivalent solvers:

* ``gram`` (default, cheap on CPU): accumulate G = sum X^T X (BLAS ``syrk``, upper triangle) and
  H = sum X^T Y, then one Cholesky solve W = (G + gamma I)^{-1} H per phase;
* ``rls``: recursive least squares, per batch of ``batch_size`` rows, starting from R_0 = I / gamma, W = 0:
  K = (I + X R X^T)^{-1};  R <- R - R X^T K X R;  W <- W + R X^T (Y - X W).

Weight invariance: after any sequence of phases W equals the joint ridge solution on all data seen.
Y is one-hot over all ``n_classes`` columns, so the columns of classes not seen yet are zero (the
zero-padding of new class columns); they are masked at prediction.

Defaults and where they come from (ACL = ZHUANGHP/Analytic-continual-learning at 0afd6bf, GACL =
CHEN-YIZHU/GACL at fc21369):

* ACIL / DS-AL ``gamma`` 0.1 and DS-AL ``comp_gamma`` 0.1: ACL ``config.py`` L210-216 (``--gamma``) and
  L226-231 (``--gamma-comp``), also every example command of its README. (The ``ACIL``/``DSAL`` class
  defaults of 1e-3, ``analytic/ACIL.py`` L34 and ``analytic/DSAL.py`` L25-26, are not used on the CLI path.)
* ACIL / DS-AL ``buffer_size`` 8192: ACL ``config.py`` L218-224, README's CIFAR-100 setting.
* DS-AL ``comp_scale`` C 0.6: ACL README L142-144 ("the best value is 0.6 for the CIFAR-100", from a grid
  search over [0, 2]; 1.5 for ImageNet-1k). The CLI default ``-C`` is 1 (``config.py`` L240-246) and so is
  the class default (``analytic/DSAL.py`` L27), but that is a placeholder the README overrides; clbench's
  frozen tables are CIFAR-sized, so the README's CIFAR value is kept.
* G-ACIL ``buffer_size`` 5000 and ``gamma`` 100: GACL ``scripts/gacl.sh`` L19/24/29 (CIFAR-100,
  Tiny-ImageNet, ImageNet-R alike) and ``configuration/config.py`` L132-133.

Known differences from the official code: GACL fits every online batch ``online_iter`` = 3 times
(``scripts/gacl.sh`` L16), so each sample enters R and W three times (clbench: once); GACL's buffer matmul
runs in float32 before the cast to float64 (clbench: float64 throughout).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
from scipy.linalg.blas import dsyrk

from clbench.stream import StreamInfo, TrainView
from clbench.constraints import Interval, Options
from clbench.errors import UserError

from .closed_form import EigenRidge, Resolvable, RidgeStatistics, Snapshot, memoized
from .frozen import FrozenFeatureStrategy, as_features
from .space import Choice, Float

SOLVERS = ("gram", "rls")
INITS = ("uniform", "normal")


def random_buffer(dim: int, width: int, init: str, seed: int) -> torch.Tensor:
    """The (dim, width) float64 buffer B drawn from ``seed``: U(-1/sqrt(dim), 1/sqrt(dim)) or N(0, 1).

    ``uniform`` draws u ~ U[0, 1) and returns (2 u - 1) / sqrt(dim), nn.Linear's default scale (see the
    module docstring).
    """
    if init not in INITS:
        raise UserError(f"unknown buffer init {init!r}; valid: {', '.join(INITS)}")
    g = torch.Generator().manual_seed(seed)
    if init == "normal":
        return torch.randn(dim, width, generator=g, dtype=torch.float64)
    u = torch.rand(dim, width, generator=g, dtype=torch.float64)
    return (2.0 * u - 1.0) / math.sqrt(dim)


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


class ACIL(Resolvable, FrozenFeatureStrategy):
    """ACIL (Zhuang et al., NeurIPS 2022): random ReLU buffer + exact recursive ridge, float64.

    Hyperparameters: ``buffer_size`` w (8192), ``gamma`` (0.1), ``init`` uniform|normal (the buffer's
    distribution, uniform = the official nn.Linear scale), ``solver`` gram|rls, ``batch_size`` (rows per
    update; the result does not depend on it). Prediction: scores X W (unseen classes -inf). Defaults: see
    the module docstring.

    ``online``: an experience may be learnt in consecutive chunks (the loop's ``eval_period``): by the weight
    invariance the result after the last chunk is the same W, so anytime accuracy can be measured.

    Re-solvable (:class:`~clbench.strategies.closed_form.Resolvable`) for ``gamma``: the statistics G, H do not
    depend on it, so a tuning study fits once and solves (G_t + gamma I)^{-1} H_t per trial (``solver: gram``).
    """

    online = True
    search_space = {"buffer_size": Choice([1024, 2048, 4096, 8192]), "gamma": Float(1e-3, 1e3, log=True)}
    parameter_constraints = {"buffer_size": Interval(int, 1), "gamma": Interval(float, 0, None, "neither"),
                             "solver": Options(*SOLVERS), "batch_size": Interval(int, 1), "init": Options(*INITS)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", buffer_size: int = 8192,
                 gamma: float = 0.1, solver: str = "gram", batch_size: int = 2048, init: str = "uniform") -> None:
        super().__init__(info, seed=seed, device=device)
        self.buffer_size, self.batch_size, self.init = buffer_size, batch_size, init
        self.B = random_buffer(self.dim, buffer_size, init, seed)
        self.main = RidgeStream(buffer_size, info.n_classes, gamma, solver)

    # ---- the buffer layer
    def projection(self, x: torch.Tensor) -> torch.Tensor:
        """f B in float64 (N, w); read from ``feature_memo`` for inputs projected before (tuning by re-solving)."""
        return memoized(self.feature_memo, x, lambda: as_features(x).double() @ self.B)

    def buffer(self, x: torch.Tensor) -> np.ndarray:
        """X = ReLU(f B), float64, C-contiguous (N, w)."""
        return np.ascontiguousarray(torch.relu(self.projection(x)).numpy())

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

    # ---- re-solving from a snapshot (a gamma study pays the Gram once)
    @property
    def retunable(self) -> tuple[str, ...]:  # type: ignore[override]
        """``gamma`` with the Gram solver (``rls`` keeps no Gram matrix: a gamma study refits)."""
        return ("gamma",) if self.main.solver == "gram" else ()

    def _ridge_state(self, stream: RidgeStream, factor: bool) -> EigenRidge | RidgeStatistics:
        if stream.solver != "gram":
            raise UserError(f"{type(self).__name__}: solver: rls keeps no Gram matrix to re-solve from; "
                            f"fix: solver: gram (the same solution) for tuning by re-solving")
        stats = RidgeStatistics.of(stream.G, stream.H)
        return stats.factor() if factor else stats.copy()

    def solver_state(self, factor: bool = True) -> Snapshot:
        """The main stream's (G, H) after the experiences so far: their eigendecomposition (``factor``; each
        re-solve then costs w^2 C flops) or a copy (each re-solve one Cholesky factorisation, w^3 / 3 flops)."""
        return Snapshot(self._ridge_state(self.main, factor), self.seen.clone())

    def resolve(self, state: Snapshot, **params) -> None:
        """W = (G + gamma I)^{-1} H from the snapshot."""
        self._check_retunable(params)
        self.main.gamma = float(params.get("gamma", self.main.gamma))
        self.main.W = state.data.solve(self.main.gamma)
        self.seen = state.seen.clone()


class DSAL(ACIL):
    """DS-AL (Zhuang et al., AAAI 2024): ACIL main stream + a compensation stream.

    The compensation stream is a second exact ridge (``comp_gamma``, 0.1) on X_c = tanh(f B) (tanh of the
    raw projection, not of the ReLU buffer), fitted to the main stream's residual on the phase's data,
    Y_res = Y - X W_main, keeping only the columns of the classes first seen in this phase (previous-label
    cleansing). Output = X W_main + C * X_c W_comp with C = ``comp_scale`` (0.6, the official README's
    CIFAR-100 value; see the module docstring for why not the CLI's 1).

    Not ``online``: the compensation stream's "new classes" are those first seen in the call, so learning a
    phase in chunks would cleanse other columns than learning it at once.

    Re-solvable for ``comp_gamma`` and ``comp_scale`` only: the compensation statistics are built from the main
    stream's residual, which depends on ``gamma``, so a ``gamma`` study refits.
    """

    online = False

    search_space = {**ACIL.search_space, "comp_scale": Float(0.0, 2.0), "comp_gamma": Float(1e-3, 1e3, log=True)}
    parameter_constraints = {"comp_gamma": Interval(float, 0, None, "neither"), "comp_scale": Interval(float)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", buffer_size: int = 8192,
                 gamma: float = 0.1, solver: str = "gram", batch_size: int = 2048, init: str = "uniform",
                 comp_gamma: float = 0.1, comp_scale: float = 0.6) -> None:
        super().__init__(info, seed=seed, device=device, buffer_size=buffer_size, gamma=gamma, solver=solver,
                         batch_size=batch_size, init=init)
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

    @property
    def retunable(self) -> tuple[str, ...]:  # type: ignore[override]
        """``comp_gamma`` and ``comp_scale`` with the Gram solver."""
        return ("comp_gamma", "comp_scale") if self.comp.solver == "gram" else ()

    def solver_state(self, factor: bool = True) -> Snapshot:
        """The main stream's solved W and the compensation stream's statistics (factored or copied)."""
        return Snapshot(self._ridge_state(self.comp, factor), self.seen.clone(), {"main_W": self.main.W.copy()})

    def resolve(self, state: Snapshot, **params) -> None:
        self._check_retunable(params)
        self.main.W = state.extra["main_W"].copy()
        self.comp.gamma = float(params.get("comp_gamma", self.comp.gamma))
        self.comp_scale = float(params.get("comp_scale", self.comp_scale))
        self.comp.W = state.data.solve(self.comp.gamma)
        self.seen = state.seen.clone()


class GACIL(ACIL):
    """G-ACIL / GACL (Zhuang et al., NeurIPS 2024): analytic learning for the generalized (blurry) setting.

    A phase may mix new and already-seen classes (Si-Blurry streams: ``blurry:`` on a benchmark); the
    label space grows with every class met in the data, not with the experience's declared classes, and
    the same closed form holds: W = (sum X^T X + gamma I)^{-1} sum X^T Y over all samples seen, whatever
    the class mixture of each phase. The paper learns online in batches of 64; on CPU the exactly
    equivalent accumulate-and-solve form is used (``solver: rls`` with ``batch_size: 64`` gives the
    per-batch recursion). Defaults follow the official GACL scripts: buffer 5000, gamma 100
    (``scripts/gacl.sh`` L19), the buffer ``nn.Linear``-initialised (``init: uniform``).
    """

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", buffer_size: int = 5000,
                 gamma: float = 100.0, solver: str = "gram", batch_size: int = 2048, init: str = "uniform") -> None:
        super().__init__(info, seed=seed, device=device, buffer_size=buffer_size, gamma=gamma, solver=solver,
                         batch_size=batch_size, init=init)
