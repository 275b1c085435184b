"""A real headless Chromium (Debian's) driven over the DevTools protocol, for the viewer's tests.

The protocol goes over a pipe (``--remote-debugging-pipe``: JSON messages
ended by NUL on the browser's file descriptors 3 and 4), so no WebSocket
client and no port are needed. Every answer the page receives is recorded
(``Network.responseReceived``: URL and status) and every request that failed
without an answer (``Network.loadingFailed``).
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

CHROMIUM = "/usr/bin/chromium"


#: The box of the page's largest canvas (over 100 x 100), or null: where a viewer draws its viewport.
#: Clicks OHIF's "Skip all" (its onboarding tour) where it is shown.
_SKIP_TOUR = """[...document.querySelectorAll('button, a, span')]
  .filter(e => e.textContent.trim() === 'Skip all').forEach(e => e.click())"""
_VIEWPORT = """(() => {
  const c = [...document.querySelectorAll('canvas')].map(e => e.getBoundingClientRect())
      .filter(r => r.width > 100 && r.height > 100).sort((a, b) => b.width * b.height - a.width * a.height)[0];
  return c ? {x: c.x, y: c.y, width: c.width, height: c.height} : null;
})()"""


class BrowserError(AssertionError):
    """Chromium answered a command with an error, or did not in time."""


@dataclass(frozen=True)
class Answer:
    url: str
    status: int
    method: str


class Chromium:
    """One headless Chromium with one page, software WebGL (SwiftShader) for the viewports.

    The page is 1920 x 1080: OHIF's study list hides its lower-priority columns
    (the accession number among them) on a smaller screen.
    """

    def __init__(self, work: Path, *, extra_headers: dict[str, str] | None = None) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = work / "chromium.log"
        self._log = self.log_path.open("wb")
        args = [CHROMIUM, "--headless=new", "--no-sandbox", "--remote-debugging-pipe", "--no-first-run",
                "--no-default-browser-check", f"--user-data-dir={work / 'profile'}", "--window-size=1920,1080",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "about:blank"]
        # The browser reads commands on fd 3 and writes on fd 4: here our stdin and stdout pipes.
        self.proc = subprocess.Popen(["bash", "-c", 'exec "$@" 3<&0 4>&1 0</dev/null 1>&2', "chromium", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._next_id = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.responses: list[Answer] = []
        self.failures: list[tuple[str, str]] = []
        self._requests: dict[str, tuple[str, str]] = {}
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.page("Network.enable")
        self.page("Page.enable")
        self.page("Runtime.enable")
        self.page("Emulation.setDeviceMetricsOverride",
                  {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False})
        if extra_headers:
            self.page("Network.setExtraHTTPHeaders", {"headers": extra_headers})

    # ------------------------------------------------------------------ protocol

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buffer = b""
        while True:
            chunk = self.proc.stdout.read1(1 << 20)
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._cond:
                self._answers[message["id"]] = message
                self._cond.notify_all()
            return
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self._requests[params["requestId"]] = (params["request"]["url"], params["request"]["method"])
        elif method == "Network.responseReceived":
            url, verb = self._requests.get(params["requestId"], (params["response"]["url"], "GET"))
            with self._cond:
                self.responses.append(Answer(url, int(params["response"]["status"]), verb))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url, _ = self._requests.get(params["requestId"], ("?", "GET"))
            with self._cond:
                self.failures.append((url, str(params.get("errorText"))))

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        """One command; its result (raises :class:`BrowserError` on an error answer or a time-out)."""
        assert self.proc.stdin is not None
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.proc.stdin.write(json.dumps(message).encode() + b"\0")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise BrowserError(f"no answer to {method} (chromium log: {self.log_path})")
                self._cond.wait(left)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def page(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.send(method, params, session=self.session)

    # ------------------------------------------------------------------ what a test does

    def goto(self, url: str) -> None:
        self.page("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
        """Poll ``check`` until it returns something true; that value (raises after ``timeout`` naming ``what``)."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                   f"page text: {str(self.evaluate('document.body && document.body.innerText'))[:1500]!r}")
            time.sleep(0.5)

    def screenshot(self, clip: dict[str, float] | None = None) -> Image.Image:
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = base64.b64decode(self.page("Page.captureScreenshot", params)["data"])
        return Image.open(io.BytesIO(data)).convert("RGB")

    def dismiss_tour(self) -> None:
        """Close OHIF's first-visit tour: its backdrop dims the whole page, viewports included."""
        self.evaluate(_SKIP_TOUR)

    def rendered_viewport(self) -> dict[str, float] | None:
        """The largest canvas's box once its screenshot is more than background (>= 2% of its pixels lit).

        OHIF's tour, which may open before or after the image is drawn, is dismissed first.
        """
        self.dismiss_tour()
        box = self.evaluate(_VIEWPORT)
        if not box:
            return None
        image = self.screenshot(box).convert("L")
        lit = sum(count for level, count in enumerate(image.histogram()) if level > 40)
        return box if lit >= 0.02 * image.width * image.height else None

    def answers_at_least(self, status: int) -> list[Answer]:
        with self._cond:
            return [a for a in self.responses if a.status >= status]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except BrowserError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
