"""A real HTTP server on loopback for the fetch tests, with the faults the web has.

It listens on several loopback addresses (127.0.0.1 .. 127.0.0.4, and ::1), so one server plays
several "domains", and it records every request (path, host, time) and the most requests it ever
served at once per host, so tests can check politeness from the server's side.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from aiohttp import web

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")


@dataclass
class Log:
    requests: list[tuple[str, str, float]] = field(default_factory=list)  # (host, path, time)
    active: Counter = field(default_factory=Counter)
    most_active: Counter = field(default_factory=Counter)
    hits: Counter = field(default_factory=Counter)

    def times(self, host: str) -> list[float]:
        return [t for h, _, t in self.requests if h == host]


class FaultyServer:
    def __init__(self, images: dict[str, bytes]):
        self.images = images  # name -> JPEG bytes
        self.log = Log()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._bomb = gzip.compress(b"\0" * (64 * 2**20), compresslevel=9)

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FaultyServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        netloc = f"[{host}]" if ":" in host else host
        return f"http://{netloc}:{self.port}{path}"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/img/{name}", self._image)
        app.router.add_get("/slow/{name}", self._slow)
        app.router.add_get("/stall", self._stall)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/flaky/{key}/{name}", self._flaky)
        app.router.add_get("/busy/{key}/{name}", self._busy)
        app.router.add_get("/truncated", self._truncated)
        app.router.add_get("/html", self._html)
        app.router.add_get("/octet/{name}", self._octet)
        app.router.add_get("/as-text/{name}", self._as_text)
        app.router.add_get("/mislabelled", self._mislabelled)
        app.router.add_get("/redirect/{hops}/{name}", self._redirect)
        app.router.add_get("/loop", self._loop_redirect)
        app.router.add_get("/to-metadata", self._to_metadata)
        app.router.add_get("/goto", self._goto)
        app.router.add_get("/huge", self._huge)
        app.router.add_get("/gzip-bomb", self._gzip_bomb)
        app.router.add_get("/optout/{directive}/{name}", self._optout)
        app.router.add_get("/tdm/{name}", self._tdm)
        runner = web.AppRunner(app)
        await runner.setup()
        first = web.TCPSite(runner, HOSTS[0], 0)
        await first.start()
        self.port = first._server.sockets[0].getsockname()[1]
        for host in (*HOSTS[1:], "::1"):
            await web.TCPSite(runner, host, self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    # ---- bookkeeping -----------------------------------------------------------------------
    @web.middleware
    async def _record(self, request: web.Request, handler):
        host = request.transport.get_extra_info("sockname")[0]
        self.log.requests.append((host, request.path, time.monotonic()))
        self.log.hits[request.path] += 1
        self.log.active[host] += 1
        self.log.most_active[host] = max(self.log.most_active[host], self.log.active[host])
        try:
            return await handler(request)
        finally:
            self.log.active[host] -= 1

    def _jpeg(self, name: str, **headers) -> web.Response:
        return web.Response(body=self.images[name], content_type="image/jpeg", headers=headers)

    # ---- routes ----------------------------------------------------------------------------
    async def _image(self, request):
        return self._jpeg(request.match_info["name"])

    async def _slow(self, request):
        await asyncio.sleep(0.3)
        return self._jpeg(request.match_info["name"])

    async def _stall(self, request):
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        await response.write(b"\xff\xd8\xff")
        await asyncio.sleep(30)
        return response

    async def _status(self, request):
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def _flaky(self, request):
        """500 on the first request of each key, then the image."""
        if self.log.hits[request.path] == 1:
            return web.Response(status=503, text="try again")
        return self._jpeg(request.match_info["name"])

    async def _busy(self, request):
        """429 with Retry-After: 1 on the first request of each key, then the image."""
        if self.log.hits[request.path] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        return self._jpeg(request.match_info["name"])

    async def _truncated(self, request):
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg", "Content-Length": "50000"})
        await response.prepare(request)
        await response.write(b"\xff\xd8\xff" + b"\0" * 1000)
        request.transport.close()
        return response

    async def _html(self, request):
        return web.Response(text="<html><body>This page is gone</body></html>", content_type="text/html")

    async def _octet(self, request):
        return web.Response(body=self.images[request.match_info["name"]], content_type="application/octet-stream")

    async def _as_text(self, request):  # an image sent as a page: its header must not decide
        return web.Response(body=self.images[request.match_info["name"]], content_type="text/plain")

    async def _mislabelled(self, request):
        return web.Response(body=b"<html>not an image</html>", content_type="image/jpeg")

    async def _redirect(self, request):
        hops, name = int(request.match_info["hops"]), request.match_info["name"]
        target = f"/redirect/{hops - 1}/{name}" if hops > 1 else f"/img/{name}"
        raise web.HTTPFound(target)

    async def _loop_redirect(self, request):
        raise web.HTTPFound("/loop")

    async def _to_metadata(self, request):
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def _goto(self, request):
        """A redirect to whatever URL the query's `u` names."""
        raise web.HTTPFound(request.query["u"])

    async def _huge(self, request):
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"\0" * 2**20)
        return response

    async def _gzip_bomb(self, request):
        return web.Response(body=self._bomb, headers={"Content-Type": "image/png", "Content-Encoding": "gzip"})

    async def _optout(self, request):
        return self._jpeg(request.match_info["name"], **{"X-Robots-Tag": request.match_info["directive"]})

    async def _tdm(self, request):
        return self._jpeg(request.match_info["name"], **{"tdm-reservation": "1"})


def per_host(log: Log) -> dict[str, list[float]]:
    found = defaultdict(list)
    for host, _, t in log.requests:
        found[host].append(t)
    return dict(found)
