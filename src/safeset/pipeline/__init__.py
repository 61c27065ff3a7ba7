"""Pipeline: the shard worker (hashing, matching, policy, outputs for one shard) and the scan that
plans shards, hands them to an engine, and merges their outputs into manifests and a report."""

from .check import Checker, CheckSettings, hash_item
from .scan import ScanConfig, run_scan
from .worker import RunSpec, ShardTask, run_shard

__all__ = ["CheckSettings", "Checker", "RunSpec", "ScanConfig", "ShardTask", "hash_item", "run_scan", "run_shard"]
