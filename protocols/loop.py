"""The evaluation loop of one cell: train on each experience, evaluate on every test set.

After experience i the strategy is evaluated on the test set of every experience j, giving R[i, j]; before
any training the untrained strategy is evaluated too (for forward transfer). Predictions are checked against
the contract (:func:`clbench.strategies.base.predicted_labels`): a wrong shape, labels out of range or
non-finite scores fail the cell with the reason.

With ``eval_period`` and a strategy that can learn an experience in chunks (``online = True``), each
experience is fed in consecutive chunks of ``eval_period`` training samples and, after each chunk, the
strategy is evaluated on the test data of the classes seen so far (anytime accuracy, A_auc). Other
strategies are evaluated at experience ends only.

Costs per experience: wall seconds of training and of evaluation, the process's peak RSS (VmHWM, reset per
experience on Linux; CUDA: peak allocated), the memory the strategy allocated during training above the
process baseline before it (``alloc_peak_mb``: peak RSS minus RSS before training; on CUDA, peak allocated
minus allocated before), and the bytes the strategy keeps (``state_bytes``).
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from clbench.callbacks import NO_CALLBACKS, Callbacks
from clbench.metrics import summary_metrics
from clbench.results import CellRecord
from clbench.stream import Stream, TensorData, TrainData, TrainView
from clbench.strategies.base import Strategy, predicted_labels

EVAL_BATCH = 1024


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux ``clear_refs`` 5), if possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset (VmHWM), in MiB."""
    v = _status_mb("VmHWM:")
    return v if v is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """Current resident memory of this process (VmRSS), in MiB (NaN where unknown)."""
    v = _status_mb("VmRSS:")
    return float("nan") if v is None else v


@torch.inference_mode()
def accuracy(strategy: Strategy, data: TensorData, mask_classes: tuple[int, ...] | None = None, device: str = "cpu") -> float:
    """Fraction of correct predictions (NaN for an empty test set); in task-IL the scores are restricted to the
    task's classes."""
    if len(data) == 0:
        return float("nan")
    correct = 0
    n_classes = strategy.info.n_classes
    for x, y in data.batches(EVAL_BATCH, device=device):
        out = strategy.predict(x)
        if mask_classes is not None and isinstance(out, torch.Tensor) and out.ndim == 2:
            keep = torch.tensor(mask_classes, device=out.device)
            predicted_labels(out, len(y), n_classes)  # the full scores must still honour the contract
            pred = keep[out[:, keep].argmax(1)]
        else:
            pred = predicted_labels(out, len(y), n_classes)
        correct += int((pred.to(y.device) == y).sum())
    return correct / len(data)


class _Memory:
    """Peak memory of one training phase: process peak and the part above the baseline before it."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            _reset_peak_rss()
            self.base = rss_mb()

    def stop(self) -> tuple[float, float]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = peak_rss_mb()
        return peak, max(0.0, peak - self.base)


def _chunks(data: TensorData, period: int | None) -> list[TensorData]:
    if not period or period >= len(data):
        return [data]
    return [data.subset(torch.arange(s, min(s + period, len(data)))) for s in range(0, len(data), period)]


def run_stream(strategy: Strategy, stream: Stream, record: CellRecord, callbacks: Callbacks = NO_CALLBACKS,
               eval_period: int | None = None) -> CellRecord:
    """Train ``strategy`` on each experience of ``stream`` and fill ``record`` with R, the costs and the metrics.

    The strategy receives only :class:`TrainView` objects (training data of the current experience).
    ``callbacks`` receive the loop's events (see :mod:`clbench.callbacks`).
    """
    task_il = stream.scenario == "task-il"
    device = str(strategy.device)
    tests = [(e.test, e.classes if task_il else None) for e in stream.experiences]
    record.test_sizes = [len(t) for t, _ in tests]
    try:
        record.baseline_accuracy = [accuracy(strategy, t, m, device) for t, m in tests]
    except Exception:  # an untrained strategy may not be able to predict (e.g. no class means yet)
        record.baseline_accuracy = [float("nan")] * len(tests)
    strategy.callbacks = callbacks
    callbacks.on_cell_start(record)
    anytime = bool(eval_period) and strategy.online and stream.scenario == "class-il"
    all_test = TensorData.concat([e.test for e in stream.experiences]) if anytime else None
    seen: set[int] = set()
    samples = 0
    memory = _Memory(strategy.device)
    for i, exp in enumerate(stream.experiences):
        train_s = 0.0
        memory.start()
        for chunk in _chunks(exp.train, eval_period if anytime else None):
            t0 = time.perf_counter()
            strategy.train_experience(TrainView(exp.index, exp.task_id, exp.classes, TrainData(chunk)))
            if memory.cuda:
                torch.cuda.synchronize(strategy.device)
            train_s += time.perf_counter() - t0
            if anytime and all_test is not None:
                seen |= set(chunk.y.unique().tolist())
                samples += len(chunk)
                keep = torch.isin(all_test.y, torch.tensor(sorted(seen))).nonzero().squeeze(1)
                acc = accuracy(strategy, all_test.subset(keep), None, device)
                record.anytime.append([samples, acc])
                callbacks.on_evaluation(record, samples, acc)
        peak, alloc = memory.stop()
        t1 = time.perf_counter()
        row = [accuracy(strategy, t, m, device) for t, m in tests]
        record.accuracy.append(row)
        record.train_seconds.append(train_s)
        record.eval_seconds.append(time.perf_counter() - t1)
        record.peak_memory_mb.append(peak)
        record.alloc_peak_mb.append(alloc)
        record.state_bytes.append(int(strategy.state_bytes()))
        callbacks.on_experience_end(record, i)
    return finish_metrics(record)


def finish_metrics(record: CellRecord) -> CellRecord:
    """Fill ``record.metrics`` from its accuracy matrix and per-experience costs (nothing without a trained row).

    The accuracy metrics are :func:`clbench.metrics.summary_metrics` (FWT only when every baseline accuracy is
    known); ``train_seconds`` is the sum over experiences, the memory figures their maxima, ``state_bytes``
    the state after the last experience.
    """
    R = np.array(record.accuracy)
    if not len(R):
        return record
    base = record.baseline_accuracy if not any(np.isnan(record.baseline_accuracy)) else None
    record.metrics = summary_metrics(R, record.test_sizes, base, record.anytime)
    record.metrics["train_seconds"] = float(sum(record.train_seconds))
    record.metrics["peak_memory_mb"] = float(max(record.peak_memory_mb))
    record.metrics["alloc_peak_mb"] = float(max(record.alloc_peak_mb))
    record.metrics["state_bytes"] = float(record.state_bytes[-1])
    return record
