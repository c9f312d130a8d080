"""A fixture for the frozen-feature tests: one torch thread (tiny ops on a loaded shared machine spin otherwise)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
