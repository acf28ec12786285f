"""Full-page Chromium screenshots of every page of the documentation site, for a person to look at.

Builds the site (``mkdocs build --strict``) into a temporary folder, or takes ``--site`` already built,
serves it on 127.0.0.1 and opens every page in headless Chromium at ``--width`` pixels. For each page it
writes ``<out>/<page>.png`` (the whole page, not only the first screen) and reports what a reader would
trip over: elements wider than their column (a table or code block behind a sideways scroll, a cut-off
line), scripts or stylesheets loaded from another host (they fail on an offline cluster) and diagrams left
as text. ``<out>/report.json`` holds the same findings. The exit status is 1 when any page has one.

Chromium is driven through its DevTools protocol on a pipe (``--remote-debugging-pipe``), so nothing beyond
the standard library and Chromium itself is needed. On Debian or Ubuntu: ``sudo apt-get install chromium``.

Run it before a release and look at the pictures::

    .venv/bin/python tools/screenshots.py --out /tmp/pdmp-docs-shots
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Run in each page once it has loaded: what overflows its column, what comes from another host.
FINDINGS_SCRIPT = """
(() => {
  const describe = (el) => {
    const text = (el.innerText || '').trim().split('\\n')[0].slice(0, 60);
    return `${el.tagName.toLowerCase()} "${text}" is ${el.scrollWidth}px wide in ${el.clientWidth}px`;
  };
  const overflowing = [...document.querySelectorAll('.md-content pre > code, .md-typeset__scrollwrap, .md-content p')]
    .filter((el) => el.scrollWidth > el.clientWidth + 4)
    .map(describe);
  const external = [...document.querySelectorAll('script[src], link[rel=stylesheet][href], img[src]')]
    .map((el) => el.src || el.href)
    .filter((url) => url && new URL(url).host !== location.host);
  const rawDiagrams = [...document.querySelectorAll('pre.mermaid, div.mermaid')]
    .filter((el) => !el.querySelector('svg'))
    .map((el) => el.textContent.trim().split('\\n')[0]);
  return JSON.stringify({overflowing, external, rawDiagrams});
})()
"""


class DevTools:
    """A headless Chromium driven through the DevTools protocol on ``--remote-debugging-pipe``."""

    def __init__(self, chromium: str, width: int) -> None:
        self.width = width
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # Chromium reads commands from fd 3 and writes replies to fd 4.
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=functools.partial(_move_fds, to_browser_read, from_browser_write),
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Sends one command and returns its result (events that arrive meanwhile are kept for ``wait_for``)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") != self._next_id:
                self._events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"Chromium refused {method}: {reply['error']}")
            result: dict[str, Any] = reply["result"]
            return result

    def wait_for(self, event: str, session: str) -> None:
        """Blocks until ``event`` has arrived for ``session`` (it may have come during an earlier ``send``)."""
        while True:
            message = self._events.pop(0) if self._events else self._read()
            if message.get("method") == event and message.get("sessionId") == session:
                self._events.clear()
                return

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe (did it start? try it by hand with --headless)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def page(self, url: str) -> tuple[bytes, dict[str, Any]]:
        """The full-page PNG of ``url`` at :attr:`width` pixels, and the findings of :data:`FINDINGS_SCRIPT`."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            self.send("Page.enable", session)
            metrics = {"width": self.width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            self.send("Emulation.setDeviceMetricsOverride", session, **metrics)
            self.send("Page.navigate", session, url=url)
            self.wait_for("Page.loadEventFired", session)
            evaluated = self.send("Runtime.evaluate", session, expression=FINDINGS_SCRIPT, returnByValue=True)
            findings = json.loads(evaluated["result"]["value"])
            size = self.send("Page.getLayoutMetrics", session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": self.width, "height": size["height"], "scale": 1}
            shot = self.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True, clip=clip)
            return base64.b64decode(shot["data"]), findings
        finally:
            self.send("Target.closeTarget", targetId=target)

    def close(self) -> None:
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._process.terminate()
        self._process.wait(timeout=30)


def _move_fds(to_browser_read: int, from_browser_write: int) -> None:
    os.dup2(to_browser_read, 3)
    os.dup2(from_browser_write, 4)


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serves ``folder`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def build_site(target: Path) -> None:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(target)]
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def find_chromium(given: str | None) -> str:
    for candidate in [given] if given else ["chromium", "chromium-browser", "google-chrome"]:
        found = shutil.which(candidate)
        if found:
            return found
    raise SystemExit(
        f"--chromium: {given or 'chromium'} not found; install it (Debian/Ubuntu: sudo apt-get install chromium) "
        "or pass the path of a Chromium or Chrome binary."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs and report.json (created)")
    parser.add_argument("--site", type=Path, help="an already built site (default: build one with mkdocs)")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels (default 1280)")
    parser.add_argument("--chromium", help="the Chromium binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    if args.width < 320:
        parser.error(f"--width: got {args.width}; at least 320 pixels")
    if args.site is not None and not (args.site / "index.html").is_file():
        parser.error(f"--site: {args.site} holds no index.html; build it with `mkdocs build -d {args.site}`")
    chromium = find_chromium(args.chromium)
    with tempfile.TemporaryDirectory() as scratch:
        site = args.site or Path(scratch) / "site"
        if args.site is None:
            build_site(site)
        pages = sorted(path.relative_to(site) for path in site.rglob("index.html"))
        args.out.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {}
        browser = DevTools(chromium, args.width)
        try:
            with serve(site) as base:
                for page in pages:
                    url = base + page.parent.as_posix().removeprefix(".") + ("/" if page.parent.parts else "")
                    png, findings = browser.page(url)
                    name = "-".join(page.parent.parts) or "home"
                    (args.out / f"{name}.png").write_bytes(png)
                    report[name] = findings
                    problems = sum(len(v) for v in findings.values())
                    print(f"{name:40s} {'ok' if not problems else f'{problems} finding(s)'}")
                    for kind, items in findings.items():
                        for item in items:
                            print(f"    {kind}: {item}")
        finally:
            browser.close()
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{len(pages)} pages: screenshots and report.json in {args.out}")
    return 1 if any(any(v.values()) for v in report.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
