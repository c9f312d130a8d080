"""report.html in a real browser: headless Chromium (``.ci/run`` installs it from the OS packages) opens the page
at 1280 px, takes a screenshot, and the test asserts no console error, every figure decoded (naturalWidth > 0)
and nothing wider than the window (neither the page nor a table that would scroll sideways). The browser's
version is printed on the terminal, so a run that skipped (no Chromium) is visible as such.
"""

from __future__ import annotations

import pytest

from clbench.reports.options import ReportOptions
from clbench.reports.report import write_report
from headless import check_page, inspect_page
from report_records import wide_comparison

pytestmark = pytest.mark.slow  # starts a browser process


def test_report_page_renders_cleanly_in_headless_chromium(chromium, tmp_path, say):
    a, b = wide_comparison(tmp_path)
    out = write_report([a, b], tmp_path / "report", "html", ReportOptions())
    report = inspect_page(chromium, out / "report.html", tmp_path / "browser")
    say(f"headless browser: {report.version} ({chromium}); report page {report.client_width} px wide, "
        f"{report.extra['content_height']} px tall, {len(report.images)} figures decoded")
    n_figures = (out / "report.html").read_text().count("<img ")
    check_page(report, n_figures)


def test_the_browser_check_catches_errors_broken_images_and_overflow(chromium, tmp_path):
    """The same measurements on a page with a console error, an undecodable image and a too-wide table."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom")</script>'
                    '<img data-name="broken" src="data:image/png;base64,AAAA">'
                    '<div class="table" style="overflow-x:auto"><table><tr><td style="white-space:nowrap">'
                    + "wide " * 400 + "</td></tr></table></div><p style='width:1600px'>x</p></body></html>")
    report = inspect_page(chromium, page, tmp_path / "browser")
    assert any("boom" in e for e in report.console_errors)
    assert report.images == [("broken", True, 0)] or report.images[0][2] == 0
    assert report.scroll_width > report.client_width and "div.table" in report.scrollers and "p" in report.outside
