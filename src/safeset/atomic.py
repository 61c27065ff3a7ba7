"""Write-then-rename, the one way safeset writes a file.

A file is written as NAME.partial and renamed into place, so a killed process leaves either the old
file, the new one, or a `.partial` leftover (which the next scan deletes), never a torn file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def commit(partial: Path, final: Path) -> None:
    os.replace(partial, final)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file handle for `path`, committed on success; `mode` is applied whatever the umask
    (0600 for hash lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            yield fh
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, path)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as fh:
        fh.write(data)
