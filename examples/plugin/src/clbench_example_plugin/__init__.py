"""An example clbench strategy plug-in: a ridge-regression head on frozen features.

Everything a plug-in needs: subclass :class:`clbench.strategies.Strategy`, take hyperparameters as keyword
arguments with defaults, declare their valid values (``parameter_constraints``) and what can be tuned
(``search_space``), learn from ``exp.train`` (``x`` float32 in [0, 1] or features, ``y`` int64 labels) and
return scores of shape (N, n_classes) from ``predict``.
"""

from __future__ import annotations

import torch

from clbench.constraints import Interval
from clbench.strategies import Float, Strategy


class RidgeHead(Strategy):
    """Ridge regression of one-hot labels on the inputs, refitted on the sums of all data seen (exact, float64)."""

    wants_features = True  # gets the cached features of the benchmark's backbone (or flattened pixels)
    online = True  # learning an experience in chunks gives the same solution
    search_space = {"alpha": Float(1e-3, 1e3, log=True)}
    parameter_constraints = {"alpha": Interval(float, 0, None, "neither")}

    def __init__(self, info, *, seed: int = 0, device: str = "cpu", alpha: float = 1.0) -> None:
        super().__init__(info, seed=seed, device=device)
        self.alpha = alpha
        dim = 1
        for s in info.input_shape:
            dim *= int(s)
        self.gram = torch.zeros(dim, dim, dtype=torch.float64)
        self.xty = torch.zeros(dim, info.n_classes, dtype=torch.float64)
        self.weights = torch.zeros(dim, info.n_classes, dtype=torch.float64)

    def train_experience(self, exp) -> None:
        x = exp.train.x.flatten(1).double()
        y = torch.nn.functional.one_hot(exp.train.y, self.info.n_classes).double()
        self.gram += x.T @ x
        self.xty += x.T @ y
        eye = torch.eye(len(self.gram), dtype=torch.float64)
        self.weights = torch.linalg.solve(self.gram + self.alpha * eye, self.xty)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).double() @ self.weights).float()

    def state_bytes(self) -> int:
        return sum(t.nelement() * t.element_size() for t in (self.gram, self.xty, self.weights))
