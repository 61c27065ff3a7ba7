"""Headless Chromium, driven over the DevTools protocol on loopback: what a page requests, how it
lays out at a given width, how long it takes to load, and what it looks like (a screenshot).

The page's own Content-Security-Policy forbids scripts; the protocol's `Runtime.evaluate` is the
browser's, not the page's, so the layout can be measured without loosening it.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, profile: Path) -> None:
        assert CHROMIUM, "chromium is missing: `make test` installs it (apt package chromium)"
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a browser that used the profile before left its own
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.ws = self._connect(port_file)
        except BaseException:
            self.proc.kill()
            raise
        self.events: list[dict] = []
        self._id = 0

    def _connect(self, port_file: Path) -> websocket.WebSocket:
        """The page's DevTools socket: its port is in the profile once the browser listens."""
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            assert self.proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        return websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)

    def send(self, method: str, **params: Any) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                assert "error" not in message, message["error"]
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str) -> dict:
        while True:
            found = next((e for e in self.events if e.get("method") == event), None)
            if found:
                self.events.remove(found)
                return found["params"]
            self.events.append(json.loads(self.ws.recv()))

    def load(self, url: str, width: int, height: int = 900) -> None:
        """Open `url` in a window `width` CSS pixels wide (a phone's, with touch, below 600)."""
        self.events.clear()
        self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width < 600
        )
        self.send("Network.enable")
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def requests(self) -> list[str]:
        """Every URL the page asked for since `load`."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, clip: dict | None = None) -> Image.Image:
        """The window, or the region `clip` ({x, y, width, height} in page pixels) wherever it is
        on the page (a whole long page is more than Chromium will capture at once)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": clip is not None}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        shot = self.send("Page.captureScreenshot", **params)
        return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait(timeout=30)
