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
FISHERS = ("minibatch", "sample")

#: per-sample Fisher: at most this many gradient entries (samples x parameters) are held at once (256 MiB of float32)
PER_SAMPLE_FLOATS = 2**26


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

    After experience t, with the model in eval mode and the true labels (empirical Fisher), on the
    experience's N training samples, the importance of parameter i is (``fisher``):

    * ``minibatch`` (default, Avalanche's ``EWCPlugin.compute_importances`` convention, kept for parity
      with ``avalanche.EWC``): in order, minibatches of ``fisher_batch_size`` samples (B batches, the last
      one possibly smaller but weighted equally),
          F_t,i = (1 / B) * sum_b ( d CE_mean(batch b) / d theta_i )^2
      i.e. the square of each batch's *mean* gradient;
    * ``sample`` (the paper's per-sample empirical Fisher):
          F_t,i = (1 / N) * sum_n ( d CE(x_n, y_n) / d theta_i )^2
      from per-sample gradients (``torch.func.vmap`` of ``grad``, ``fisher_batch_size`` samples at a time,
      fewer when the model is large: at most ``PER_SAMPLE_FLOATS`` gradient entries at once).

    How lambda relates between them: with per-sample gradients g_n of mean mu and variance sigma^2 (per
    parameter), a batch of b samples has E[(batch mean)^2] = mu^2 + sigma^2 / b while the per-sample
    Fisher is mu^2 + sigma^2. So F_sample / F_minibatch lies between 1 (mu dominates) and b (at a trained
    model, where the mean gradient mu ~ 0 and only the noise is left); the same penalty needs
    lambda_sample = lambda_minibatch * sum F_minibatch / sum F_sample. Measured with ``bench/fisher_ratio.py``
    (split_digits, all 10 classes, 1257 training samples, MLP 2x1000, SGD lr 0.05, batches of 256 for the
    minibatch Fisher): the summed per-sample Fisher is 73x the minibatch one after 1 epoch (train accuracy
    0.75), 149x after 10, 200x after 30 and 144x after 100 epochs (0.996). So a lambda tuned with one
    convention is two orders of magnitude off with the other; tune it again (``clbench tune``) when switching.

    The anchor is theta*_t = theta after experience t. Loss on later experiences:
        CE + ewc_lambda * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2       (mode ``separate``)
        CE + ewc_lambda * sum_i F~_i (theta_i - theta*_i)^2,  F~ <- decay * F~ + F_t,  theta* <- theta*_t
                                                                           (mode ``online``)
    No factor 1/2 is applied (Avalanche's convention, so its published lambdas carry over).
    """

    search_space = {**GradientStrategy.search_space, "ewc_lambda": Float(1e-2, 1e4, log=True)}
    parameter_constraints = {"ewc_lambda": Interval(float, 0), "mode": Options(*EWC_MODES), "decay": Interval(float, 0, 1),
                             "fisher_batch_size": Interval(int, 1), "fisher": Options(*FISHERS)}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", ewc_lambda: float = 1.0,
                 mode: str = "separate", decay: float = 1.0, fisher_batch_size: int = 256, fisher: str = "minibatch",
                 **kw) -> None:
        super().__init__(info, seed=seed, device=device, **kw)
        self.ewc_lambda, self.mode, self.decay, self.fisher_batch_size = ewc_lambda, mode, decay, fisher_batch_size
        self.fisher_kind = fisher
        self.terms: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (importance, anchor)

    def fisher(self, exp: TrainView) -> dict[str, torch.Tensor]:
        """Diagonal empirical Fisher on ``exp``'s training data, ``minibatch`` or ``sample`` (see the class docstring)."""
        was_training = self.model.training
        self.model.eval()
        try:
            if self.fisher_kind == "sample":
                return self._sample_fisher(exp)
            return self._minibatch_fisher(exp)
        finally:
            self.model.zero_grad(set_to_none=True)
            self.model.train(was_training)

    def _minibatch_fisher(self, exp: TrainView) -> dict[str, torch.Tensor]:
        """(1 / B) sum_b (gradient of batch b's mean CE)^2."""
        params = _params(self.model)
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        n_batches = 0
        for x, y in exp.train.batches(self.fisher_batch_size, device=self.device):
            self.model.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x), y).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().pow(2)
            n_batches += 1
        return {n: f / max(1, n_batches) for n, f in fisher.items()}

    def _sample_fisher(self, exp: TrainView) -> dict[str, torch.Tensor]:
        """(1 / N) sum_n (gradient of sample n's CE)^2, per-sample gradients by vmap(grad)."""
        from torch.func import functional_call, grad, vmap

        params = {n: p.detach() for n, p in _params(self.model).items()}
        buffers = dict(self.model.named_buffers())
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        size = sum(p.numel() for p in params.values())
        chunk = max(1, min(self.fisher_batch_size, PER_SAMPLE_FLOATS // max(1, size)))

        def one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(functional_call(self.model, (p, buffers), (x.unsqueeze(0),)), y.unsqueeze(0))

        per_sample = vmap(grad(one), in_dims=(None, 0, 0))
        n = 0
        for x, y in exp.train.batches(chunk, device=self.device):
            g = per_sample(params, x, y)
            for k in fisher:
                fisher[k] += g[k].pow(2).sum(0)
            n += len(y)
        return {k: f / max(1, n) for k, f in fisher.items()}

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
    """Synaptic Intelligence (Zenke, Poole & Ganguli 2017), as the official code (ganguli-lab/pathint) computes it.

    During experience t every optimiser step s moves the parameters by Delta_s (the actual change made
    by the optimiser) and the path integral accumulates
        omega_i += -g_s,i * Delta_s,i,    g = gradient of the *unregularised* loss (CE) at the step's start
    (pathint ``protocols.py`` L33-35 with ``optimizers.py`` L115-123: ``unreg_grads`` is the gradient of the
    raw loss, while the step itself follows the total loss CE + penalty). At the end of the experience,
    with D_i = theta_i(end of t) - theta_i(start of t), in this order (``protocols.py`` L36-41,
    ``omega_decay='sum'``):
        Omega_i <- max(0, Omega_i + omega_i / (D_i^2 + xi)),   theta* <- theta(end of t),   omega <- 0.
    The clamp acts on the updated running total, not on omega: a negative path integral (the penalty
    pulled a parameter back harder than the task loss pushed it) lowers the stored Omega, never below 0.
    Loss: CE + si_lambda * sum_i Omega_i (theta_i - theta*_i)^2 (no factor 1/2, pathint ``regularizers.py``).

    How the two gradients are kept apart: :meth:`loss` backpropagates CE only (it adds the penalty's value,
    detached, so the reported loss and the non-finite check include it); the optimiser's step pre-hook
    records that CE gradient as g, then adds the penalty's gradient (autograd of the penalty alone, cheap:
    no pass through the network) to ``p.grad``, so the step follows the total loss exactly. Weight decay,
    when set, is applied inside the optimiser and is not part of g (as in pathint, whose g is the raw loss's).

    ``xi`` = 0.1 is the paper's damping for permuted MNIST (pathint's notebook; 1e-3 for split MNIST/CIFAR).
    theta(start of experience 0) is the initial model (pathint's split-MNIST and CIFAR scripts; its
    permuted-MNIST notebook never sets it, so there D = theta_end - 0 for task 1). Avalanche's plugin differs
    in scale: it multiplies Omega by c = 0.0015, caps it at 0.001 and halves the penalty, so its si_lambda
    is not interchangeable with this one.
    """

    search_space = {**GradientStrategy.search_space, "si_lambda": Float(1e-3, 10.0, log=True)}
    parameter_constraints = {"si_lambda": Interval(float, 0), "xi": Interval(float, 0, None, "neither")}

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", si_lambda: float = 0.1,
                 xi: float = 0.1, **kw) -> None:
        self.si_lambda, self.xi = si_lambda, xi
        self._before: dict[str, torch.Tensor] = {}
        self._unreg: dict[str, torch.Tensor] = {}
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

    def _penalty_on(self) -> bool:
        return self.seen_experience and self.si_lambda > 0

    def loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """CE, plus the penalty's value without its gradient (the pre-step hook adds that gradient)."""
        ce = F.cross_entropy(logits, y)
        if not self._penalty_on():
            return ce
        with torch.no_grad():
            value = self.penalty(x, y, logits)
        return ce + value

    def _pre_step(self, optimizer, args, kwargs) -> None:
        params = _params(self.model)
        self._before = {n: p.detach().clone() for n, p in params.items()}
        self._unreg = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}
        if not self._penalty_on():
            return
        names = list(params)
        with torch.enable_grad():
            grads = torch.autograd.grad(self.penalty(None, None, None), [params[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads):
            if g is None:
                continue
            p = params[n]
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g.detach())

    def _post_step(self, optimizer, args, kwargs) -> None:
        for n, p in _params(self.model).items():
            if n in self._unreg:
                self.omega[n] -= self._unreg[n] * (p.detach() - self._before[n])
        self._before, self._unreg = {}, {}

    def before_experience(self, exp: TrainView) -> None:
        super().before_experience(exp)
        self.start = _snapshot(self.model)

    def after_experience(self, exp: TrainView) -> None:
        for n, p in _params(self.model).items():
            delta = p.detach() - self.start[n]
            self.importance[n] = (self.importance[n] + self.omega[n] / (delta.pow(2) + self.xi)).clamp(min=0)
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
