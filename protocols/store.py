"""The run folder: atomic writes of records and tables.

Layout of ``runs/<name>/``::

    config.yaml      the resolved configuration
    cells/<id>.json  one record per finished (or failed) cell, written atomically
    results.csv      tidy table: one row per ok cell x trained experience x evaluated experience
    cells.csv        one row per cell: status, error, scalar metrics
    report/          tables and plots (clbench report)

``results.csv`` and ``cells.csv`` are derived from the records and rewritten atomically, so a
crash at any moment leaves either the old or the new table, never a partial one.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: errors that mean "no room to write": disk full, quota exceeded, file-size limit (RLIMIT_FSIZE)
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
TMP_SUFFIX = ".tmp"


def _mkdirs(folder: Path) -> None:
    """Create ``folder`` (and parents); fsync the parent of each new folder so the entry survives a crash."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    for new in reversed(missing):
        _fsync_dir(new.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file in the same folder, fsync, then rename over ``path``.

    On any error (disk full included) the temporary file is removed and ``path`` is unchanged; a
    full disk (or quota, or file-size limit) raises a :class:`~clbench.errors.UserError` naming the
    file and the fix. A temporary file left by a killed process (``.<name>.*.tmp``) is removed by
    :func:`remove_stale_tmp` on the next start.
    """
    path = Path(path)
    _mkdirs(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results and reports are for everyone to read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            from clbench.errors import UserError

            raise UserError(f"cannot write {path}: {os.strerror(exc.errno)}; the file was left as it was (nothing "
                            "half-written). Fix: free disk space (or raise the quota / file-size limit), then rerun "
                            "the same command: finished cells are kept and only the rest runs") from None
        raise
    _fsync_dir(path.parent)


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files ``.<name>.*.tmp`` that a killed writer left in ``folder``; return them.

    Call it only while holding the folder's lock (no other writer can be mid-write).
    """
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for f in folder.glob(f".*{TMP_SUFFIX}"):
            try:
                f.unlink()
                removed.append(f)
            except OSError:
                pass
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default, allow_nan=True) + "\n")


def atomic_write_yaml(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


CHECKED_MAGIC = b"CLBENCH-CHECKED-1\n"


class CorruptFile(ValueError):
    """A cache file failed its format or checksum test; the message names the file."""


def atomic_save_checked(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` atomically, with a SHA-256 of the payload in a header (for caches).

    Layout: ``CLBENCH-CHECKED-1\n<sha256 hex>\n<torch.save bytes>``; read it with :func:`load_checked`.
    """
    import hashlib
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, CHECKED_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checked(path: str | os.PathLike) -> Any:
    """Load a file written by :func:`atomic_save_checked`; raise :class:`CorruptFile` naming it if damaged.

    Catches truncation and flipped bits anywhere in the file (a bare ``torch.load`` misses bit flips
    inside tensor data). Only tensors and plain containers are loaded (``weights_only``).
    """
    import hashlib
    import io

    import torch

    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(CHECKED_MAGIC):
        raise CorruptFile(f"{path} is not a clbench cache file (wrong header)")
    head, sep, payload = raw[len(CHECKED_MAGIC):].partition(b"\n")
    if not sep or hashlib.sha256(payload).hexdigest().encode() != head:
        raise CorruptFile(f"{path} failed its SHA-256 checksum (truncated or damaged)")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a corrupt file
        raise CorruptFile(f"{path} cannot be read: {exc}") from None


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
