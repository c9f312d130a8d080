"""Regularisation baselines on the gradient template: EWC, Synaptic Intelligence, Learning without Forgetting.

All three keep the plain training loop of :class:`GradientStrategy` and add a loss term
(:meth:`penalty`) plus bookkeeping around each experience. With their strength set to 0 they train
exactly like ``finetune`` (same data order, same model, same random draws): the bookkeeping runs
with the model in eval mode and without touching any random generator.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from clbench.stream import StreamInfo, TrainView
from clbench.constraints import Interval, Options

from .base import tensor_bytes
from .gradient import GradientStrategy
from .space import Choice, Float

EWC_MODES = ("separate", "online")


def _params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in _params(model).items()}


def quadratic_penalty(model: torch.nn.Module, importance: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum_i Omega_i * (theta_i - theta*_i)^2 over the model's trainable parameters."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for n, p in _params(model).items():
        total = total + (importance[n] * (p - anchor[n]).pow(2)).sum()
    return total


class EWC(GradientStrategy):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017) with a diagonal empirical Fisher.

    After experience t, with the model in eval mode and the minibatches of its training data in
    order (``fisher_batch_size`` samples each, B batches), the importance of parameter i is
        F_t,i = (1 / B) * sum_b ( d CE(batch b) / d theta_i )^2
    (the minibatch-level empirical Fisher, as in Avalanche's EWC plugin), and the anchor is
    theta*_t = theta after experience t. Loss on later experiences:
        CE + ewc_lambda * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2       (mode ``separate``)
        CE + ewc_lambda * sum_i F~_i (theta_i - theta*_i)^2,  F~ <- decay * F~ + F_t,  theta* <- theta*_t
                                                                           (mode ``online``)
    No factor 1/2 is applied (Avalanche's convention, so its published lambdas carry over).
    """

    search_space = {**GradientStrategy.search_space, "ewc_lambda": Float(1e-2, 1e4, log=True)}
    parameter_constraints = {"ewc_lambda": Interval(float, 0), "mode": Options(*EWC_MODES), "decay": Interval(float, 0, 1),
                             "fisher_batch_size": Interval(int, 1)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", ewc_lambda: float = 1.0,
                 mode: str = "separate", decay: float = 1.0, fisher_batch_size: int = 256, **kw) -> None:
        super().__init__(info, seed=seed, device=device, **kw)
        self.ewc_lambda, self.mode, self.decay, self.fisher_batch_size = ewc_lambda, mode, decay, fisher_batch_size
        self.terms: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (importance, anchor)

    def fisher(self, exp: TrainView) -> dict[str, torch.Tensor]:
        """Diagonal minibatch-level empirical Fisher on ``exp``'s training data (see the class docstring)."""
        params = _params(self.model)
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = self.model.training
        self.model.eval()
        n_batches = 0
        for x, y in exp.train.batches(self.fisher_batch_size, device=self.device):
            self.model.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x), y).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().pow(2)
            n_batches += 1
        self.model.zero_grad(set_to_none=True)
        self.model.train(was_training)
        return {n: f / max(1, n_batches) for n, f in fisher.items()}

    def after_experience(self, exp: TrainView) -> None:
        importance, anchor = self.fisher(exp), _snapshot(self.model)
        if self.mode == "online" and self.terms:
            old, _ = self.terms[0]
            importance = {n: self.decay * old[n] + importance[n] for n in importance}
            self.terms = []
        self.terms.append((importance, anchor))

    def penalty(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if not self.terms:
            return None
        return self.ewc_lambda * sum(quadratic_penalty(self.model, imp, anc) for imp, anc in self.terms)

    def state_bytes(self) -> int:
        return tensor_bytes(self.model, self.terms)


class SI(GradientStrategy):
    """Synaptic Intelligence (Zenke, Poole & Ganguli 2017).

    During experience t every optimiser step s moves the parameters by Delta_s and the path
    integral accumulates  omega_i += -g_s,i * Delta_s,i  (g = gradient of the training loss used
    for that step). At the end of the experience, with D_i = theta_i(end of t) - theta_i(start of t),
        Omega_i <- Omega_i + max(0, omega_i) / (D_i^2 + xi),   omega <- 0,   theta* <- theta(end of t).
    Loss: CE + si_lambda * sum_i Omega_i (theta_i - theta*_i)^2.
    ``xi`` = 0.1 is the paper's damping for MNIST; clipping omega at 0 keeps Omega >= 0 (a negative
    path integral would reward moving away from theta*). Avalanche's plugin differs in scale: it
    multiplies Omega by c = 0.0015, caps it at 0.001 and halves the penalty, so its si_lambda is
    not interchangeable with this one.
    The path integral is gathered by optimiser step hooks, so it sees every step exactly once.
    """

    search_space = {**GradientStrategy.search_space, "si_lambda": Float(1e-3, 10.0, log=True)}
    parameter_constraints = {"si_lambda": Interval(float, 0), "xi": Interval(float, 0, None, "neither")}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", si_lambda: float = 0.1,
                 xi: float = 0.1, **kw) -> None:
        self.si_lambda, self.xi = si_lambda, xi
        self._before: dict[str, torch.Tensor] = {}
        super().__init__(info, seed=seed, device=device, **kw)
        self.omega = {n: torch.zeros_like(p) for n, p in _params(self.model).items()}
        self.importance = {n: torch.zeros_like(p) for n, p in _params(self.model).items()}
        self.anchor = _snapshot(self.model)
        self.start = _snapshot(self.model)
        self.seen_experience = False

    def make_optimizer(self) -> torch.optim.Optimizer:
        opt = super().make_optimizer()
        opt.register_step_pre_hook(self._pre_step)
        opt.register_step_post_hook(self._post_step)
        return opt

    def _pre_step(self, optimizer, args, kwargs) -> None:
        self._before = {n: p.detach().clone() for n, p in _params(self.model).items()}

    def _post_step(self, optimizer, args, kwargs) -> None:
        for n, p in _params(self.model).items():
            if p.grad is not None:
                self.omega[n] -= p.grad.detach() * (p.detach() - self._before[n])
        self._before = {}

    def before_experience(self, exp: TrainView) -> None:
        super().before_experience(exp)
        self.start = _snapshot(self.model)

    def after_experience(self, exp: TrainView) -> None:
        for n, p in _params(self.model).items():
            delta = p.detach() - self.start[n]
            self.importance[n] += self.omega[n].clamp(min=0) / (delta.pow(2) + self.xi)
            self.omega[n].zero_()
        self.anchor = _snapshot(self.model)
        self.seen_experience = True

    def penalty(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if not self.seen_experience:
            return None
        return self.si_lambda * quadratic_penalty(self.model, self.importance, self.anchor)

    def state_bytes(self) -> int:
        return tensor_bytes(self.model, self.omega, self.importance, self.anchor, self.start)


class LwF(GradientStrategy):
    """Learning without Forgetting (Li & Hoiem 2016), single head.

    After each experience a frozen copy of the model (the teacher, evaluated in eval mode) is kept.
    On later experiences, over the output units of the classes seen before (all units in
    domain-IL), with temperature T:
        q = softmax(teacher(x) / T),  log p = log_softmax(model(x) / T)
        loss = CE + alpha * KL(q || p)   (batch mean; no T^2 factor, Avalanche's convention)
    """

    search_space = {**GradientStrategy.search_space, "alpha": Float(0.1, 10.0, log=True),
                    "temperature": Choice([0.5, 1.0, 2.0, 4.0])}
    parameter_constraints = {"alpha": Interval(float, 0), "temperature": Interval(float, 0, None, "neither")}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", alpha: float = 1.0,
                 temperature: float = 2.0, **kw) -> None:
        super().__init__(info, seed=seed, device=device, **kw)
        self.alpha, self.temperature = alpha, temperature
        self.teacher: torch.nn.Module | None = None
        self.old_units: torch.Tensor | None = None
        self.seen_classes: set[int] = set()

    def after_experience(self, exp: TrainView) -> None:
        self.seen_classes |= set(exp.classes)
        self.teacher = copy.deepcopy(self.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        if self.info.scenario == "domain-il":
            self.old_units = None
        else:
            self.old_units = torch.tensor(sorted(self.seen_classes), device=self.device)

    def penalty(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        with torch.no_grad():
            old = self.teacher(x)
        new = logits
        if self.old_units is not None:
            old, new = old[:, self.old_units], new[:, self.old_units]
        log_p = F.log_softmax(new / self.temperature, dim=1)
        q = F.softmax(old / self.temperature, dim=1)
        return self.alpha * F.kl_div(log_p, q, reduction="batchmean")

    def state_bytes(self) -> int:
        return tensor_bytes(self.model) + (tensor_bytes(self.teacher) if self.teacher is not None else 0)
