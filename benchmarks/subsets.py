"""Permuted MNIST on a seed-drawn subset of the samples (kept for configs written as ``module:function``).

``clbench.benchmarks.subsets:permuted_mnist_subset`` is ``permuted_mnist`` with ``train_per_task`` and
``test_per_task``: every task holds the same seed-drawn images under its own pixel permutation.
"""

from __future__ import annotations

from .registry import permuted_spec
from .sources import MNIST

permuted_mnist_subset = permuted_spec(MNIST, 10, "permuted_mnist_subset")
