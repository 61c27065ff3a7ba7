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
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from ..errors import BadInputError
from ..pipeline.worker import ShardTask, run_shard
from .base import Engine, Progress, ShardOutcome, worker_env

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

    def run(self, tasks: Sequence[ShardTask], progress: Progress) -> list[ShardOutcome]:
        if not tasks:
            return []
        context = multiprocessing.get_context("spawn")
        os.environ.update(worker_env())  # spawned workers start with this process's environment
        queue = context.Queue()
        drainer = threading.Thread(target=_drain, args=(queue, progress), daemon=True)
        drainer.start()
        outcomes = {task.part: ShardOutcome(task) for task in tasks}
        pending = list(tasks)
        workers = max(1, min(self.parallelism, len(tasks)))
        try:
            while pending:
                pending = self._round(pending, outcomes, workers, context, queue, progress)
        finally:
            queue.put(None)
            drainer.join()
            queue.close()
        return [outcomes[task.part] for task in tasks]

    def _round(self, pending, outcomes, workers, context, queue, progress) -> list[ShardTask]:
        """Run `pending` on a fresh pool; return the tasks to retry on the next one."""
        retry: list[ShardTask] = []
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(queue,)) as pool:
            futures = {pool.submit(_run, task): task for task in pending}
            for future in as_completed(futures):
                outcome = outcomes[futures[future].part]
                outcome.attempts += 1
                try:
                    outcome.summary, outcome.error = future.result(), None
                except BadInputError as exc:
                    outcome.error, outcome.bad_input = str(exc), True
                except BrokenProcessPool:
                    outcome.error = "the worker process died"
                except Exception as exc:  # a bug or a transient fault in one shard: retry it
                    outcome.error = f"{type(exc).__name__}: {exc}"
                if outcome.error and not outcome.bad_input and outcome.attempts <= self.retries:
                    retry.append(outcome.task)
                else:
                    progress.shard_done(outcome)
        return retry


def _drain(queue, progress: Progress) -> None:
    while (count := queue.get()) is not None:
        progress.counts(count)
