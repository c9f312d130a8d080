"""SI and EWC against hand computations on tiny models (issue 11, items 4 and 5).

The two-parameter model has logits (a x, b) for a scalar input x, so the cross-entropy gradients are
written out here: with p = softmax(a x, b), d CE / d a = (p_0 - [y = 0]) x and d CE / d b = p_1 - [y = 1].
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clbench.stream import StreamInfo, TensorData, TrainData, TrainView
from clbench.strategies.regularization import EWC, SI

INFO = StreamInfo(input_shape=(1,), n_classes=2, scenario="class-il")


class TwoParam(torch.nn.Module):
    """logits = (a x, b): two scalar parameters."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()[:, 0]
        return torch.stack([self.a * x, self.b.expand_as(x)], dim=1)


def _view(index: int, xs: list[float], ys: list[int]) -> TrainView:
    data = TensorData(torch.tensor(xs, dtype=torch.float32).reshape(-1, 1), torch.tensor(ys))
    return TrainView(index, 0, (0, 1), TrainData(data))


def _grad(a: float, b: float, x: float, y: int) -> tuple[float, float]:
    """d CE / d(a, b) for one sample, by hand."""
    ea, eb = math.exp(a * x), math.exp(b)
    p0, p1 = ea / (ea + eb), eb / (ea + eb)
    return (p0 - (y == 0)) * x, p1 - (y == 1)


# ---------------------------------------------------------------- SI

def _si(lam: float, xi: float, lr: float, a: float, b: float) -> SI:
    s = SI(INFO, seed=0, si_lambda=lam, xi=xi, lr=lr, epochs=2, batch_size=1, optimizer="sgd", hidden=(1,))
    s.model = TwoParam(a, b)
    s.optimizer = s.make_optimizer()
    s.omega = {n: torch.zeros_like(p) for n, p in s.model.named_parameters()}
    s.importance = {n: torch.zeros_like(p) for n, p in s.model.named_parameters()}
    s.anchor = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    s.start = dict(s.anchor)
    return s


def _hand_si(lam: float, xi: float, lr: float, a: float, b: float, x: float, labels: list[int], steps: int, unreg: bool,
             clamp_total: bool) -> list[dict]:
    """The SI bookkeeping written out with floats: per task, two SGD steps on the one sample (x, label).

    unreg: omega uses the CE gradient (published) or the total gradient (clbench before issue 11);
    clamp_total: Omega <- max(0, Omega + omega / (D^2 + xi)) (published) or Omega + max(0, omega) / (D^2 + xi).
    """
    theta = [a, b]
    Omega = [0.0, 0.0]
    anchor = [a, b]
    out = []
    for t, y in enumerate(labels):
        start = list(theta)
        omega = [0.0, 0.0]
        for _ in range(steps):
            g = list(_grad(theta[0], theta[1], x, y))
            pen = [2 * lam * Omega[i] * (theta[i] - anchor[i]) if t > 0 else 0.0 for i in range(2)]
            total = [g[i] + pen[i] for i in range(2)]
            delta = [-lr * total[i] for i in range(2)]
            used = g if unreg else total
            omega = [omega[i] - used[i] * delta[i] for i in range(2)]
            theta = [theta[i] + delta[i] for i in range(2)]
        D = [theta[i] - start[i] for i in range(2)]
        if clamp_total:
            Omega = [max(0.0, Omega[i] + omega[i] / (D[i] ** 2 + xi)) for i in range(2)]
        else:
            Omega = [Omega[i] + max(0.0, omega[i]) / (D[i] ** 2 + xi) for i in range(2)]
        anchor = list(theta)
        out.append({"theta": list(theta), "omega": omega, "Omega": list(Omega)})
    return out


def test_si_path_integral_and_importance_by_hand():
    """Task 1 (label 0) then task 2 (label 1), two SGD steps each on x = 2: theta, omega (before the reset) and
    Omega after each task equal the hand computation; on task 2 the penalty pulls a back harder than CE pushes it,
    so a's omega is negative and its Omega drops to 0 (clamp on the running total); the old rules give other values."""
    lam, xi, lr, a, b, x = 8.0, 0.1, 0.25, 0.5, -0.25, 2.0
    s = _si(lam, xi, lr, a, b)
    hand = _hand_si(lam, xi, lr, a, b, x, [0, 1], 2, unreg=True, clamp_total=True)
    for t, y in enumerate([0, 1]):
        view = _view(t, [x], [y])
        s.before_experience(view)
        s.fit(view.train.raw, t)
        got_theta = [float(s.model.a.detach()), float(s.model.b.detach())]
        got_omega = [float(s.omega["a"]), float(s.omega["b"])]
        s.after_experience(view)
        assert got_theta == pytest.approx(hand[t]["theta"], rel=1e-9, abs=1e-12)
        assert got_omega == pytest.approx(hand[t]["omega"], rel=1e-9, abs=1e-12)
        assert [float(s.importance["a"]), float(s.importance["b"])] == pytest.approx(hand[t]["Omega"], rel=1e-9, abs=1e-12)
    # the case the test is built for: a negative path integral on task 2 that the running-total clamp stops at 0
    assert hand[1]["omega"][0] < 0 and hand[0]["Omega"][0] > 0 and hand[1]["Omega"][0] == 0.0
    assert hand[1]["omega"][1] > 0 and hand[1]["Omega"][1] > hand[0]["Omega"][1]
    # the hand values, rounded (Omega_1 = (0.5804, 0.1848), omega_2 = (-0.1472, 0.1874), Omega_2 = (0, 1.4406))
    assert hand[0]["Omega"] == pytest.approx([0.5804, 0.1848], abs=1e-4)
    assert hand[1]["omega"] == pytest.approx([-0.1472, 0.1874], abs=1e-4)
    assert hand[1]["Omega"] == pytest.approx([0.0, 1.4406], abs=1e-4)
    # both corrections matter here: total-gradient omega, or clamping omega alone, give other values
    old_grad = _hand_si(lam, xi, lr, a, b, x, [0, 1], 2, unreg=False, clamp_total=True)
    old_clamp = _hand_si(lam, xi, lr, a, b, x, [0, 1], 2, unreg=True, clamp_total=False)
    assert old_grad[1]["omega"][0] != pytest.approx(hand[1]["omega"][0], rel=1e-2)
    assert old_grad[1]["omega"][1] != pytest.approx(hand[1]["omega"][1], rel=1e-2)
    assert old_clamp[1]["Omega"][0] != pytest.approx(hand[1]["Omega"][0], abs=1e-3)


def test_si_first_task_omega_is_lr_times_squared_gradient():
    """On task 1 (no penalty) SGD gives Delta = -lr g, so omega = lr * sum_s g_s^2 exactly (a closed form)."""
    lr, a, b, x = 0.2, 0.1, 0.4, -0.75
    s = _si(1.0, 0.1, lr, a, b)
    view = _view(0, [x], [1])
    s.before_experience(view)
    s.fit(view.train.raw, 0)
    g1 = _grad(a, b, x, 1)
    g2 = _grad(a - lr * g1[0], b - lr * g1[1], x, 1)
    assert float(s.omega["a"]) == pytest.approx(lr * (g1[0] ** 2 + g2[0] ** 2), rel=1e-9)
    assert float(s.omega["b"]) == pytest.approx(lr * (g1[1] ** 2 + g2[1] ** 2), rel=1e-9)


# ---------------------------------------------------------------- EWC

def _ewc(kind: str, batch: int, model: torch.nn.Module) -> EWC:
    e = EWC(INFO, seed=0, fisher=kind, fisher_batch_size=batch, hidden=(1,))
    e.model = model
    return e


def test_ewc_fisher_both_conventions_by_hand_on_two_parameters():
    """Three samples; per-sample Fisher = mean of squared per-sample gradients; minibatch Fisher (batches of 2:
    {0, 1} and {2}) = mean over the two batches of the squared batch-mean gradient."""
    a, b = 0.25, -0.5
    xs, ys = [1.0, -2.0, 0.5], [0, 1, 1]
    view = _view(0, xs, ys)
    g = [_grad(a, b, x, y) for x, y in zip(xs, ys)]
    sample = [sum(gn[i] ** 2 for gn in g) / 3 for i in range(2)]
    mini = [(((g[0][i] + g[1][i]) / 2) ** 2 + g[2][i] ** 2) / 2 for i in range(2)]
    fs = _ewc("sample", 2, TwoParam(a, b)).fisher(view)
    fm = _ewc("minibatch", 2, TwoParam(a, b)).fisher(view)
    assert [float(fs["a"]), float(fs["b"])] == pytest.approx(sample, rel=1e-9)
    assert [float(fm["a"]), float(fm["b"])] == pytest.approx(mini, rel=1e-9)
    assert sample != pytest.approx(mini, rel=1e-3)


def test_ewc_sample_fisher_equals_an_explicit_per_sample_loop_on_an_mlp(permuted):
    """A BatchNorm + dropout MLP on digits (eval mode: running statistics, no dropout), chunks smaller than the data:
    fisher: sample equals (1/N) sum_n grad(CE(x_n, y_n))^2 from N separate backward passes."""
    exp = permuted[0].train_view()
    torch.manual_seed(0)
    e = EWC(permuted.info, seed=0, fisher="sample", fisher_batch_size=64, hidden=(16,), batchnorm=True, dropout=0.3)
    e.fit(exp.train.raw, 0)  # trained a little, so the BatchNorm running statistics are not the initial ones
    got = e.fisher(exp)
    assert e.model.training  # the training mode is restored
    model = e.model.eval()
    params = dict(model.named_parameters())
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    x_all, y_all = exp.train.x, exp.train.y
    n = 300  # the first 300 samples are enough for the comparison and keep the loop short
    sub = TrainView(0, 0, exp.classes, TrainData(exp.train.raw.subset(torch.arange(n))))
    got = e.fisher(sub)
    for i in range(n):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x_all[i : i + 1]), y_all[i : i + 1]).backward()
        for k, p in params.items():
            want[k] += p.grad.detach() ** 2
    for k in want:
        assert torch.allclose(got[k], want[k] / n, rtol=1e-4, atol=1e-10), k
    assert sum(float(v.sum()) for v in got.values()) > 0
