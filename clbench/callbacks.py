"""Loop events, delivered to callback objects with no-op defaults (in the spirit of Lightning's ``Callback``).

The evaluation loop calls :meth:`Callback.on_experience_end` after each experience (with the partly filled
record) and :meth:`Callback.on_cell_end` when the cell is finished; gradient strategies call
:meth:`Callback.on_epoch_end` after each epoch through ``Strategy.callbacks``. Progress bars, pruning and
experiment-tracker export plug in here.

An exception raised by a callback is not the strategy's fault: :class:`Callbacks` wraps it in
:class:`CallbackError`, which the loop lets through (a pruned trial, a tracker that cannot write), while an
exception of the strategy becomes a failed cell.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Callback:
    """Override the events you need; every method does nothing by default."""

    def on_cell_start(self, record: Any) -> None:
        """Before the first experience; ``record`` holds the cell's identity and stream description."""

    def on_epoch_end(self, experience: int, epoch: int, loss: float) -> None:
        """A gradient strategy finished an epoch (mean training loss of the epoch)."""

    def on_experience_end(self, record: Any, index: int) -> None:
        """After experience ``index`` (0-based) was trained and evaluated; ``record.accuracy`` has ``index + 1`` rows."""

    def on_evaluation(self, record: Any, samples_seen: int, accuracy: float) -> None:
        """An anytime evaluation during an experience (``eval_period``): accuracy on the seen classes' test data."""

    def on_cell_end(self, record: Any) -> None:
        """The cell finished (``record.status`` is ``ok`` or ``failed``)."""


class StopCell(Exception):
    """Raised by a callback to stop a cell early (e.g. a pruned trial); the record keeps what was measured."""


class CallbackError(Exception):
    """An exception raised inside a callback; ``original`` is what it raised."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


class Callbacks(Callback):
    """Several callbacks called in order; their exceptions come out as :class:`CallbackError`."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.items = [c for c in callbacks if c is not None]

    def __bool__(self) -> bool:
        return bool(self.items)

    def _call(self, event: str, *args: Any) -> None:
        for c in self.items:
            try:
                getattr(c, event)(*args)
            except CallbackError:
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, unchanged inside
                raise CallbackError(exc) from exc

    def on_cell_start(self, record: Any) -> None:
        self._call("on_cell_start", record)

    def on_epoch_end(self, experience: int, epoch: int, loss: float) -> None:
        self._call("on_epoch_end", experience, epoch, loss)

    def on_experience_end(self, record: Any, index: int) -> None:
        self._call("on_experience_end", record, index)

    def on_evaluation(self, record: Any, samples_seen: int, accuracy: float) -> None:
        self._call("on_evaluation", record, samples_seen, accuracy)

    def on_cell_end(self, record: Any) -> None:
        self._call("on_cell_end", record)


NO_CALLBACKS = Callbacks()
