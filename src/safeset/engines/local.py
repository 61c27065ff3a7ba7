"""The local engine: shard workers in a process pool on this machine.

Workers are started with `spawn` (no inherited threads or locks) and, on Linux, die with the
scheduling process (PR_SET_PDEATHSIG), so a `kill -9` of a scan leaves no orphan still writing into
OUT while the rerun starts. Progress counts flow back over one queue, drained by a thread.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from ..pipeline.worker import ShardTask, run_shard
from .base import Engine, Progress, WorkerDied, worker_env

_progress_queue = None


def _init_worker(queue) -> None:
    global _progress_queue
    _progress_queue = queue
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # Ctrl-C goes to the whole process group; the parent decides what to do about it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(task: ShardTask) -> dict:
    return run_shard(task, progress=_progress_queue.put)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LocalEngine(Engine):
    name = "local"

    @property
    def parallelism(self) -> int:
        return self.workers or default_workers()

    @contextmanager
    def started(self, progress: Progress) -> Iterator[None]:
        self._context = multiprocessing.get_context("spawn")
        os.environ.update(worker_env())  # spawned workers start with this process's environment
        self._queue = self._context.Queue()
        drainer = threading.Thread(target=_drain, args=(self._queue, progress), daemon=True)
        drainer.start()
        try:
            yield
        finally:
            self._queue.put(None)
            drainer.join()
            self._queue.close()

    def run_round(self, tasks: Sequence[ShardTask]) -> Iterator[tuple[ShardTask, dict | BaseException]]:
        """On a fresh pool each round: a worker that died breaks the pool it ran in."""
        workers = max(1, min(self.parallelism, len(tasks)))
        with ProcessPoolExecutor(
            workers, mp_context=self._context, initializer=_init_worker, initargs=(self._queue,)
        ) as pool:
            futures = {pool.submit(_run, task): task for task in tasks}
            for future in as_completed(futures):
                try:
                    yield futures[future], future.result()
                except BrokenProcessPool:
                    yield futures[future], WorkerDied()
                except Exception as exc:
                    yield futures[future], exc


def _drain(queue, progress: Progress) -> None:
    while (count := queue.get()) is not None:
        progress.counts(count)
