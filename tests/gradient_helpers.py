"""Helpers shared by the gradient-strategy and Avalanche-adapter tests (not a test module)."""

from __future__ import annotations

import pytest
import torch

from clbench.benchmarks.registry import build_stream
from clbench.protocols.loop import CellResult, run_stream
from clbench.strategies.registry import resolve_strategy


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run on one torch thread (no oversubscription of the shared cores); import it to use it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_cell(name: str, stream, tiny: dict, seed: int = 0, **hp):
    """One cell as the runner runs it (model initialised under the seeded global generator): (strategy, R)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        strategy = resolve_strategy(name)(stream.info, seed=seed, **{**tiny, **hp})
        result = run_stream(strategy, stream, CellResult("t", stream.name, name, seed))
    return strategy, result


@pytest.fixture(scope="module")
def permuted(data_root):
    """Three experiences of permuted scikit-learn digits (seed 0)."""
    return build_stream({"name": "permuted_digits", "n_experiences": 3}, 0, data_root)
