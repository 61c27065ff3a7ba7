"""Pipeline: the shard worker (hashing, matching, policy, outputs for one shard) and the scan that
plans shards, hands them to an engine, and merges their outputs into manifests and a report."""

from .check import Auditor, CheckSettings, hash_item
from .task import RunSpec, ShardTask
from .worker import run_shard

__all__ = ["Auditor", "CheckSettings", "RunSpec", "ScanConfig", "ShardTask", "hash_item", "run_scan", "run_shard"]


def __getattr__(name: str):
    # The scan (progress bars, report, engines) is imported on first use, so that worker processes,
    # which only need `run_shard`, start faster.
    if name in ("ScanConfig", "run_scan"):
        from . import scan

        return getattr(scan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
