"""Fetching a shard's rows politely: many domains in parallel, each one gently.

Rows are queued per domain. A dispatcher starts requests round-robin over the domains, never more
than `concurrency` in all, `per_domain_concurrency` on one domain, nor faster than
`per_domain_rate` to one domain. A failure that may pass (timeout, connection error, 429, 5xx) is
retried with exponential backoff and jitter, or after the server's Retry-After, and the wait holds
back the whole domain, not just the row. Throughput therefore comes from breadth, and a slow or
overloaded server is never hammered.

Per-domain limits are for a whole scan, each worker pacing its share (see `pipeline.scan`). On a
cluster every worker starts its first shard at the same moment and meets the big domains at once;
left alone they would all send their first request to each of them in the same instant, a burst
of one request per worker however low the rate. So a worker's first shard (`stagger`) starts each
domain at a random point of its first interval, which spreads those first requests evenly over
it. Later shards start at scattered times anyway, and are not delayed.

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
# Downloaded rows waiting for the hashing thread. A row waiting to be handed over still counts
# against `concurrency`, so when hashing is the slower side, downloads pause instead of piling
# up in memory: at most concurrency + _BUFFERED + 4 batches of 64 images are held at once.
_BUFFERED = 128


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
    bugs: Counter = field(default_factory=Counter)  # exceptions raised inside the client, by type


class Fetcher:
    def __init__(
        self,
        options: FetchOptions,
        version: str,
        skip: Callable[[str], str | None] | None = None,
        stagger: bool = False,
    ):
        """`skip(url)` returns an opt-out reason for rows that must not be requested at all (a URL
        on a `domain` bank), or None. `stagger`: start each domain at a random point of its first
        interval (a worker's first shard, see above)."""
        self.options = options
        self.version = version
        self.skip = skip
        self.stagger = stagger
        self.policy = AddressPolicy(options.allow_private, options.allowed_networks)
        self.stats = FetchStats()
        # When a domain whose queue ran dry may be asked again, kept while that is still ahead:
        # its next row may come later in the shard, and must wait for its turn all the same.
        self._paces: dict[str, float] = {}

    # ---- the synchronous face --------------------------------------------------------------
    def fetch(self, items: Iterator[Item]) -> Iterator[Item]:
        """Every item once: those with a URL and no bytes yet are fetched (or given a status), the
        rest pass through untouched."""
        out: queue.Queue = queue.Queue(maxsize=4)  # batches of fetched items
        stop = threading.Event()
        thread = threading.Thread(target=self._thread, args=(items, out, stop), daemon=True, name="safeset-fetch")
        thread.start()
        try:
            while True:
                for item in out.get():
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            stop.set()
            while thread.is_alive():  # a hand-over blocked on a full queue must not hang the thread
                try:
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()

    def _thread(self, items: Iterator[Item], out: queue.Queue, stop: threading.Event) -> None:
        async def main() -> None:
            fetched: asyncio.Queue = asyncio.Queue(maxsize=_BUFFERED)
            forwarder = asyncio.get_running_loop().create_task(_forward(fetched, out))
            last: BaseException | None = None
            try:
                await self._dispatch(items, fetched, stop)
            except BaseException as exc:  # surfaced in the consuming thread
                last = exc
            await fetched.put(last)  # None: the end
            await forwarder

        asyncio.run(main())

    # ---- the dispatcher --------------------------------------------------------------------
    async def _dispatch(self, items: Iterator[Item], out: asyncio.Queue, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        options = self.options
        domains: dict[str, _Domain] = {}
        wake = asyncio.Event()
        # rows waiting in domain queues; requests under way; fetched rows not yet handed over
        self._queued = self._in_flight = self._handing_over = 0
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
                if exhausted and self._queued == 0 and self._in_flight == 0 and self._handing_over == 0:
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

    async def _admit(self, item: Item, domains: dict[str, _Domain], out: asyncio.Queue) -> None:
        if item.status is not None or item.payloads or not item.url:
            await out.put(item)
            return
        item.fetched = True
        reason = self.skip(item.url) if self.skip else None
        if reason:
            item.status, item.error = Status.SKIPPED_OPTOUT, reason
            self.stats.outcomes[reason] += 1
            await out.put(item)
            return
        try:
            host = check_url(item.url, self.policy).host  # refused URLs never reach the queues
        except Blocked as exc:
            item.status, item.error = Status.FETCH_FAILED, exc.reason
            self.stats.outcomes[exc.reason] += 1
            await out.put(item)
            return
        if host not in domains:
            domains[host] = _Domain(next_start=self._first_start(host))
        domains[host].queue.append((item, 0))
        self._queued += 1

    def _first_start(self, host: str) -> float:
        """When a domain met now may have its first request (in loop time)."""
        now = asyncio.get_running_loop().time()
        if host in self._paces:
            return self._paces.pop(host)
        return now + random.uniform(0, 1.0 / self.options.per_domain_rate) if self.stagger else 0.0

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
                and self._in_flight + self._handing_over < options.concurrency
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
                if domain.next_start > now:
                    self._paces[host] = domain.next_start
        if len(self._paces) > 4 * len(domains) + 1024:  # forget the paces that have passed
            self._paces = {host: start for host, start in self._paces.items() if start > now}
        return next_wake

    async def _one(self, session, item: Item, attempt: int, domain: _Domain, out: asyncio.Queue, wake) -> None:
        options = self.options
        self.stats.requests += 1
        try:
            result: Fetched = await fetch_one(session, item.url, options, self.policy, self.skip)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the client, not the server's doing: the row says so, the shard goes on
            self.stats.bugs[type(exc).__name__] += 1
            result = Fetched("fetch_failed", "internal")
        loop = asyncio.get_running_loop()
        domain.active -= 1
        self._in_flight -= 1
        self._handing_over += 1  # until handed over: holds a concurrency slot, and the dispatcher must not end
        wait = result.retry_after
        if result.retryable and attempt < options.retries and (wait is None or wait <= options.max_retry_after):
            if wait is None:
                wait = min(options.max_backoff, options.backoff * 2**attempt) * random.uniform(0.5, 1.5)
            domain.next_start = max(domain.next_start, loop.time() + wait)  # the whole domain waits
            domain.queue.appendleft((item, attempt + 1))
            self._queued += 1
            self.stats.retries += 1
        else:
            if result.data is not None:
                item.data = result.data
                self.stats.bytes += len(result.data)
            if result.status == "ok":
                self.stats.outcomes["ok"] += 1
            else:
                item.status = Status.SKIPPED_OPTOUT if result.status == "skipped_optout" else Status.FETCH_FAILED
                item.error = result.reason
                self.stats.outcomes[result.reason] += 1
            await out.put(item)
        self._handing_over -= 1
        wake.set()


async def _forward(fetched: asyncio.Queue, out: queue.Queue) -> None:
    """Hand fetched items to the consuming thread in batches. Waiting for room happens in a helper
    thread, so the event loop keeps reading downloads in flight (and their timeouts stay true)."""
    while True:
        batch = [await fetched.get()]
        while not fetched.empty() and len(batch) < 64:
            batch.append(fetched.get_nowait())
        await asyncio.to_thread(out.put, batch)
        if batch[-1] is None or isinstance(batch[-1], BaseException):
            return


def _take(items: Iterator[Item], count: int) -> list[Item]:
    taken = []
    for item in items:
        taken.append(item)
        if len(taken) == count:
            break
    return taken
