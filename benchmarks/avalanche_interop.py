"""clbench streams as Avalanche benchmarks, and back (needs avalanche-lib >= 0.6).

``as_avalanche_benchmark(stream)`` turns any clbench :class:`Stream` (split, permuted, rehearsal
environments, feature streams) into an Avalanche ``CLScenario`` with a ``train_stream`` and a
``test_stream`` of one experience per clbench experience, in the same order, holding the same
samples, labels and task labels. Inputs are served as float32 exactly as clbench's own training
loop sees them (uint8 images divided by 255), converted sample by sample so that the uint8
tensors are not copied. ``stream_from_avalanche`` reads such a benchmark back into a Stream.

Avalanche is imported inside the functions, never at import time.
"""

from __future__ import annotations

from typing import Any

import torch

from clbench.errors import UserError

from clbench.stream import Experience, Stream, TensorData


def _avalanche():
    try:
        import avalanche  # noqa: F401
    except ModuleNotFoundError:
        raise UserError("Avalanche interoperability needs avalanche-lib; fix: pip install 'avalanche-lib>=0.6'") from None


def _to_float(x: torch.Tensor) -> torch.Tensor:
    """One sample as clbench's loop sees it: uint8 / 255, otherwise float32."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def to_avalanche_dataset(data: TensorData, task_id: int = 0) -> Any:
    """An Avalanche classification dataset of ``(x, y, task_id)`` items over ``data`` (no copy of x)."""
    _avalanche()
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset

    return _make_taskaware_tensor_classification_dataset(
        data.x, data.y, transform=_to_float, targets=data.y.tolist(), task_labels=int(task_id)
    )


def as_avalanche_benchmark(stream: Stream) -> Any:
    """An Avalanche benchmark (``CLScenario``) with the train and test streams of ``stream``.

    Experience i of ``train_stream``/``test_stream`` holds the training/test data of clbench
    experience i, with its task label, ``classes_in_this_experience`` and the other class-timeline
    attributes Avalanche strategies and metrics read.
    """
    _avalanche()
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    if not len(stream):
        raise UserError(f"stream {stream.name!r} has no experiences; nothing to convert")
    bm = benchmark_from_datasets(
        train=[to_avalanche_dataset(e.train, e.task_id) for e in stream],
        test=[to_avalanche_dataset(e.test, e.task_id) for e in stream],
    )
    return with_classes_timeline(with_task_labels(bm))


def _read(dataset: Any) -> TensorData:
    """All ``(x, y)`` of an Avalanche dataset, in order, as float inputs and int64 labels."""
    xs, ys = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=1024, shuffle=False)
    for batch in loader:
        xs.append(batch[0])
        ys.append(batch[1])
    return TensorData(torch.cat(xs).float(), torch.cat(ys).long())


def stream_from_avalanche(benchmark: Any, name: str = "avalanche", scenario: str = "class-il") -> Stream:
    """A clbench Stream from an Avalanche benchmark's ``train_stream`` and ``test_stream`` (paired by index)."""
    train_s, test_s = list(benchmark.train_stream), list(benchmark.test_stream)
    if len(train_s) != len(test_s):
        raise UserError(f"the benchmark has {len(train_s)} training but {len(test_s)} test experiences; clbench pairs them one to one")
    exps = []
    classes_all: set[int] = set()
    for i, (tr, te) in enumerate(zip(train_s, test_s)):
        train, test = _read(tr.dataset), _read(te.dataset)
        classes = tuple(sorted(set(train.y.tolist())))
        classes_all |= set(classes)
        task = int(getattr(tr, "task_label", 0) or 0)
        exps.append(Experience(i, task, classes, train, test))
    return Stream(name, scenario, max(classes_all) + 1, tuple(exps))
