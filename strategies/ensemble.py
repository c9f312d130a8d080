"""Several seeds of one gradient strategy trained at once, as one vectorised model (``torch.func``).

An :class:`Ensemble` takes K strategy objects of the same class and hyperparameters, each built as a
per-seed cell builds it (its own random initialisation under its seed, its own generator, its own stream),
stacks their parameters into tensors of shape (K, ...) and trains them together: each step evaluates the K
models with ``vmap(functional_call(model, params_k, x_k))`` on K minibatches (member k's own data in its own
order, ``torch.randperm(n_k, generator_k)`` per epoch, as :meth:`GradientStrategy.fit` draws it) and
backpropagates the sum of the K losses once; the gradient of that sum with respect to member k's
parameters is the gradient of member k's loss alone. :class:`StackedOptimizer` applies SGD/Adam with the
formulas and operation order of ``torch.optim``'s single-tensor implementations, with a step count per
member; a member without data at a step (its experience is shorter) is not updated, parameters and
optimiser state alike. Everything the members do around an experience (``before_experience``,
``training_data``, ``after_experience``: a replay buffer, EWC's Fisher, LwF's teacher, with their own
generators) runs on the members themselves, whose models hold the ensemble's parameters between experiences;
prediction is each member's own ``predict``.

Supported: ``finetune``, ``replay``, ``ewc``, ``lwf`` on the MLP without dropout and batch norm (dropout
would draw other masks than a per-seed run; batch norm keeps running statistics per member). The loss terms
of EWC and LwF are computed on the stacked parameters (:meth:`Ensemble.penalty`), by the formulas of
:mod:`clbench.strategies.regularization`.

Equality with the per-seed runs: same data, order, initialisation and update formulas, so the parameters
differ only by floating-point rounding where a vectorised kernel sums in another order than the per-seed one
(the batched matrix products of ``vmap``, the per-member sums of the penalties): measured on CPU, at most
1.8e-7 absolute after 3 experiences x 2 epochs (digits MLPs, SGD/Adam, finetune/replay/EWC/LwF), and equal
accuracy matrices; they can differ only where such a difference flips a prediction at a near-tie. The
optimiser alone is bit-identical to ``torch.optim`` (tested).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from clbench.errors import CellFailure, UserError
from clbench.stream import TensorData, TrainView, as_float

from .baselines import Finetune, Replay
from .gradient import GradientStrategy, autocast
from .models import MLP
from .regularization import EWC, LwF

#: the strategy classes an ensemble can train (exact classes: a subclass may change the loop)
SUPPORTED: tuple[type[GradientStrategy], ...] = (Finetune, Replay, EWC, LwF)
#: modules whose computation is the same per sample under vmap and has no state or randomness
_PLAIN_MODULES = (nn.Flatten, nn.Linear, nn.ReLU, nn.Sequential, nn.Identity)


def ensemble_problem(cls: type, hyperparameters: dict[str, Any]) -> str | None:
    """Why cells of ``cls`` with these hyperparameters cannot be trained as an ensemble (None: they can)."""
    if cls not in SUPPORTED:
        names = ", ".join(c.__name__ for c in SUPPORTED)
        return f"{cls.__name__} is not one of the strategies an ensemble trains ({names})"
    if hyperparameters.get("dropout", 0.0):
        return "dropout > 0 draws other masks than the per-seed runs"
    if hyperparameters.get("batchnorm", False):
        return "batchnorm keeps running statistics per member"
    if hyperparameters.get("model", "auto") == "resnet":
        return "the ResNet has batch norm"
    return None


def _model_problem(model: nn.Module) -> str | None:
    for m in model.modules():
        if not list(m.children()) and not isinstance(m, _PLAIN_MODULES):
            return f"the model has a {type(m).__name__} layer (an ensemble trains MLPs of Linear/ReLU layers)"
    return None


def _mlp_layers(model: nn.Module) -> list[str] | None:
    """The Linear layers' names of a plain :class:`~clbench.strategies.models.MLP` (Flatten, [Linear, ReLU]*, head), else None."""
    if type(model) is not MLP:
        return None
    kinds = [type(m) for m in model.features]
    expect = [nn.Flatten] + [nn.Linear, nn.ReLU] * ((len(kinds) - 1) // 2)
    if kinds != expect:
        return None
    return [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Linear)] + ["head"]


def mlp_logits(layers: list[str], params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """K MLPs on K minibatches: h <- relu(b_l + h W_l^T) per layer (no ReLU after the last), batched over K."""
    h = x.flatten(2)
    for i, name in enumerate(layers):
        h = torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


class StackedOptimizer:
    """SGD (momentum, weight decay) or Adam (L2 weight decay) on parameters stacked along dimension 0.

    Per member k, the update is ``torch.optim``'s single-tensor one, operation for operation:
    SGD: g <- g + wd * p;  b <- g (first step) or b <- m * b + g;  p <- p - lr * b  (b only with momentum m > 0).
    Adam: s_k <- s_k + 1;  g <- g + wd * p;  m1 <- lerp(m1, g, 1 - beta1);  m2 <- beta2 * m2 + (1 - beta2) g^2;
    p <- p - (lr / (1 - beta1^s_k)) * m1 / (sqrt(m2) / sqrt(1 - beta2^s_k) + eps).
    Members not ``active`` at a step keep their parameters, state and step count.
    """

    def __init__(self, params: dict[str, torch.Tensor], kind: str, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.kind, self.lr = params, kind, lr
        self.momentum, self.weight_decay, self.betas, self.eps = momentum, weight_decay, betas, eps
        self.k = next(iter(params.values())).shape[0]
        self.reset()

    def reset(self) -> None:
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.steps = [0] * self.k

    def _scalars(self, active: list[int], value) -> float | torch.Tensor:
        """One Python number when every active member is at the same step, else a (K, 1, ...)-broadcastable tensor."""
        steps = {self.steps[i] for i in active}
        if len(steps) == 1:
            return value(steps.pop())
        return torch.tensor([value(max(1, s)) for s in self.steps], dtype=torch.float32)

    @torch.no_grad()
    def step(self, active: Sequence[bool]) -> None:
        on = [i for i, a in enumerate(active) if a]
        off = [i for i, a in enumerate(active) if not a]
        if not on:
            return
        saved = {}
        if off:
            saved = {n: (p[off].clone(), {s: v[off].clone() for s, v in self.state.get(n, {}).items()})
                     for n, p in self.params.items()}
        for i in on:
            self.steps[i] += 1
        for n, p in self.params.items():
            if p.grad is None:
                continue
            grad = p.grad
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            state = self.state.setdefault(n, {})
            if self.kind == "adam":
                self._adam(p, grad, state, on)
            else:
                self._sgd(p, grad, state)
        for n, (p_old, st_old) in saved.items():
            self.params[n].data[off] = p_old
            for s, v in st_old.items():
                self.state[n][s][off] = v

    def _sgd(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        if self.momentum != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.detach().clone()
            else:
                state["momentum_buffer"].mul_(self.momentum).add_(grad, alpha=1.0)
            grad = state["momentum_buffer"]
        p.add_(grad, alpha=-self.lr)

    def _adam(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor], on: list[int]) -> None:
        beta1, beta2 = self.betas
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self._scalars(on, lambda s: self.lr / (1 - beta1 ** s))
        bc2_sqrt = self._scalars(on, lambda s: (1 - beta2 ** s) ** 0.5)
        if isinstance(step_size, float):
            denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)
        else:
            shape = (-1,) + (1,) * (p.dim() - 1)
            denom = (exp_avg_sq.sqrt() / bc2_sqrt.to(p.device).view(shape)).add_(self.eps)
            p.add_((-step_size).to(p.device).view(shape) * exp_avg / denom)


class StackedData:
    """The K members' training data of one experience on the device, padded to the longest (inputs as stored)."""

    def __init__(self, datas: Sequence[TensorData | None], device: torch.device) -> None:
        present = [d for d in datas if d is not None]
        ref = present[0]
        self.n = [len(d) if d is not None else 0 for d in datas]
        self.uniform = len(set(self.n)) == 1
        n_max = max(self.n)
        if self.uniform:
            self.x = torch.stack([d.x for d in datas]).to(device)
            self.y = torch.stack([d.y for d in datas]).to(device)
        else:
            self.x = torch.zeros((len(datas), n_max, *ref.x.shape[1:]), dtype=ref.x.dtype)
            self.y = torch.zeros((len(datas), n_max), dtype=torch.int64)
            for k, d in enumerate(datas):
                if d is not None and len(d):
                    self.x[k, : len(d)] = d.x
                    self.y[k, : len(d)] = d.y
            self.x, self.y = self.x.to(device), self.y.to(device)
        self.rows = torch.arange(len(datas), device=device).unsqueeze(1)


class Ensemble:
    """K members (same class and hyperparameters, own seeds) trained as one vectorised model (see the module docstring).

    :meth:`train_experience` trains every live member on its own view of an experience; a member whose
    training fails (divergence, an exception in its own hooks or callbacks) is recorded in ``failed`` and
    takes no further part, the others go on.
    """

    def __init__(self, members: Sequence[GradientStrategy]) -> None:
        members = list(members)
        if not members:
            raise UserError("an ensemble needs at least one member")
        cls = type(members[0])
        if any(type(m) is not cls for m in members):
            raise UserError("ensemble members must be of one strategy class")
        problem = ensemble_problem(cls, {}) or _model_problem(members[0].model)
        if problem:
            raise UserError(f"cannot train {cls.__name__} as an ensemble: {problem}")
        for m in members[1:]:
            for key in ("model_spec", "lr", "epochs", "batch_size", "optimizer_name", "momentum", "weight_decay",
                        "reset_optimizer", "precision"):
                if getattr(m, key) != getattr(members[0], key):
                    raise UserError(f"ensemble members differ in {key}: {getattr(m, key)!r} vs {getattr(members[0], key)!r}")
        self.members = members
        self.cls = cls
        self.device = members[0].device
        self.skeleton = copy.deepcopy(members[0].model).to("meta")
        self.layers = _mlp_layers(members[0].model)
        self.names = [n for n, _ in members[0].model.named_parameters()]
        self.params = {n: torch.stack([dict(m.model.named_parameters())[n].detach() for m in members]).clone().requires_grad_(True)
                       for n in self.names}
        m0 = members[0]
        self.optimizer = StackedOptimizer(self.params, m0.optimizer_name, m0.lr, m0.momentum, m0.weight_decay)
        self.failed: dict[int, BaseException] = {}
        self._ewc: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
        self._teacher: dict[str, torch.Tensor] | None = None
        self._units: list[torch.Tensor | None] = []

    # ---- parameters <-> members
    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.skeleton, params, (x,))

    def logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """(K, b, C) outputs of the K models on their (K, b, ...) inputs.

        ``vmap(functional_call(model, params_k, x_k))``; for clbench's plain MLP the same products written
        out (:func:`mlp_logits`: the batched matrix products vmap's Linear rule runs, equal to its output bit
        for bit, without re-binding the module's parameters at every call, half the CPU time per step).
        """
        if self.layers is not None:
            return mlp_logits(self.layers, params, x)
        return vmap(self._forward)(params, x)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked parameters into every member's own model."""
        for k, m in enumerate(self.members):
            own = dict(m.model.named_parameters())
            for n in self.names:
                own[n].copy_(self.params[n][k])

    def live(self) -> list[int]:
        return [k for k in range(len(self.members)) if k not in self.failed]

    # ---- loss terms on the stacked parameters
    def _refresh_terms(self) -> None:
        """Stack the members' EWC terms / LwF teachers after ``after_experience`` (failed members: zeros)."""
        live = self.live()
        if not live:
            return
        ref = self.members[live[0]]
        if isinstance(ref, EWC):
            # (T, K, ...) per parameter: all terms in one operation per parameter and step
            self._ewc = []
            if ref.terms:
                K = len(self.members)
                imp, anc = {}, {}
                for n in self.names:
                    zero = torch.zeros_like(ref.terms[0][0][n])
                    imp[n] = torch.stack([torch.stack([self.members[k].terms[t][0][n] if k in live else zero for k in range(K)])
                                          for t in range(len(ref.terms))])
                    anc[n] = torch.stack([torch.stack([self.members[k].terms[t][1][n] if k in live else zero for k in range(K)])
                                          for t in range(len(ref.terms))])
                self._ewc = [(imp, anc)]
        elif isinstance(ref, LwF) and ref.teacher is not None:
            teachers = [dict(self.members[k].teacher.named_parameters()) if k in live else None for k in range(len(self.members))]
            own = dict(ref.teacher.named_parameters())
            self._teacher = {n: torch.stack([t[n] if t is not None else torch.zeros_like(own[n]) for t in teachers]).detach()
                             for n in self.names}
            self._units = [self.members[k].old_units for k in range(len(self.members))]

    def penalty(self, params: dict[str, torch.Tensor], x: torch.Tensor, logits: torch.Tensor,
                weights: torch.Tensor | None) -> torch.Tensor | None:
        """Per-member loss term (K,), as the member class's :meth:`penalty` computes it for one member.

        EWC: ewc_lambda * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2.
        LwF: alpha * KL(softmax(teacher(x) / T) || softmax(model(x) / T)) over the old units, mean over the
        member's samples (``weights`` marks the real ones when minibatches were padded).
        """
        ref = self.members[0]
        if isinstance(ref, EWC):
            if not self._ewc:
                return None
            imp, anc = self._ewc[0]
            per_term = torch.zeros(imp[self.names[0]].shape[:2], device=self.device)  # (T, K), summed over parameters
            for n in self.names:
                per_term = per_term + (imp[n] * (params[n].unsqueeze(0) - anc[n]).pow(2)).flatten(2).sum(2)
            total = per_term[0]
            for t in range(1, per_term.shape[0]):
                total = total + per_term[t]
            return ref.ewc_lambda * total
        if isinstance(ref, LwF):
            if self._teacher is None:
                return None
            with torch.no_grad():
                old = self.logits(self._teacher, x)
            T = ref.temperature
            units = self._units
            if all(u is None for u in units) or all(u is not None and torch.equal(u, units[0]) for u in units):
                u = units[0]
                o, nw = (old, logits) if u is None else (old[..., u], logits[..., u])
                log_p, q = F.log_softmax(nw / T, dim=-1), F.softmax(o / T, dim=-1)
                point = F.kl_div(log_p, q, reduction="none").sum(-1)  # (K, b); kl_div has no vmap rule
                if weights is None:
                    return ref.alpha * point.sum(1) / point.shape[1]
                return ref.alpha * (point * weights).sum(1) / weights.sum(1).clamp(min=1)
            out = []
            for k, u in enumerate(units):  # members saw different classes: one at a time
                o, nw = (old[k], logits[k]) if u is None else (old[k][:, u], logits[k][:, u])
                if weights is not None:
                    keep = weights[k] > 0
                    o, nw = o[keep], nw[keep]
                log_p, q = F.log_softmax(nw / T, dim=1), F.softmax(o / T, dim=1)
                out.append(F.kl_div(log_p, q, reduction="batchmean") if len(nw) else nw.sum())
            return ref.alpha * torch.stack(out)
        return None

    # ---- training
    def _member_call(self, k: int, fn, *args) -> Any:
        """Run one member's hook; an exception fails that member only."""
        if k in self.failed:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - recorded per member
            self.failed[k] = exc
            return None

    def train_experience(self, views: Sequence[TrainView | None]) -> None:
        """Train every live member on its view of the same experience (None for a member that takes no part)."""
        K = len(self.members)
        for k in range(K):
            if views[k] is None and k not in self.failed:
                self.failed[k] = RuntimeError("no view given for this member")
        for k in self.live():
            self._member_call(k, self.members[k].before_experience, views[k])
        if self.members[0].reset_optimizer:
            self.optimizer.reset()
        datas: list[TensorData | None] = [None] * K
        for k in self.live():
            datas[k] = self._member_call(k, self.members[k].training_data, views[k])
        live = [k for k in self.live() if datas[k] is not None]
        if live:
            exp_index = views[live[0]].index
            self._fit(StackedData(datas, self.device), exp_index)
        self.write_back()
        for k in self.live():
            self._member_call(k, self.members[k].after_experience, views[k])
        self._refresh_terms()

    def _fit(self, data: StackedData, exp_index: int) -> None:
        """The epochs of :meth:`GradientStrategy.fit` for all members at once (divergence checked per member)."""
        K, m0 = len(self.members), self.members[0]
        B = m0.batch_size
        n = [data.n[k] if k not in self.failed else 0 for k in range(K)]
        mean_ce = [float("nan")] * K
        masks: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        for epoch in range(m0.epochs):
            orders = [torch.randperm(data.n[k], generator=self.members[k].generator) if n[k] else None for k in range(K)]
            if data.uniform and all(o is not None for o in orders):
                order = torch.stack(orders).to(self.device)
            else:
                order = torch.zeros((K, max(data.n)), dtype=torch.int64)
                for k, o in enumerate(orders):
                    if o is not None:
                        order[k, : len(o)] = o
                order = order.to(self.device)
            total = torch.zeros(K, device=self.device)
            ce_sum = torch.zeros(K, device=self.device)
            seen = [0] * K
            for start in range(0, max(n), B):
                counts = [max(0, min(B, n[k] - start)) for k in range(K)]
                active = [c > 0 for c in counts]
                b = max(counts)
                idx = order[:, start : start + b]
                weights = None
                if len(set(counts)) != 1:
                    weights = (torch.arange(b).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)).float().to(self.device)
                x = as_float(data.x[data.rows, idx])
                y = data.y[data.rows, idx]
                with autocast(self.device, m0.precision):
                    logits = self.logits(self.params, x)
                    each = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (K, b)
                    ce = each.mean(1) if weights is None else (each * weights).sum(1) / weights.sum(1).clamp(min=1)
                    extra = self.penalty(self.params, x, logits, weights)
                    loss = ce if extra is None else ce + extra
                key = tuple(counts)
                if key not in masks:  # (on, counts) as tensors, made once per pattern
                    masks[key] = (torch.tensor(active, dtype=torch.float32, device=self.device),
                                  torch.tensor(counts, dtype=torch.float32, device=self.device))
                on, count_t = masks[key]
                for p in self.params.values():
                    p.grad = None
                (loss * on).sum().backward()
                self.optimizer.step(active)
                total += loss.detach().float() * on
                ce_sum += ce.detach().float() * count_t
                for k in range(K):
                    seen[k] += counts[k]
            finite = torch.isfinite(total).tolist()
            ce_host = ce_sum.tolist()
            for k in range(K):
                if not n[k] or k in self.failed:
                    continue
                if not finite[k]:
                    self.failed[k] = CellFailure(f"training diverged: non-finite loss at experience {exp_index}, epoch {epoch}; "
                                                 f"fix: {self.members[k].divergence_hint()}")
                    n[k] = 0
                    continue
                mean_ce[k] = ce_host[k] / max(1, seen[k])
                self._member_call(k, self.members[k].callbacks.on_epoch_end, exp_index, epoch, mean_ce[k])
                if k in self.failed:
                    n[k] = 0
        limit = m0.DIVERGENCE_FACTOR * math.log(max(2, m0.info.n_classes))
        for k in range(K):
            if k not in self.failed and n[k] and mean_ce[k] > limit:
                self.failed[k] = CellFailure(
                    f"training diverged at experience {exp_index}: the last epoch's mean cross-entropy {mean_ce[k]:.3g} "
                    f"is above {limit:.3g} ({m0.DIVERGENCE_FACTOR:g} x ln {m0.info.n_classes}, the loss of a "
                    f"uniform guess); fix: {self.members[k].divergence_hint()}")
