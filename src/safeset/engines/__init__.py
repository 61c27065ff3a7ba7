"""Engines run shard workers; they are registered by name (`--engine NAME`)."""

from __future__ import annotations

from ..errors import UsageError
from .base import Engine, Progress, ShardOutcome
from .local import LocalEngine, default_workers
from .ray_engine import RayEngine

ENGINES: dict[str, type[Engine]] = {}
for _cls in (LocalEngine, RayEngine):
    if _cls.name in ENGINES:
        raise RuntimeError(f"engine {_cls.name!r} is registered twice")
    ENGINES[_cls.name] = _cls


def engine_for(name: str, workers: int | None = None, retries: int = 2, address: str | None = None) -> Engine:
    """The engine called `name`; `address` is the cluster to join, for engines that have one."""
    try:
        cls = ENGINES[name]
    except KeyError:
        raise UsageError(f"no engine {name!r}; engines: {', '.join(sorted(ENGINES))}") from None
    if address is not None and not cls.clustered:
        raise UsageError(f"--ray-address is for --engine ray, not {name!r}")
    return cls(workers=workers, retries=retries, address=address)


__all__ = ["ENGINES", "Engine", "LocalEngine", "Progress", "RayEngine", "ShardOutcome", "default_workers", "engine_for"]
