"""A headless Chromium driven over the DevTools protocol on a pipe (stdlib only, no driver).

Chromium's ``--remote-debugging-pipe`` reads NUL-terminated JSON commands from file
descriptor 3 and writes responses and events to descriptor 4; the tests use it to load a page,
collect console errors and uncaught exceptions, evaluate JavaScript and take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from typing import Any

INSTALL_ENV = "KTSWEEP_CHROMIUM_INSTALL"
"""Set to 1 (as .ci/run does) to let the browser test apt-get Debian's ``chromium``."""


def find_or_install() -> tuple[str | None, str]:
    """The chromium binary, installing it when allowed; (None, why) where it cannot be had."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found, ""
    if os.environ.get(INSTALL_ENV) != "1":
        return None, (f"chromium is not installed ({INSTALL_ENV}=1 lets the test apt-get it, "
                      "or: apt-get install chromium)")
    if os.geteuid() != 0:
        return None, "installing chromium needs root"
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            return None, f"{' '.join(cmd)} failed: {done.stderr[-500:]}"
    return shutil.which("chromium"), ""


class Browser:
    """One headless Chromium with one page attached (a flat DevTools session)."""

    def __init__(self, binary: str, width: int = 1280, height: int = 1600):
        import fcntl

        def high(fd: int) -> int:  # above 4, so wiring 3 and 4 in the child clobbers neither
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return moved

        to_child, self._cmd_w = (high(fd) for fd in os.pipe())
        self._evt_r, from_child = (high(fd) for fd in os.pipe())

        def wire() -> None:  # in the child: its fd 3 reads our commands, fd 4 answers
            os.dup2(to_child, 3, inheritable=True)
            os.dup2(from_child, 4, inheritable=True)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read(self, timeout: float) -> dict[str, Any]:
        import select

        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._evt_r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._evt_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: bool = False,
             timeout: float = 60) -> dict[str, Any]:
        """Send one command and return its result; events met meanwhile are kept."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for e in self.events:
            if e.get("method") == method:
                return e
        end = time.monotonic() + timeout
        while True:
            e = self._read(max(0.01, end - time.monotonic()))
            self.events.append(e)
            if e.get("method") == method:
                return e

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value (promises awaited), or RuntimeError if it throws."""
        out = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, session=True)
        if "exceptionDetails" in out:
            raise RuntimeError(out["exceptionDetails"].get("text", "JavaScript error"))
        return out["result"].get("value")

    def screenshot(self) -> bytes:
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        return base64.b64decode(data)

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error log entries seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "exception"))
            elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description", "")))
                                    for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._evt_r)
