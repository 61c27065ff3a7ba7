"""The server: configuration, the live auditor, authentication, metrics, and the worker processes.
The endpoints themselves are in `api.py`."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web

from ..banks import BankStore
from ..banks.verdicts import log_sha256
from ..errors import UsageError
from ..pipeline.check import Auditor, CheckSettings
from ..policy import Policy

log = logging.getLogger("safeset.serve")

MAX_BODY = 32 * 1024 * 1024  # as scans' --max-bytes: a larger upload is refused (413) before it is read whole


@dataclass(frozen=True)
class ServeConfig:
    home: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    policy: Policy = field(default_factory=lambda: Policy.preset("default"))
    banks: tuple[str, ...] | None = None  # None: every enabled bank, as it is now and later
    settings: CheckSettings = field(default_factory=CheckSettings)
    tokens: frozenset[str] = frozenset()  # for /v1/check, /v1/lookup, /v1/banks, /metrics
    admin_tokens: frozenset[str] = frozenset()
    max_body: int = MAX_BODY
    uploads: int = 8  # bodies a worker reads and checks at once: its memory for them is at most this x max_body
    body_seconds: float = 60.0  # a body not all sent by then is refused (408): a trickled one holds no worker
    reload_seconds: float = 2.0  # how often each worker looks for changed banks or verdicts
    rate_limit: float = 0.0  # requests a second per token (or per client address without tokens); 0: none


def read_tokens(path: str | Path) -> frozenset[str]:
    """The tokens of a file, one a line (blank lines and # comments left out); the file must be
    readable by its owner alone, as a bank list is."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the token file {path} ({exc})") from None
    if mode & 0o077:
        raise UsageError(f"{path} can be read by others (mode {mode & 0o777:o}): chmod 600 it, tokens are secrets")
    tokens = frozenset(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#"))
    if not tokens or any(len(t) < 16 for t in tokens):
        raise UsageError(f"{path} must hold tokens of 16 characters or more, one a line")
    return tokens


class LiveAuditor:
    """The auditor requests are checked with, rebuilt when the bank home changes: a bank added,
    updated, enabled or disabled, or verdicts imported. The new one is built beside the old one
    (in a thread: requests go on meanwhile) and swapped in with one assignment, so that a request
    sees one auditor from start to end."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.version = self._version()
        self.current = self._build()
        self.loaded = time.time()

    def _version(self) -> tuple:
        store = BankStore(self.config.home)
        return tuple((b.name, b.enabled, b.sha256) for b in store.list()), log_sha256(store.home)

    def _build(self) -> Auditor:
        banks = list(self.config.banks) if self.config.banks is not None else None
        return Auditor(self.config.home, banks=banks, policy=self.config.policy, settings=self.config.settings)

    async def watch(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.reload_seconds)
            try:
                version = await loop.run_in_executor(None, self._version)
                if version != self.version:
                    self.current = await loop.run_in_executor(None, self._build)
                    self.version, self.loaded = version, time.time()
                    app["metrics"].count("safeset_bank_reloads_total")
                    log.info("banks reloaded: %s", ", ".join(name for name, _, _ in version[0]) or "none")
            except Exception as exc:  # a bank half-written, a policy that no longer fits: keep serving the old
                app["metrics"].count("safeset_bank_reload_failures_total")
                log.warning("banks not reloaded (%s): still serving the previous ones", type(exc).__name__)


_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters and a latency histogram per route, in Prometheus's text format, for the whole
    server: a scrape reaches one worker, which saves its own totals and adds up every worker's
    saved ones. Each worker also saves every second, in `shared` (a private directory of the
    parent's, in memory where /dev/shm exists); a saved total only grows, so no scrape shows less
    than the one before, whichever worker answers it. A worker that replaces one that died starts
    from its saved totals. Counting happens on the event loop and on the check threads: a lock
    keeps a save from reading a counter mid-change."""

    SAVE_SECONDS = 1.0

    def __init__(self, shared: Path | None = None, index: int = 0) -> None:
        self.counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self.latency: dict[str, list[float]] = {}  # route -> bucket counts, then sum and count
        self.shared = shared
        self.path = shared / f"worker-{index}.json" if shared else None
        self._lock = threading.Lock()
        self._saving_failed = False
        if self.path and self.path.is_file():
            self._add(self.counters, self.latency, self.path)

    def count(self, name: str, n: float = 1, **labels: str) -> None:
        with self._lock:
            self.counters[(name, tuple(sorted(labels.items())))] += n

    def observe(self, route: str, seconds: float) -> None:
        with self._lock:
            cells = self.latency.setdefault(route, [0.0] * (len(_BUCKETS) + 2))
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    cells[i] += 1
            cells[-2] += seconds
            cells[-1] += 1

    def save(self) -> bool:
        """Write this worker's totals for the others; False if they could not be (logged once)."""
        if self.path is None:
            return False
        with self._lock:
            state = {"counters": [[n, labels, v] for (n, labels), v in self.counters.items()], "latency": self.latency}
            text = json.dumps(state)
        try:
            partial = self.path.with_suffix(".partial")
            partial.write_text(text)
            partial.replace(self.path)
        except OSError as exc:  # the directory removed under us (a logout's IPC clean-up?)
            if not self._saving_failed:
                log.warning("metrics not shared with the other workers (%s)", exc.strerror)
            self._saving_failed = True
            return False
        self._saving_failed = False
        return True

    @staticmethod
    def _add(counters: Counter, latency: dict[str, list[float]], path: Path) -> None:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):  # gone with a stopped server
            return
        for name, labels, value in state["counters"]:
            counters[(name, tuple(tuple(pair) for pair in labels))] += value
        for route, cells in state["latency"].items():
            mine = latency.setdefault(route, [0.0] * len(cells))
            latency[route] = [a + b for a, b in zip(mine, cells, strict=True)]

    def render(self) -> str:
        counters: Counter = Counter()
        latency: dict[str, list[float]] = {}
        saved = self.save()
        if not saved:  # our own totals as they are, beside whatever the others saved
            with self._lock:
                counters.update(self.counters)
                latency.update({route: list(cells) for route, cells in self.latency.items()})
        for path in sorted(self.shared.glob("worker-*.json")) if self.shared else ():
            if saved or path != self.path:
                self._add(counters, latency, path)

        def labelled(labels: tuple[tuple[str, str], ...]) -> str:
            return "{" + ",".join(f'{k}="{_quote(v)}"' for k, v in labels) + "}" if labels else ""

        lines = []
        for name in sorted({name for name, _ in counters}):
            lines.append(f"# TYPE {name} counter")
            for (counted, labels), value in sorted(counters.items()):
                if counted == name:
                    lines.append(f"{name}{labelled(labels)} {_value(value)}")
        lines.append("# TYPE safeset_request_seconds histogram")
        for route, cells in sorted(latency.items()):
            for bound, n in zip(_BUCKETS, cells, strict=False):
                lines.append(
                    f"safeset_request_seconds_bucket{labelled((('le', f'{bound:g}'), ('route', route)))} {_value(n)}"
                )
            lines.append(
                f"safeset_request_seconds_bucket{labelled((('le', '+Inf'), ('route', route)))} {_value(cells[-1])}"
            )
            lines.append(f"safeset_request_seconds_sum{labelled((('route', route),))} {cells[-2]:.6f}")
            lines.append(f"safeset_request_seconds_count{labelled((('route', route),))} {_value(cells[-1])}")
        return "\n".join(lines) + "\n"


def _value(number: float) -> str:
    """A sample's value whole (`:g` would round a counter past a million to six digits)."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_OPEN = ("/v1/health", "/openapi.json", "/status")
_UNLIMITED = (*_OPEN, "/metrics")
_CALLERS = 10_000  # rate buckets kept before idle ones are dropped


class RateLimit:
    """A token bucket per caller: `rate` requests a second, as many at once. Each worker process
    holds its own, at its share of the rate, so that the server's whole is `rate`."""

    def __init__(self, rate: float, workers: int):
        self.rate = rate / workers
        self.burst = max(1.0, self.rate)
        self.buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when)

    def wait(self, caller: str) -> float:
        """0 if the caller may go now (a token taken), else the seconds until it may."""
        now = time.monotonic()
        if len(self.buckets) > _CALLERS:  # forget the callers whose bucket has filled again
            full = (self.burst - 0) / self.rate
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < full}
        tokens, then = self.buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1:
            self.buckets[caller] = (tokens - 1, now)
            return 0.0
        self.buckets[caller] = (tokens, now)
        return (1 - tokens) / self.rate


def _token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _allowed(given: str | None, tokens: frozenset[str]) -> bool:
    """Whether `given` is one of `tokens`, compared in constant time (every token compared)."""
    if given is None:
        return False
    found, raw = False, given.encode("utf-8", "replace")  # a header's odd bytes match no token, and fail nothing
    for token in tokens:
        found |= hmac.compare_digest(raw, token.encode())
    return found


class BadRequest(Exception):
    """What makes a request unreadable, in words of our own (never quoting the request)."""


def json_error(status: int, message: str, request_id: str = "", headers: dict | None = None) -> web.Response:
    body = {"error": message, **({"request_id": request_id} if request_id else {})}
    return web.json_response(body, status=status, headers=headers)


def _failure(exc: BaseException) -> str:
    """An exception as a log line may carry it: its type and where it was raised, never its
    message (a parser's quotes the request's bytes)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"


@web.middleware
async def _guard(request: web.Request, handler) -> web.StreamResponse:
    """Authentication, rate limits, a request id, timing and counting; no body or header is ever
    logged, and every error answer is JSON of our own words."""
    config: ServeConfig = request.app["config"]
    metrics: Metrics = request.app["metrics"]
    request["id"] = uuid.uuid4().hex[:16]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "(none)"
    started = time.perf_counter()
    try:
        token = _token(request)
        admin = getattr(request.match_info.handler, "admin", False)
        wanted = config.admin_tokens if admin else config.tokens
        valid = _allowed(token, wanted)
        limit: RateLimit | None = request.app["limit"]
        # a caller is its token when the token is good, else its address: a made-up token is no new caller
        if limit is not None and request.path not in _UNLIMITED:
            wait = limit.wait(token if valid else f"address {request.remote}")
            if wait:
                metrics.count("safeset_rate_limited_total")
                raise web.HTTPTooManyRequests(headers={"Retry-After": str(max(1, math.ceil(wait)))})
        if (admin or (request.path not in _OPEN and config.tokens)) and not valid:
            raise web.HTTPUnauthorized(
                reason="an admin token is needed" if admin else "a bearer token is needed",
                headers={"WWW-Authenticate": "Bearer"},
            )
        response = await handler(request)
    except web.HTTPException as exc:
        big = f"larger than the server's maximum body ({config.max_body:,} bytes)"
        kept = {k: v for k, v in exc.headers.items() if k in ("Retry-After", "WWW-Authenticate")}
        response = json_error(exc.status, big if exc.status == 413 else exc.reason, request["id"], kept)
    except BadRequest as exc:
        response = json_error(400, str(exc), request["id"])
    except (ConnectionResetError, asyncio.CancelledError):  # the client went away mid-request
        metrics.count("safeset_requests_abandoned_total", route=route)
        raise
    except Exception as exc:  # a bug: said without the request's content
        log.error("request %s failed: %s", request["id"], _failure(exc))
        response = json_error(500, "internal error", request["id"])
    response.headers["X-Request-Id"] = request["id"]
    metrics.count("safeset_requests_total", route=route, status=str(response.status))
    metrics.observe(route, time.perf_counter() - started)
    return response


def _quiet_handle_error(self, request, status: int = 500, exc: BaseException | None = None, message=None):
    """aiohttp's answer to a request its parser refused quotes the parser's message (the request's
    own bytes) and logs it with a traceback: in a server of uploads, both are leaks. This answers
    with the status alone, and logs the error's type."""
    log.warning("a request could not be read: %s, %s", status, _failure(exc) if exc else "-")
    if request.writer.output_size > 0:
        raise ConnectionError("an answer was being sent already")
    response = json_error(status, HTTPStatus(status).phrase)
    response.force_close()
    return response


def make_app(
    config: ServeConfig, live: LiveAuditor | None = None, shared: Path | None = None, index: int = 0
) -> web.Application:
    """The application one worker serves (`live`: an auditor already built, else one is; `shared`,
    `index`: where the workers' metrics meet, and this worker's number among them)."""
    from . import admin, api, hma

    app = web.Application(middlewares=[_guard], client_max_size=config.max_body)
    app["config"] = config
    app["limit"] = RateLimit(config.rate_limit, config.workers) if config.rate_limit > 0 else None
    app["metrics"] = Metrics(shared, index)
    app["live"] = live or LiveAuditor(config)
    # one image hashed at a time a worker, and beside it one batch of hashes matched
    app["threads"] = {
        kind: ThreadPoolExecutor(1, thread_name_prefix=f"safeset-{kind}") for kind in ("images", "hashes")
    }
    app["uploads"] = asyncio.Semaphore(config.uploads)
    for module in (api, hma, admin):
        app.add_routes(module.routes)

    async def saving(metrics: Metrics):
        while True:
            await asyncio.sleep(metrics.SAVE_SECONDS)
            metrics.save()

    async def watching(app: web.Application):
        tasks = [asyncio.create_task(app["live"].watch(app)), asyncio.create_task(saving(app["metrics"]))]
        yield
        for task in tasks:
            task.cancel()
        for pool in app["threads"].values():
            pool.shutdown(wait=True)
        app["metrics"].save()

    app.cleanup_ctx.append(watching)
    return app


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(host: str, port: int, listen: bool, share: bool = True) -> socket.socket:
    """A socket on (host, port) that others may bind too (SO_REUSEPORT): the parent's holds the
    port without listening; each worker listens on its own, and the kernel spreads connections
    over them, where one shared socket gives most of them to whichever worker wakes first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    if listen:
        sock.listen(1024)
    return sock


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies (killed -9, it cannot stop us itself)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(config: ServeConfig, port: int, shared: Path, index: int, listening=None) -> None:
    """One worker: its own auditor, event loop and listening socket on the server's port."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers, with SIGTERM
    _die_with_parent()
    if os.getppid() == 1:  # the parent died before we asked
        return
    from aiohttp import web_protocol

    web_protocol.RequestHandler.handle_error = _quiet_handle_error
    for name in ("aiohttp.server", "aiohttp.access", "aiohttp.web"):  # they quote requests
        logging.getLogger(name).setLevel(logging.CRITICAL)
    app = make_app(config, shared=shared, index=index)
    sock = _bind(config.host, port, listen=True)  # after the auditor is built: no connection waits on that
    if listening is not None:
        listening.set()
    web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=30, handle_signals=True)


def serve(config: ServeConfig, ready=None) -> None:
    """Serve until SIGTERM or Ctrl-C: the auditor built (a bad bank or policy stops the start, not
    the first request), the port held, then `config.workers` processes listen on it.
    `ready(host, port)` is called once every worker listens."""
    if not config.tokens and not is_loopback(config.host):
        raise UsageError(
            f"--host {config.host} is not loopback: give --token-file, so that only holders of a token can check"
        )
    checking = LiveAuditor(config)  # fail here, before listening, if the banks or the policy cannot load
    if not checking.current.banks:
        log.warning(
            "no bank in %s: every upload will be kept; add lists with `safeset bank add`", BankStore(config.home).home
        )
    if config.port:  # a port someone else listens on (another safeset too: it would share it) is refused
        _bind(config.host, config.port, listen=False, share=False).close()
    sock = _bind(config.host, config.port, listen=False)  # the port, held for the workers (port 0: any free one)
    shared = _metrics_dir()
    try:
        _supervise(config, sock, shared, ready)
    finally:
        sock.close()
        shutil.rmtree(shared, ignore_errors=True)


def _metrics_dir() -> Path:
    """A private directory for the workers' metrics, named for this server's process; those of
    servers that died without removing theirs (killed -9) are removed first."""
    parent = Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())
    for old in parent.glob("safeset-serve-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and old.stat().st_uid == os.getuid():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"safeset-serve-{os.getpid()}-", dir=parent))


def _supervise(config: ServeConfig, sock: socket.socket, shared: Path, ready) -> None:
    """Start the workers on the held socket's port, replace any that dies, stop them on a signal."""
    host, port = sock.getsockname()[:2]
    context = multiprocessing.get_context("fork")
    listening = [context.Event() for _ in range(config.workers)]
    workers = [
        context.Process(target=_worker, args=(config, port, shared, i, e), daemon=True) for i, e in enumerate(listening)
    ]
    for process in workers:
        process.start()
    for event, process in zip(listening, workers, strict=True):  # answered only once every worker listens
        while not event.wait(0.2):
            if not process.is_alive():
                raise UsageError(f"a worker could not start (exit code {process.exitcode}): see the log above")
    if ready is not None:
        ready(host, port)

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True
        sock.close()  # the workers close theirs as they stop: new connections are then refused
        for process in workers:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    born = [time.monotonic()] * len(workers)
    due: list[float | None] = [None] * len(workers)  # when a dead worker's replacement starts
    pause = [0.0] * len(workers)
    try:
        while not stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for i, process in enumerate(workers):
                if process.is_alive() or stopping:
                    continue
                if due[i] is None:  # killed (out of memory?): replaced; one that dies at once, later each time
                    pause[i] = min(30.0, max(1.0, 2 * pause[i])) if now - born[i] < 10 else 0.0
                    due[i] = now + pause[i]
                    log.error(
                        "worker %s ended (exit code %s): another in %.0f s", process.pid, process.exitcode, pause[i]
                    )
                if now >= due[i]:
                    workers[i] = context.Process(target=_worker, args=(config, port, shared, i), daemon=True)
                    workers[i].start()
                    born[i], due[i] = now, None
    finally:
        for process in workers:
            process.join(timeout=40)
            if process.is_alive():
                process.kill()


def _listen_address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def describe(config: ServeConfig, host: str, port: int) -> dict[str, Any]:
    return {"url": _listen_address(host, port), "workers": config.workers, "auth": bool(config.tokens)}
