"""Files: atomic writes, checksummed caches, and YAML read as people write it.

Every file clbench writes goes through :func:`atomic_write_bytes` (temporary file in the same folder,
fsync, rename), so a crash at any moment leaves the old or the new file, never a partial one. A write that
cannot happen (read-only or full disk, a file where a folder is needed, no permission) is one
:class:`~clbench.errors.UserError` naming the path, the reason and the fix, and nothing already written is
touched.

YAML is read with :func:`load_yaml_text`: YAML 1.1 (PyYAML) reads ``1e-3`` and ``1e6`` as strings, since
its float pattern needs a dot; clbench's loader reads every number people write as a number.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


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


_WRITE_FIXES = {
    errno.EROFS: "the file system is read-only; give a writable folder (e.g. --output ./runs)",
    errno.EACCES: "no permission to write there; give a folder you may write to, or change its permissions",
    errno.EPERM: "no permission to write there; give a folder you may write to, or change its permissions",
    errno.ENOTDIR: "a path component is a file, not a folder; give a folder path (or remove that file)",
    errno.EEXIST: "a file is in the way where a folder is needed; give another path or remove that file",
    errno.EISDIR: "a folder is in the way where a file is written; give another path",
}


def cannot_write(path: str | os.PathLike, exc: OSError) -> UserError:
    """One clear error for a write that failed: the path, the reason and the fix."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in NO_SPACE_ERRNOS:
        fix = ("free disk space (or raise the quota / file-size limit), then rerun the same command: finished work "
               "is kept and only the rest runs")
    else:
        fix = _WRITE_FIXES.get(exc.errno or 0, "check the path and its permissions")
    return UserError(f"cannot write {path}: {reason}; nothing already written was changed. Fix: {fix}")


def ensure_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) or raise :func:`cannot_write`'s error naming it."""
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(folder))
        _mkdirs(folder)
    except OSError as exc:
        raise cannot_write(folder, exc) from None
    return folder


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file in the same folder, fsync, then rename over ``path``.

    On any error (disk full included) the temporary file is removed and ``path`` is unchanged; a failed
    write raises :func:`cannot_write`'s :class:`~clbench.errors.UserError`. A temporary file left by a
    killed process (``.<name>.*.tmp``) is removed by :func:`remove_stale_tmp` on the next start.
    """
    path = Path(path)
    ensure_folder(path.parent)
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
        if isinstance(exc, OSError):
            raise cannot_write(path, exc) from None
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
    import torch  # noqa: PLC0415 - keeps this leaf module importable without torch's start-up cost

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
    import torch  # noqa: PLC0415

    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, CHECKED_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checked(path: str | os.PathLike) -> Any:
    """Load a file written by :func:`atomic_save_checked`; raise :class:`CorruptFile` naming it if damaged.

    Catches truncation and flipped bits anywhere in the file (a bare ``torch.load`` misses bit flips
    inside tensor data). Only tensors and plain containers are loaded (``weights_only``).
    """
    import torch  # noqa: PLC0415

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


# ---------------------------------------------------------------- YAML as people write it


class NumberLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3``, ``1E6``, ``.5`` and ``1_000`` as numbers (YAML 1.2 style)."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text with :class:`NumberLoader` (raises ``yaml.YAMLError`` on bad syntax)."""
    return yaml.load(text, Loader=NumberLoader)  # noqa: S506 - a SafeLoader subclass


def load_yaml_file(path: str | os.PathLike) -> Any:
    """Read and parse a YAML file (``OSError``/``yaml.YAMLError``, a ``ValueError``, on failure)."""
    return load_yaml_text(Path(path).read_text(encoding="utf-8"))
