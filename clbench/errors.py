"""Errors shared by every part of clbench.

A :class:`UserError` is a mistake the user can fix (unknown name, bad config value, missing data).
The CLI prints its message (which names the fix) and exits non-zero, without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input; the message says what to change."""


class DataError(UserError):
    """A dataset or weight file is missing, incomplete or damaged; the message names the file and the fix.

    A cell that fails with it is recorded with ``error_kind: data``, and a plain rerun runs it again.
    """


class CellFailure(Exception):
    """A cell could not finish (NaN loss, timeout, crash); recorded as failed, the matrix goes on."""


def unknown_name(kind: str, name: str, valid: Iterable[str], hint: str = "") -> UserError:
    """One clear error for an unknown name, listing the valid ones."""
    valid = sorted(valid)
    msg = f"unknown {kind} {name!r}; valid names: {', '.join(valid) if valid else '(none)'}"
    if hint:
        msg += f". {hint}"
    return UserError(msg)
