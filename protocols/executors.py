"""Executors run cells and hand results back to the driver, which alone writes the run folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .config import CellSpec
from .loop import CellResult

CellFn = Callable[[CellSpec], CellResult]


class SerialExecutor:
    """Run the cells one after the other in this process (streams shared between consecutive cells)."""

    def run(self, cells: list[CellSpec], fn: CellFn) -> Iterator[CellResult]:
        for cell in cells:
            yield fn(cell)


def make_executor(kind: str = "local", workers: int = 1, **options) -> SerialExecutor:
    return SerialExecutor()
