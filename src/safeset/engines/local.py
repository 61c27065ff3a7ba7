"""The local engine: shard workers in a process pool on this machine.

Workers are started with `spawn` (no inherited threads or locks) and, on Linux, die with the
scheduling process (PR_SET_PDEATHSIG; a worker whose parent died before it could ask for that
exits at once), so a `kill -9` of a scan leaves no orphan still writing into OUT while the rerun
starts. They dump no core and are not dumpable (`harden_process`). Progress counts flow back over
a queue, drained by a thread; which worker process runs which shard is written into shared memory
as it starts, where a worker killed the next instant cannot fail to leave it.

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
from importlib.machinery import ModuleSpec
from queue import Empty

from ..pipeline.task import ShardTask
from ..pipeline.worker import run_shard
from .base import Engine, NotRun, Progress, WorkerDied, arrow_without_pandas, harden_process, worker_env

_progress_queue = None
_started = None  # shared memory: slot i holds the pid of the worker that started the pool's task i


def _init_worker(queue, started, parent: int) -> None:
    global _progress_queue, _started
    _progress_queue, _started = queue, started
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the scan died while this worker was starting: no orphans
            os._exit(1)
    harden_process()
    arrow_without_pandas()
    # Ctrl-C goes to the whole process group; the parent decides what to do about it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(task: ShardTask, slot: int) -> dict:
    _started[slot] = os.getpid()
    return run_shard(task, progress=_progress_queue.put)


@contextmanager
def _main_not_reimported() -> Iterator[None]:
    """While workers start: a spawned worker re-runs the script that started the scan (its
    `__main__`) before it runs anything, so `safeset.scan(...)` in a script without an
    `if __name__ == "__main__":` guard would start scans in every worker. Workers need nothing
    of `__main__`; for a script it is presented as a module named `__main__`, which
    multiprocessing's spawn does not import again."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or not hasattr(main, "__file__"):
        yield
        return
    main.__spec__ = ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = None


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
        self._progress = progress
        yield

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
        """One pool, and one queue for its workers' messages: a worker killed while writing to a
        queue can leave it locked or torn for good, so a queue never outlives its pool."""
        queue = self._context.Queue()
        started = self._context.RawArray("q", len(tasks))
        stop = threading.Event()
        drainer = threading.Thread(target=_drain, args=(queue, self._progress, stop), daemon=True)
        drainer.start()
        pool = ProcessPoolExecutor(
            workers, mp_context=self._context, initializer=_init_worker, initargs=(queue, started, os.getpid())
        )
        try:
            yield from self._results(pool, tasks, started)
        except BaseException:  # Ctrl-C, or the scan failing: stop now, not when running shards end
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()
            raise
        finally:
            stop.set()
            drainer.join()
            queue.close()
            queue.cancel_join_thread()  # its feeder may wait on a lock a dead worker held
        pool.shutdown(wait=True)

    def _results(
        self, pool: ProcessPoolExecutor, tasks: Sequence[ShardTask], started
    ) -> Iterator[tuple[ShardTask, dict | BaseException]]:
        with _main_not_reimported():  # the pool starts its workers as tasks are submitted
            futures: dict[Future, int] = {pool.submit(_run, task, slot): slot for slot, task in enumerate(tasks)}
        left = set(futures)
        broken: list[int] = []
        while left:
            done, left = wait(left, return_when=FIRST_COMPLETED)
            for future in done:
                slot = futures[future]
                try:
                    yield tasks[slot], future.result()
                except BrokenProcessPool:
                    broken.append(slot)
                except Exception as exc:
                    yield tasks[slot], exc
        if broken:
            yield from self._after_death(pool, [(tasks[slot], started[slot]) for slot in sorted(broken)])

    def _after_death(
        self, pool: ProcessPoolExecutor, broken: list[tuple[ShardTask, int]]
    ) -> Iterator[tuple[ShardTask, BaseException]]:
        """Which of the pool's shards (each with the pid that started it, 0 if none did) killed
        its worker: the one whose process ended other than by the pool's own SIGTERM. The rest
        were cut short or never started: run again, uncharged. When no death can be pinned on
        one shard, every shard that was running is a suspect."""
        processes = dict(getattr(pool, "_processes", {}) or {})
        codes = {pid: _exit_code(process) for pid, process in processes.items()}
        died = {pid: code for pid, code in codes.items() if code not in (0, -signal.SIGTERM, None)}
        culprits = {task.part for task, pid in broken if pid in died}
        if not culprits:
            culprits = {task.part for task, pid in broken if pid}
        for task, pid in broken:
            if task.part in culprits:
                code = died.get(pid)
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}" if code else ""
                yield task, WorkerDied(how)
            else:
                yield task, NotRun()


def _exit_code(process, seconds: float = 5.0) -> int | None:
    """How a pool's process ended. The pool's own thread reaps its processes too, and a reap raced
    by another leaves `exitcode` unset for a moment: read it until it is there."""
    deadline = time.monotonic() + seconds
    process.join(seconds)
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process.exitcode


def _drain(queue, progress: Progress, stop: threading.Event) -> None:
    """Hand the workers' messages on until `stop`; a message a dying worker left torn ends it."""
    while not stop.is_set():
        try:
            message = queue.get(timeout=0.1)
        except Empty:
            continue
        except Exception:  # a torn message: the pool is broken, and its queue done with
            return
        progress.counts(message)
