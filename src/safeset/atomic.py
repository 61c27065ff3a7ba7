"""Write-then-rename, the one way safeset writes a file.

A file is written as NAME.partial and renamed into place, so a killed process leaves either the old
file, the new one, or a `.partial` leftover (which the next scan deletes), never a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def commit(partial: Path, final: Path) -> None:
    os.replace(partial, final)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically; `mode` is applied whatever the umask (0600 for hash lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)
    commit(tmp, path)
