"""The evaluation loop: callbacks, anytime accuracy, the strategy's own memory, and unlabelled data by name only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clbench.benchmarks.features import feature_stream
from clbench.benchmarks.registry import build_stream
from clbench.callbacks import Callback, Callbacks, StopCell
from clbench.metrics import last_seen_accuracy
from clbench.protocols.config import CellSpec
from clbench.protocols.loop import run_stream
from clbench.protocols.runner import execute_cell
from clbench.results import CellRecord
from clbench.strategies.base import Strategy
from clbench.strategies.baselines import Finetune
from clbench.strategies.kvb import KVB
from clbench.strategies.nmc import NMC


class Events(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def on_cell_start(self, record):
        self.seen.append(("start",))

    def on_epoch_end(self, experience, epoch, loss):
        self.seen.append(("epoch", experience, epoch, round(loss, 6) == round(loss, 6)))

    def on_experience_end(self, record, index):
        self.seen.append(("experience", index, len(record.accuracy)))


def test_callbacks_see_every_epoch_and_experience_in_order():
    stream = build_stream({"name": "split_digits", "n_experiences": 3, "classes": [0, 1, 2, 3, 4, 5]}, 0)
    events = Events()
    run_stream(Finetune(stream.info, epochs=2, hidden=[8]), stream, CellRecord("x", "b", "s", 0), Callbacks([events]))
    assert events.seen == [("start",)] + [e for i in range(3) for e in
                                          [("epoch", i, 0, True), ("epoch", i, 1, True), ("experience", i, i + 1)]]


def test_a_callback_stopping_the_cell_keeps_what_was_measured():
    class StopAfterTwo(Callback):
        def on_experience_end(self, record, index):
            if index == 1:
                raise StopCell("enough")

    cell = CellSpec({"name": "split_digits"}, {"name": "finetune", "hidden": [8]}, 0)
    from clbench.protocols import runner

    rec = runner.execute_cell(cell, None, Callbacks([StopAfterTwo()]))
    assert rec.status == "failed" and rec.error_kind == "stopped" and rec.error == "enough" and len(rec.accuracy) == 2


def test_anytime_accuracy_every_eval_period_samples_equals_a_hand_run():
    """A_auc: nmc evaluated every 100 training samples on the test data of the classes seen so far."""
    stream = feature_stream(build_stream({"name": "split_digits", "n_experiences": 5}, 0), "flatten")
    rec = run_stream(NMC(stream.info), stream, CellRecord("x", "b", "s", 0), eval_period=100)
    # the same by hand: feed the chunks to a fresh nmc, evaluate on the seen classes' test samples
    hand, points, seen, n = NMC(stream.info), [], set(), 0
    test_x = torch.cat([e.test.x for e in stream]), torch.cat([e.test.y for e in stream])
    for e in stream:
        for s in range(0, len(e.train), 100):
            x, y = e.train.x[s:s + 100], e.train.y[s:s + 100]
            hand.update(x, y)
            seen |= set(y.tolist())
            n += len(y)
            keep = torch.isin(test_x[1], torch.tensor(sorted(seen)))
            points.append([n, float((hand.predict(test_x[0][keep]).argmax(1) == test_x[1][keep]).float().mean())])
    assert len(rec.anytime) == len(points) > 10
    assert np.allclose(rec.anytime, points)
    assert rec.metrics["a_auc"] == pytest.approx(np.mean([p[1] for p in points]))
    # A_last: accuracy on all seen test data after the last step, weighted by test-set size
    R, sizes = np.array(rec.accuracy), np.array(rec.test_sizes)
    assert rec.metrics["a_last"] == pytest.approx((R[-1] * sizes).sum() / sizes.sum()) == last_seen_accuracy(R, sizes)


class Hoarder(Strategy):
    """Keeps a 64 MiB buffer from the first experience on (a strategy with a known buffer)."""

    def train_experience(self, exp):
        if not hasattr(self, "buffer"):
            self.buffer = torch.ones(16 * 2**20)  # float32: 64 MiB, touched

    def predict(self, x):
        return torch.zeros(len(x), self.info.n_classes)

    def state_bytes(self):
        return self.buffer.nelement() * 4


def test_the_memory_the_strategy_allocates_is_measured_apart_from_the_process():
    stream = build_stream({"name": "split_digits", "n_experiences": 2}, 0)
    rec = run_stream(Hoarder(stream.info), stream, CellRecord("x", "b", "s", 0))
    assert 60 <= rec.alloc_peak_mb[0] <= 80  # the 64 MiB buffer
    assert rec.alloc_peak_mb[1] < 8  # already held: nothing new
    assert rec.peak_memory_mb[0] > rec.alloc_peak_mb[0]  # the process's peak includes everything else


KVB_SMALL = {"name": "kvb", "n_codebooks": 4, "n_keys": 8, "key_epochs": 1, "epochs": 1}


def test_kvb_sees_no_later_experience_by_default_and_an_ablation_is_marked(monkeypatch):
    seen = []
    monkeypatch.setattr(KVB, "fit_keys", lambda self, x: (seen.append(len(x)), setattr(self, "keys_fitted", True)))
    bench = {"name": "split_digits", "n_experiences": 5, "backbone": "flatten"}
    rec = execute_cell(CellSpec(bench, KVB_SMALL, 0))
    first = len(build_stream(bench, 0)[0].train)
    assert rec.ok and seen == [first] and "unlabelled" not in rec.stream  # keys fitted on experience 0 only
    seen.clear()
    rec = execute_cell(CellSpec(bench, {**KVB_SMALL, "key_data": "all_experiences_unlabelled"}, 0))
    assert seen == [1257] and rec.stream["unlabelled"] == "all_experiences_unlabelled" and rec.stream["sees_future"]


def test_kvb_keys_from_another_dataset_go_through_the_cell_backbone(data_root, monkeypatch):
    seen = []
    monkeypatch.setattr(KVB, "fit_keys", lambda self, x: (seen.append(tuple(x.shape)), setattr(self, "keys_fitted", True)))
    bench = {"name": "split_mnist", "n_experiences": 5, "backbone": "flatten"}
    rec = execute_cell(CellSpec(bench, {**KVB_SMALL, "key_data": "fmnist"}, 0, data_root=str(data_root)))
    assert rec.ok, rec.error
    assert seen == [(60000, 784)] and rec.stream["unlabelled"] == "fmnist" and rec.stream["sees_future"] is False
    rec = execute_cell(CellSpec({"name": "split_digits", "backbone": "flatten"}, {**KVB_SMALL, "key_data": "fmnist"}, 0,
                                data_root=str(data_root)))
    assert rec.status == "failed" and "shape (784,)" in rec.error and "backbone" in rec.error
