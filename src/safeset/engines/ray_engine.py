"""The Ray engine: the same shard workers as the local engine, as Ray tasks on a cluster.

Why tasks and not Ray Data: safeset's unit of work is already the shard (one input file, or a row
range of a large table), and a shard's worker writes its own outputs and its done-marker, which is
what makes a scan resumable and its output independent of where and in what order shards ran. Ray
Data would re-slice rows into its own blocks and own the writing; Ray tasks keep our shard as the
unit and give the rest: scheduling over the cluster's cores without stage barriers (a straggling
shard holds up nobody), worker processes that are reused, and failure reporting. One task per shard,
one CPU each.

Banks are loaded once per worker process: Ray reuses a worker process for many tasks, and the shard
worker keeps its loaded banks for the process's lifetime (`pipeline.task.auditor_for`). Their arrays are
memory-mapped from the bank store, so the processes of one machine share one copy in the page cache.
The bank store (`--home`) must be readable at the same path on every node, like the inputs.

Retries are ours, not Ray's (tasks run with `max_retries=0`), so that both engines follow one rule
(see `base.Engine.run`): a worker that dies (`kill -9`, out of memory, a lost node) or raises is
retried, a shard with bad input is not.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence, Set
from contextlib import contextmanager

from .._optional import import_optional
from ..pipeline.task import ShardTask
from ..pipeline.worker import run_shard
from .base import Engine, Progress, WorkerDied, harden_process, worker_env


def _ray():
    return import_optional("ray", extra="ray")


class _ProgressSink:
    """A Ray actor the shard tasks send their progress counts to; the driver drains it."""

    def __init__(self):
        self.pending: list[dict] = []

    def add(self, counts: dict) -> None:
        self.pending.append(counts)

    def take(self) -> list[dict]:
        taken, self.pending = self.pending, []
        return taken


def _run_remote(task: ShardTask, sink) -> dict:
    harden_process()  # Ray's worker processes are its own: each task makes sure of it
    return run_shard(task, progress=lambda counts: sink.add.remote(counts))


class RayEngine(Engine):
    name = "ray"
    clustered = True
    _started_ray = False  # whether this engine connected Ray (and so disconnects it)

    def _connect(self):
        ray = _ray()
        if not ray.is_initialized():
            options: dict = {
                "address": self.address,
                "runtime_env": {"env_vars": worker_env()},
                "log_to_driver": False,  # workers' logs stay in Ray's session logs, off our terminal
                "configure_logging": False,
            }
            if self.address is None and not os.environ.get("RAY_ADDRESS"):  # a new local cluster
                options.update(num_cpus=self.workers, include_dashboard=False)
            ray.init(**options)
            self._started_ray = True
        return ray

    @property
    def parallelism(self) -> int:
        if self.workers:
            return self.workers
        return max(1, int(self._connect().cluster_resources().get("CPU", 1)))

    @contextmanager
    def started(self, progress: Progress) -> Iterator[None]:
        ray = self._connect()
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_run_remote)
        self._sink = ray.remote(num_cpus=0)(_ProgressSink).remote()
        stop = threading.Event()
        drainer = threading.Thread(target=self._drain, args=(progress, stop), daemon=True)
        drainer.start()
        try:
            yield
        finally:
            stop.set()
            drainer.join()
            ray.kill(self._sink)
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False

    def _drain(self, progress: Progress, stop: threading.Event) -> None:
        ray = _ray()
        while True:
            finished = stop.wait(0.25)
            for counts in ray.get(self._sink.take.remote()):
                progress.counts(counts)
            if finished:
                return

    def run_round(
        self, tasks: Sequence[ShardTask], alone: Set[int] = frozenset()
    ) -> Iterator[tuple[ShardTask, dict | BaseException]]:
        """A Ray worker that dies takes only its own task with it: no shard needs running alone."""
        ray = _ray()
        limit = self.parallelism  # no more tasks queued than can run: the rest wait here, in order
        waiting = list(reversed(tasks))
        running: dict = {}
        while waiting or running:
            while waiting and len(running) < limit:
                task = waiting.pop()
                running[self._remote.remote(task, self._sink)] = task
            ready, _ = ray.wait(list(running), num_returns=1)
            task = running.pop(ready[0])
            yield task, _outcome(ray, ready[0])


def _outcome(ray, ref) -> dict | BaseException:
    """The shard's summary, or the exception that ended it (the worker's own, when it raised)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        return cause if isinstance(cause, BaseException) else RuntimeError(str(exc))
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError):
        return WorkerDied()
    except ray.exceptions.RayError as exc:  # lost objects, a cancelled task, ...
        return exc
