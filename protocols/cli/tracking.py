"""``--track``: log every finished cell of ``run``/``tune`` to experiment trackers, as it finishes."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clbench.callbacks import Callbacks


@contextmanager
def tracker_callbacks(args: argparse.Namespace, run_dir: Path) -> Iterator[Callbacks]:
    """Callbacks logging each finished cell to the trackers named by ``--track`` (none: no callbacks)."""
    kinds = getattr(args, "track", None) or []
    if not kinds:
        yield Callbacks()
        return
    from clbench.reports.trackers import TrackerCallback, open_tracker

    trackers = [open_tracker(kind, run_dir, getattr(args, "track_uri", None)) for kind in kinds]
    try:
        yield Callbacks([TrackerCallback(t) for t in trackers])
    finally:
        for t in trackers:
            t.close()
