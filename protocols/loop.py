"""The evaluation loop of one cell: train on each experience, evaluate on every test set."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from clbench.benchmarks.stream import Stream, TensorData
from clbench.strategies.base import Strategy

from .metrics import summary_metrics

EVAL_BATCH = 1024


@dataclass
class CellResult:
    """Everything measured for one (benchmark, strategy, seed) cell."""

    cell_id: str
    benchmark: str
    strategy: str
    seed: int
    status: str = "ok"  # "ok" | "failed"
    error: str = ""
    accuracy: list[list[float]] = field(default_factory=list)  # R[i][j]
    baseline_accuracy: list[float] = field(default_factory=list)  # untrained model, for FWT
    test_sizes: list[int] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    peak_memory_mb: list[float] = field(default_factory=list)
    state_bytes: list[int] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # benchmark and strategy entries, device
    stream: dict[str, Any] = field(default_factory=dict)  # how the stream was made
    versions: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CellResult":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux ``clear_refs`` 5), if possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@torch.inference_mode()
def accuracy(strategy: Strategy, data: TensorData, mask_classes: tuple[int, ...] | None = None, device: str = "cpu") -> float:
    """Fraction of correct predictions; in task-IL the scores are restricted to the task's classes."""
    correct = 0
    for x, y in data.batches(EVAL_BATCH, device=device):
        out = strategy.predict(x)
        if out.ndim == 2:
            if mask_classes is not None:
                keep = torch.tensor(mask_classes, device=out.device)
                out = keep[out[:, keep].argmax(1)]
            else:
                out = out.argmax(1)
        correct += int((out.to(y.device) == y).sum())
    return correct / max(1, len(data))


def run_stream(
    strategy: Strategy,
    stream: Stream,
    result: CellResult,
    progress: Callable[[int, int], None] | None = None,
) -> CellResult:
    """Train ``strategy`` on each experience of ``stream`` and fill ``result`` with R and the costs.

    The strategy receives only :class:`TrainView` objects (training data of the current experience).
    """
    task_il = stream.scenario == "task-il"
    device = str(strategy.device)
    tests = [(e.test, e.classes if task_il else None) for e in stream.experiences]
    result.test_sizes = [len(t) for t, _ in tests]
    try:
        result.baseline_accuracy = [accuracy(strategy, t, m, device) for t, m in tests]
    except Exception:  # an untrained strategy may not be able to predict (e.g. no class means yet)
        result.baseline_accuracy = [float("nan")] * len(tests)
    cuda = strategy.device.type == "cuda"
    for i, exp in enumerate(stream.experiences):
        _reset_peak_rss()
        if cuda:
            torch.cuda.reset_peak_memory_stats(strategy.device)
        t0 = time.perf_counter()
        strategy.train_experience(exp.train_view())
        if cuda:
            torch.cuda.synchronize(strategy.device)
        t1 = time.perf_counter()
        row = [accuracy(strategy, t, m, device) for t, m in tests]
        t2 = time.perf_counter()
        mem = torch.cuda.max_memory_allocated(strategy.device) / 2**20 if cuda else peak_rss_mb()
        result.accuracy.append(row)
        result.train_seconds.append(t1 - t0)
        result.eval_seconds.append(t2 - t1)
        result.peak_memory_mb.append(mem)
        result.state_bytes.append(int(strategy.state_bytes()))
        if progress:
            progress(i + 1, len(stream))
    R = np.array(result.accuracy)
    base = result.baseline_accuracy if not any(np.isnan(result.baseline_accuracy)) else None
    result.metrics = summary_metrics(R, result.test_sizes, base)
    result.metrics["train_seconds"] = float(sum(result.train_seconds))
    result.metrics["peak_memory_mb"] = float(max(result.peak_memory_mb))
    result.metrics["state_bytes"] = float(result.state_bytes[-1])
    return result
