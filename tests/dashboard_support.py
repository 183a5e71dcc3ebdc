"""Helpers of the dashboard tests: a ``litequeue dashboard`` process, HTTP requests to it, and
a headless Chromium driven through the DevTools protocol."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import DEADLINE_S, subprocess_env

URL_LINE = re.compile(r"^litequeue dashboard of (?P<database>.+) at (?P<url>http://\S+/) \((?P<mode>[^)]+)\)")
TOKEN_LINE = re.compile(r"^actions need this token in the X-Litequeue-Token header: (?P<token>\S+)$")


def read_line(fd: int, buffer: bytearray, deadline: float) -> str:
    """Read up to the next newline from ``fd`` (bytes after it stay in ``buffer``) before the
    monotonic ``deadline``; return "" at end of file."""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for a line of output; got {bytes(buffer)!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return bytes(buffer).decode()
            buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


class Dashboard:
    """A ``python -m litequeue dashboard --port 0`` process and the URL it printed."""

    def __init__(self, db_path: Path, args: List[str], env: Optional[dict], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "litequeue", "dashboard", "--db", str(db_path), "--port", "0", *args],
            env=subprocess_env(env), stdout=subprocess.PIPE, stderr=self._log,
        )
        self.token: Optional[str] = None
        buffer = bytearray()
        deadline = time.monotonic() + DEADLINE_S
        first = read_line(self.process.stdout.fileno(), buffer, deadline)
        match = URL_LINE.match(first)
        assert match, f"unexpected start-up line {first!r}; log:\n{self.log()}"
        self.url = match["url"]
        self.mode = match["mode"]
        if "--allow-actions" in args:
            second = read_line(self.process.stdout.fileno(), buffer, deadline)
            token = TOKEN_LINE.match(second)
            self.token = token["token"] if token else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(DEADLINE_S)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(DEADLINE_S)
        self.process.stdout.close()
        self._log.close()


@pytest.fixture
def start_dashboard(db_path: Path, tmp_path: Path):
    """Start dashboards on ``db_path``; each one is killed at teardown if it still runs."""
    started: List[Dashboard] = []

    def start(*args: str, env: Optional[dict] = None) -> Dashboard:
        dashboard = Dashboard(db_path, list(args), env, tmp_path / f"dashboard-{len(started)}.log")
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        dashboard.close()


class Response:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        assert self.headers["Content-Type"] == "application/json; charset=utf-8", self.headers["Content-Type"]
        return json.loads(self.body)


def request(url: str, method: str = "GET", headers: Optional[dict] = None) -> Response:
    """Send one request and return the response, whatever its status."""
    data = b"" if method == "POST" else None
    prepared = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    # No proxy: the dashboard is on loopback, and a configured proxy must not see the requests.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(prepared, timeout=DEADLINE_S) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.headers, error.read())


def get_json(url: str):
    response = request(url)
    assert response.status == 200, response.body
    return response.json()


# --- headless Chromium ---------------------------------------------------------------------

def find_chromium() -> Optional[str]:
    """Return the Chromium executable: $LITEQUEUE_TEST_CHROMIUM, else chromium on PATH."""
    for candidate in (os.environ.get("LITEQUEUE_TEST_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-default-apps", "--disable-dev-shm-usage",
    "--mute-audio", "--hide-scrollbars",
    # Every host name fails to resolve, so the browser can reach only the dashboard on 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def _move_above_9(fd: int) -> int:
    """Return a duplicate of ``fd`` numbered 10 or more, and close ``fd``."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class DevToolsError(Exception):
    """Raised when the browser returns an error for a DevTools call."""


class Browser:
    """A headless Chromium driven through --remote-debugging-pipe.

    With that flag the browser reads DevTools protocol messages from its file descriptor 3 and
    writes its own to descriptor 4, each one JSON followed by a NUL byte, so no port and no
    websocket are needed.
    """

    def __init__(self, executable: str, profile_dir: Path, log_path: Path):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # The browser's ends move to descriptors of 10 or more first, so that moving them to 3
        # and 4 cannot overwrite one with the other.
        to_browser_read, from_browser_write = (_move_above_9(fd) for fd in (to_browser_read, from_browser_write))
        self._log = open(log_path, "ab")
        self.log_path = log_path
        # bash moves the pipe ends to descriptors 3 and 4, then runs Chromium in its place.
        # (dash, Debian's sh, accepts only descriptors 0 to 9 in a redirection.)
        script = f'exec "$0" "$@" 3<&{to_browser_read} 4>&{from_browser_write}'
        self.process = subprocess.Popen(
            ["bash", "-c", script, executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            pass_fds=(to_browser_read, from_browser_write), start_new_session=True,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = bytearray()
        self._next_id = 0
        self.events: List[dict] = []
        self.session: Optional[str] = None

    def call(self, method: str, params: Optional[dict] = None, *, session: bool = True) -> dict:
        """Call a DevTools method, on the attached page unless ``session`` is False, and
        return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session is not None:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]

        deadline = time.monotonic() + DEADLINE_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise DevToolsError(f"{method} failed: {reply['error']}")
            return reply["result"]

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for the browser; its log:\n{self.log()}")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 65536)
                if not chunk:
                    raise AssertionError(f"the browser closed its DevTools pipe; its log:\n{self.log()}")
                self._buffer.extend(chunk)
        message, _, rest = bytes(self._buffer).partition(b"\0")
        self._buffer[:] = rest
        return json.loads(message)

    def open_page(self, width: int = 1280, height: int = 900) -> None:
        """Open a new tab, attach to it and record its console errors and exceptions."""
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait until its document and scripts have loaded."""
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise DevToolsError(f"navigation to {url} failed: {result['errorText']}")
        address = json.dumps(url.split("#")[0])
        self.wait_for_page(f"location.href.split('#')[0] === {address} && document.readyState === 'complete'",
                           f"{url} to load")

    def evaluate(self, expression: str):
        """Evaluate a JavaScript expression in the page and return its value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for_page(self, expression: str, message: str) -> object:
        """Poll ``expression`` in the page until it is truthy, within the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        pause_s = 0.05
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {DEADLINE_S:g} s waiting for {message}; "
                                     f"the page shows:\n{self.evaluate('document.body.innerText')}")
            time.sleep(pause_s)
            pause_s = min(pause_s * 1.5, 0.25)

    def page_errors(self) -> List[str]:
        """Return the exceptions and console errors the page reported so far."""
        self.evaluate("0")  # a call collects the events that the browser sent before its reply
        errors = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                errors.append(json.dumps(params["exceptionDetails"]))
            elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
            elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                errors.append(json.dumps(params["args"]))
        return errors

    def screenshot(self) -> bytes:
        """Return a PNG of the whole page, beyond the viewport's height too."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                    "captureBeyondViewport": True})["data"]
        return base64.b64decode(data)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.session = None
                self.call("Browser.close", session=False)
            except (AssertionError, DevToolsError, OSError):
                pass  # killed below
            try:
                self.process.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(DEADLINE_S)
        # Chromium's helper processes share its session; none may outlive the test.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


@pytest.fixture
def browser(tmp_path: Path):
    """A headless Chromium with one open tab; the test is skipped when Chromium is missing."""
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium not found (install Debian's chromium package, or set LITEQUEUE_TEST_CHROMIUM "
                    "to its path); the browser tests of the dashboard need it")
    instance = Browser(executable, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        instance.open_page()
        yield instance
    finally:
        instance.close()
