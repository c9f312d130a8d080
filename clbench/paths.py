"""Where data and caches live: settings and environment variables, never hard-coded paths."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "CLBENCH_DATA"
CACHE_ENV = "CLBENCH_CACHE"
OFFLINE_ENV = "CLBENCH_OFFLINE"


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The dataset root: the explicit setting, else ``$CLBENCH_DATA``, else ``~/.cache/clbench/data``."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return cache_root() / "data"


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """The cache folder: explicit, else ``$CLBENCH_CACHE``, else ``$XDG_CACHE_HOME/clbench`` (``~/.cache``)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clbench"


def offline() -> bool:
    """True when downloads are disabled (``CLBENCH_OFFLINE=1``)."""
    return os.environ.get(OFFLINE_ENV, "").lower() in {"1", "true", "yes"}
