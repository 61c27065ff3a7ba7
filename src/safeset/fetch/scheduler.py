"""Fetching a shard's rows politely: many domains in parallel, each one gently.

Rows are queued per domain. A dispatcher starts requests round-robin over the domains, never more
than `concurrency` in all, `per_domain_concurrency` on one domain, nor faster than
`per_domain_rate` to one domain. A failure that may pass (timeout, connection error, 429, 5xx) is
retried with exponential backoff and jitter, or after the server's Retry-After, and the wait holds
back the whole domain, not just the row. Throughput therefore comes from breadth, and a slow or
overloaded server is never hammered.

The fetching runs on an asyncio loop in a background thread; the shard worker consumes the fetched
items as an ordinary iterator (in completion order) and hashes them while others download. The
bytes of an item live in memory only, from download to hashing.
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..model import Item, Status
from .client import Fetched, FetchOptions, fetch_one, make_session
from .guard import AddressPolicy, Blocked, check_url

# How many rows may wait in the domain queues at once: enough to find many domains in a shard,
# small enough that a shard of millions of rows is never read into memory whole.
WINDOW = 20_000
_TAKE = 256


@dataclass
class _Domain:
    queue: deque = field(default_factory=deque)  # (item, attempt)
    active: int = 0
    next_start: float = 0.0


@dataclass
class FetchStats:
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    outcomes: Counter = field(default_factory=Counter)  # "ok", reasons of failures and opt-outs


class Fetcher:
    def __init__(
        self,
        options: FetchOptions,
        version: str,
        skip: Callable[[str], str | None] | None = None,
    ):
        """`skip(url)` returns an opt-out reason for rows that must not be requested at all (a URL
        on a `domain` bank), or None."""
        self.options = options
        self.version = version
        self.skip = skip
        self.policy = AddressPolicy(options.allow_private, options.allowed_networks)
        self.stats = FetchStats()

    # ---- the synchronous face --------------------------------------------------------------
    def fetch(self, items: Iterator[Item]) -> Iterator[Item]:
        """Every item once: those with a URL and no bytes yet are fetched (or given a status), the
        rest pass through untouched."""
        out: queue.Queue = queue.Queue(maxsize=512)
        stop = threading.Event()
        thread = threading.Thread(target=self._thread, args=(items, out, stop), daemon=True, name="safeset-fetch")
        thread.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    def _thread(self, items: Iterator[Item], out: queue.Queue, stop: threading.Event) -> None:
        async def main() -> None:
            last: BaseException | None = None
            try:
                await self._dispatch(items, _Output(out, stop), stop)
            except BaseException as exc:  # surfaced in the consuming thread
                last = exc
            if not stop.is_set():  # a consumer that stopped early waits for nothing more
                out.put(last)

        asyncio.run(main())

    # ---- the dispatcher --------------------------------------------------------------------
    async def _dispatch(self, items: Iterator[Item], out: _Output, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        options = self.options
        domains: dict[str, _Domain] = {}
        wake = asyncio.Event()
        self._queued = self._in_flight = 0
        exhausted = False
        tasks: set[asyncio.Task] = set()
        async with make_session(options, self.policy, self.version) as session:
            while not stop.is_set():
                if not exhausted and self._queued + self._in_flight < WINDOW:
                    batch = await asyncio.to_thread(_take, items, _TAKE)
                    exhausted = not batch
                    for item in batch:
                        await self._admit(item, domains, out)
                next_wake = self._launch(loop, session, domains, tasks, out, wake)
                if exhausted and self._queued == 0 and self._in_flight == 0:
                    break
                if not exhausted and self._queued + self._in_flight < WINDOW:
                    continue
                wake.clear()
                timeout = None if next_wake is None else max(0.0, next_wake - loop.time())
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                except TimeoutError:
                    pass
            for task in tasks:
                task.cancel()

    async def _admit(self, item: Item, domains: dict[str, _Domain], out: _Output) -> None:
        if item.status is not None or item.data is not None or not item.url:
            await out.put(item)
            return
        reason = self.skip(item.url) if self.skip else None
        if reason:
            item.status, item.error = Status.SKIPPED_OPTOUT, reason
            self.stats.outcomes[reason] += 1
            await out.put(item)
            return
        try:
            _, host = check_url(item.url, self.policy)  # refused URLs never reach the queues
        except Blocked as exc:
            item.status, item.error = Status.FETCH_FAILED, exc.reason
            self.stats.outcomes[exc.reason] += 1
            await out.put(item)
            return
        domains.setdefault(host.lower(), _Domain()).queue.append((item, 0))
        self._queued += 1

    def _launch(self, loop, session, domains, tasks, out, wake) -> float | None:
        """Start every request the limits allow now; return when the next one may start."""
        now = loop.time()
        options = self.options
        next_wake = None
        hosts = list(domains)
        random.shuffle(hosts)  # no domain always goes first
        for host in hosts:
            domain = domains[host]
            while (
                domain.queue
                and domain.active < options.per_domain_concurrency
                and self._in_flight < options.concurrency
                and domain.next_start <= now
            ):
                item, attempt = domain.queue.popleft()
                self._queued -= 1
                self._in_flight += 1
                domain.active += 1
                domain.next_start = max(domain.next_start, now) + 1.0 / options.per_domain_rate
                task = loop.create_task(self._one(session, item, attempt, domain, out, wake))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if domain.queue and domain.next_start > now:
                next_wake = domain.next_start if next_wake is None else min(next_wake, domain.next_start)
            elif not domain.queue and domain.active == 0:
                del domains[host]
        return next_wake

    async def _one(self, session, item: Item, attempt: int, domain: _Domain, out: _Output, wake) -> None:
        options = self.options
        self.stats.requests += 1
        result: Fetched = await fetch_one(session, item.url, options, self.policy)
        loop = asyncio.get_running_loop()
        domain.active -= 1
        self._in_flight -= 1
        wait = result.retry_after
        if result.retryable and attempt < options.retries and (wait is None or wait <= options.max_retry_after):
            if wait is None:
                wait = min(options.max_backoff, options.backoff * 2**attempt) * random.uniform(0.5, 1.5)
            domain.next_start = max(domain.next_start, loop.time() + wait)  # the whole domain waits
            domain.queue.appendleft((item, attempt + 1))
            self._queued += 1
            self.stats.retries += 1
        else:
            if result.status == "ok":
                item.data = result.data
                self.stats.bytes += len(result.data)
                self.stats.outcomes["ok"] += 1
            else:
                item.status = Status.SKIPPED_OPTOUT if result.status == "skipped_optout" else Status.FETCH_FAILED
                item.error = result.reason
                self.stats.outcomes[result.reason] += 1
            await out.put(item)
        wake.set()


class _Output:
    """The bounded hand-over to the consuming thread. When it is full the dispatcher waits without
    blocking the event loop, so downloads in flight keep being read (and their timeouts stay true)."""

    def __init__(self, out: queue.Queue, stop: threading.Event):
        self._out = out
        self._stop = stop

    async def put(self, item: Item) -> None:
        while not self._stop.is_set():
            try:
                self._out.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.005)


def _take(items: Iterator[Item], count: int) -> list[Item]:
    taken = []
    for item in items:
        taken.append(item)
        if len(taken) == count:
            break
    return taken
