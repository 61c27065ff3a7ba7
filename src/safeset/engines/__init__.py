"""Engines run shard workers; they are registered by name (`--engine NAME`)."""

from __future__ import annotations

from ..errors import UsageError
from .base import Engine, Progress, ShardOutcome
from .local import LocalEngine, default_workers

ENGINES: dict[str, type[Engine]] = {}
for _cls in (LocalEngine,):
    if _cls.name in ENGINES:
        raise RuntimeError(f"engine {_cls.name!r} is registered twice")
    ENGINES[_cls.name] = _cls


def engine_for(name: str, workers: int | None = None, retries: int = 2) -> Engine:
    try:
        cls = ENGINES[name]
    except KeyError:
        raise UsageError(f"no engine {name!r}; engines: {', '.join(sorted(ENGINES))}") from None
    return cls(workers=workers, retries=retries)


__all__ = ["ENGINES", "Engine", "LocalEngine", "Progress", "ShardOutcome", "default_workers", "engine_for"]
