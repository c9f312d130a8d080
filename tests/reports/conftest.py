"""Fixtures of the report tests: a headless Chromium (skipped, visibly, when it is not installed) and a way to
print on the terminal through pytest's output capture."""

from __future__ import annotations

import pytest

from headless import find_chromium


@pytest.fixture
def say(capsys):
    """Print a line on the terminal even though pytest captures output (-q included)."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\n{line}")

    return write


@pytest.fixture
def chromium(say) -> str:
    """The Chromium executable; the test is skipped with the reason printed when there is none."""
    path = find_chromium()
    if path is None:
        reason = "chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)"
        say(f"headless browser test SKIPPED: {reason}")
        pytest.skip(reason)
    return path
