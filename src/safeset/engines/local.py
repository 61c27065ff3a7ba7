"""The local engine: shard workers in a process pool on this machine.

Workers are started with `spawn` (no inherited threads or locks) and, on Linux, die with the
scheduling process (PR_SET_PDEATHSIG; a worker whose parent died before it could ask for that
exits at once), so a `kill -9` of a scan leaves no orphan still writing into OUT while the rerun
starts. They dump no core and are not dumpable (`harden_process`). Progress counts, and which
shard each worker process starts, flow back over one queue, drained by a thread.

A worker that dies (out of memory, a segfault in a decoder) breaks the pool it ran in, and the
pool fails every shard it holds. The shard whose worker died is told apart by the processes' exit
codes (the pool ends the others with SIGTERM): only it is charged an attempt, and it runs alone
from then on; the shards that were cut short, or had not started, run again uncharged.

Ctrl-C stops at once: shards not started are cancelled, running ones stopped, and the shards that
finished keep their done-markers for the rerun.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence, Set
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from ..pipeline.worker import ShardTask, run_shard
from .base import Engine, NotRun, Progress, WorkerDied, harden_process, worker_env

_progress_queue = None


def _init_worker(queue, parent: int) -> None:
    global _progress_queue
    _progress_queue = queue
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the scan died while this worker was starting: no orphans
            os._exit(1)
    harden_process()
    # Ctrl-C goes to the whole process group; the parent decides what to do about it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(task: ShardTask) -> dict:
    _progress_queue.put({"started": task.part, "pid": os.getpid()})
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
        self._running: dict[int, int] = {}  # shard part -> pid of the worker that started it
        drainer = threading.Thread(target=_drain, args=(self._queue, progress, self._running), daemon=True)
        drainer.start()
        try:
            yield
        finally:
            self._queue.put(None)
            drainer.join()
            self._queue.close()

    def run_round(
        self, tasks: Sequence[ShardTask], alone: Set[int] = frozenset()
    ) -> Iterator[tuple[ShardTask, dict | BaseException]]:
        """The tasks on a fresh pool (a worker that died breaks the pool it ran in); the ones in
        `alone` each on a pool of their own, after the others."""
        together = [task for task in tasks if task.part not in alone]
        if together:
            yield from self._pool_round(together, max(1, min(self.parallelism, len(together))))
        for task in tasks:
            if task.part in alone:
                yield from self._pool_round([task], 1)

    def _pool_round(self, tasks: Sequence[ShardTask], workers: int) -> Iterator[tuple[ShardTask, dict | BaseException]]:
        for task in tasks:
            self._running.pop(task.part, None)
        pool = ProcessPoolExecutor(
            workers, mp_context=self._context, initializer=_init_worker, initargs=(self._queue, os.getpid())
        )
        try:
            futures: dict[Future, ShardTask] = {pool.submit(_run, task): task for task in tasks}
            left = set(futures)
            broken: list[ShardTask] = []
            while left:
                done, left = wait(left, return_when=FIRST_COMPLETED)
                for future in done:
                    task = futures[future]
                    try:
                        yield task, future.result()
                    except BrokenProcessPool:
                        broken.append(task)
                    except Exception as exc:
                        yield task, exc
            if broken:
                yield from self._after_death(pool, broken)
        except BaseException:  # Ctrl-C, or the scan failing: stop now, not when running shards end
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()
            raise
        pool.shutdown(wait=True)

    def _after_death(
        self, pool: ProcessPoolExecutor, broken: list[ShardTask]
    ) -> Iterator[tuple[ShardTask, BaseException]]:
        """Which of the pool's shards killed its worker: the one whose process ended other than
        by the pool's own SIGTERM. The rest were cut short or never started: run again, uncharged.
        When no death can be pinned on one shard, every shard that was running is a suspect."""
        time.sleep(0.05)  # the drainer may still hold the last "started" message
        processes = dict(getattr(pool, "_processes", {}) or {})
        for process in processes.values():
            process.join(5)
        died = {pid: p.exitcode for pid, p in processes.items() if p.exitcode not in (0, -signal.SIGTERM, None)}
        running = {task.part: self._running.get(task.part) for task in broken}
        culprits = {part for part, pid in running.items() if pid in died}
        if not culprits:
            culprits = {part for part, pid in running.items() if pid is not None}
        for task in broken:
            self._running.pop(task.part, None)
            if task.part in culprits:
                code = died.get(running[task.part])
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}" if code else ""
                yield task, WorkerDied(how)
            else:
                yield task, NotRun()


def _drain(queue, progress: Progress, running: dict[int, int]) -> None:
    while (message := queue.get()) is not None:
        if "started" in message:
            running[message["started"]] = message["pid"]
        else:
            progress.counts(message)
