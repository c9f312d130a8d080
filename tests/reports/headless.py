"""Open a page in headless Chromium and measure it, through the Chrome DevTools protocol over a pipe.

``--remote-debugging-pipe`` makes Chromium read protocol messages from file descriptor 3 and write replies
to 4, each a JSON object ended by a NUL byte: no websocket library and no network port. :func:`inspect_page`
loads a file at a given window width, waits until every image is decoded, and returns what the tests assert:
console errors, each image's natural width, horizontal overflow (the page, and any element that scrolls or
sticks out sideways), a full-page screenshot, and the browser's version.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
         "--remote-debugging-pipe"]

MEASURE = """(() => {
  const vw = document.documentElement.clientWidth;
  const out = {clientWidth: vw, innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
               images: Array.from(document.images).map(i => [i.dataset.name || i.alt.slice(0, 40), i.complete, i.naturalWidth]),
               scrollers: [], outside: []};
  const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                    + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : '');
  for (const e of document.body.querySelectorAll('*')) {
    const ox = getComputedStyle(e).overflowX;
    if ((ox === 'auto' || ox === 'scroll') && e.scrollWidth > e.clientWidth + 1) out.scrollers.push(name(e));
    const r = e.getBoundingClientRect();
    if (r.width > 0 && r.right > vw + 0.5) out.outside.push(name(e));
  }
  return JSON.stringify(out);
})()"""


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium process driven over ``--remote-debugging-pipe`` (use as a context manager)."""

    def __init__(self, executable: str, user_data_dir: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        r3, w3 = os.pipe()  # we write, Chromium reads (its fd 3)
        r4, w4 = os.pipe()  # Chromium writes (its fd 4), we read

        def child_fds() -> None:  # move both ends above 9 first, so neither dup2 can close the other
            a, b = fcntl.fcntl(r3, fcntl.F_DUPFD, 10), fcntl.fcntl(w4, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                     pass_fds=(3, 4, r3, w4), preexec_fn=child_fds, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(r3)
        os.close(w4)
        self.wfd, self.rfd = w3, r4
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("Browser.close")
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read_until(self, pred) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "method" in msg:
                    self.events.append(msg)
                if pred(msg):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"no reply from chromium within {self.timeout:.0f} s")
            ready, _, _ = select.select([self.rfd], [], [], left)
            if ready:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                    raise CDPError(f"chromium closed the pipe: {err}")
                self.buf += chunk

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        reply = self._read_until(lambda m: m.get("id") == mid)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        for e in self.events:
            if e["method"] == method and (session is None or e.get("sessionId") == session):
                self.events.remove(e)
                return e
        return self._read_until(lambda m: m.get("method") == method and (session is None or m.get("sessionId") == session))


@dataclass
class PageReport:
    version: str
    console_errors: list[str]
    images: list[tuple[str, bool, int]]
    client_width: int
    scroll_width: int
    scrollers: list[str]
    outside: list[str]
    screenshot: Path
    extra: dict[str, Any] = field(default_factory=dict)


def inspect_page(executable: str, page: Path, workdir: Path, width: int = 1280, height: int = 900) -> PageReport:
    """Load ``page`` at ``width`` x ``height`` CSS pixels, wait for every image to decode, measure, screenshot."""
    workdir.mkdir(parents=True, exist_ok=True)
    with Chromium(executable, workdir / "profile") as b:
        version = b.send("Browser.getVersion")["product"]
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for m in ("Page.enable", "Runtime.enable", "Log.enable"):
            b.send(m, session=s)
        b.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                      "mobile": False}, s)
        b.send("Page.navigate", {"url": page.resolve().as_uri()}, s)
        b.wait_event("Page.loadEventFired", s)
        b.send("Runtime.evaluate", {"expression": "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))",
                                    "awaitPromise": True}, s)
        value = json.loads(b.send("Runtime.evaluate", {"expression": MEASURE, "returnByValue": True}, s)["result"]["value"])
        metrics = b.send("Page.getLayoutMetrics", session=s)
        full_h = int(min(metrics["cssContentSize"]["height"], 20000))
        shot = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                 "clip": {"x": 0, "y": 0, "width": width, "height": full_h, "scale": 1}}, s)
        path = workdir / "screenshot.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        errors = []
        for e in b.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                                       for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                errors.append("exception: " + str(p.get("exceptionDetails", {}).get("text", "")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append("log: " + str(p["entry"].get("text", "")) + " " + str(p["entry"].get("url", "")))
    return PageReport(version, errors, [tuple(i) for i in value["images"]], value["clientWidth"], value["scrollWidth"],
                      value["scrollers"], value["outside"], path, {"content_height": full_h})


def check_page(report: PageReport, expected_figures: int) -> None:
    """The assertions every report page must pass in the browser."""
    assert report.console_errors == [], report.console_errors
    assert len(report.images) == expected_figures and expected_figures > 0
    assert all(w > 0 for _, _, w in report.images), [i for i in report.images if i[2] <= 0]
    assert report.scroll_width <= report.client_width, (report.scroll_width, report.client_width, report.outside[:10])
    assert report.scrollers == [] and report.outside == [], (report.scrollers, report.outside[:10])
    import numpy as np
    from PIL import Image

    with Image.open(report.screenshot) as im:
        assert im.width == 1280 and im.height > 900
        hsv = np.asarray(im.convert("HSV"), dtype=int)
    coloured = int(((hsv[..., 1] > 120) & (hsv[..., 2] > 60)).sum())  # plot lines, bars, heatmaps; text is grey
    assert coloured > 5000, f"only {coloured} saturated pixels: figures not drawn"
