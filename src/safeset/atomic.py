"""Write-then-rename, the one way safeset writes a file.

A file is written as NAME.partial, synced to disk, and renamed into place, the directory synced
after: a killed process or a power loss leaves either the old file, the new one, or a `.partial`
leftover (which the next scan deletes), never a torn file, and never a done-marker whose results
did not reach the disk (a shard's files are committed before its marker).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is committed. Inside `commit_together`, the name is noted,
    so that the block removes it if it fails."""
    partial = path.with_name(path.name + ".partial")
    together = _TOGETHER.get()
    if together is not None:
        together.opened.append(partial)
    return partial


def fsync_dir(path: Path) -> None:
    """Make the names in a directory (a rename into it) survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Together:
    opened: list[Path] = field(default_factory=list)  # every partial file named in the block
    commits: list[tuple[Path, Path, bool]] = field(default_factory=list)  # (partial, final, durable), held back

    @property
    def finals(self) -> list[Path]:
        """The files the block commits (or committed), in order."""
        return [final for _, final, _ in self.commits]


_TOGETHER: ContextVar[_Together | None] = ContextVar("commit_together", default=None)


def commit(partial: Path, final: Path, durable: bool = True) -> None:
    """Rename `partial` into place, its bytes on disk first and the rename after them, so that
    after a power loss the file is there whole or not at all (`durable=False`: neither synced,
    for files that are rewritten anyway). Inside `commit_together`, at the end of its block."""
    together = _TOGETHER.get()
    if together is not None:
        together.commits.append((partial, final, durable))
        return
    if durable:
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(partial, final)
    if durable:
        fsync_dir(final.parent)


@contextlib.contextmanager
def commit_together() -> Iterator[_Together]:
    """Hold back every commit made in the block until it ends, then make them in order; if the
    block raises, remove every partial file named in it instead (written, committed or not). A
    shard's clean release is written in one, so that no file of it appears unless every check of
    the shard has passed, and a failed shard leaves no bytes it had begun to copy."""
    together = _Together()
    token = _TOGETHER.set(together)
    try:
        yield together
    except BaseException:
        for partial in together.opened:
            partial.unlink(missing_ok=True)
        raise
    finally:
        _TOGETHER.reset(token)
    for partial, final, durable in together.commits:
        commit(partial, final, durable)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file handle for `path`, committed on success (see `commit`); `mode` is applied
    whatever the umask (0600 for hash lists)."""
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
    commit(tmp, path, durable)


def write_atomic(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    with atomic_writer(path, mode, durable) as fh:
        fh.write(data)
