"""Inputs and outputs on object storage (`s3://`, `gs://`, `hdfs://`, `file://`), through pyarrow's
filesystems, by staging.

Everything that reads and writes a shard works on local files (tarfile, Pillow, parquet, the
write-then-rename discipline of `atomic`), and object stores have no rename. So a remote location
is used at the edges only:
- a shard whose files are remote is downloaded by the worker that runs it into a private directory
  in memory (a tmpfs: /dev/shm, or `SAFESET_STAGING`; the shard may hold flagged images, whose bytes
  must never reach a disk), and deleted after. A tar is read as it arrives (`Arriving`), so its
  download overlaps its hashing; a metadata parquet is read in place, by ranges (no image bytes);
  each reader says which it wants (`sources.Reader.staging`);
- a worker whose OUT is remote writes its shard's outputs into a private temporary OUT, then uploads
  them, the done-marker last. One upload is one object PUT, which appears whole or not at all, so a
  worker killed mid-shard leaves no torn object, and without its done-marker the shard is run again;
- the scan itself keeps a local staging copy of OUT: it fetches `_state/` to resume, fetches the
  results parts to merge, and uploads what it writes (run spec, manifests, report). It holds a
  `Lease` on OUT meanwhile, since a store has no locks to keep a second scan out.

Credentials come from the usual places of each store (environment, config files, instance roles);
options go in the URI's query, as pyarrow reads them (e.g. `s3://bucket/out?region=eu-west-1`, or
`?endpoint_override=host:port&scheme=http` for an S3-compatible server).
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .errors import BadInputError, UsageError

_COPY_BLOCK = 8 << 20
_LISTED: dict[str, tuple[int, int | None]] = {}  # URI -> (size, mtime_ns), as listings reported them


def is_remote(location: str | Path) -> bool:
    """A URI with a scheme (`s3://...`, `file:///...`) rather than a local path."""
    text = str(location)
    return "://" in text and not Path(text).exists()


@dataclass(frozen=True)
class Remote:
    """A directory or file on a pyarrow filesystem, named by its URI."""

    uri: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", self.uri.rstrip("/"))

    @cached_property
    def _made(self) -> set[str]:
        return set()

    @cached_property
    def _resolved(self):
        from pyarrow import fs

        try:
            return fs.FileSystem.from_uri(self.uri)
        except Exception as exc:  # unknown scheme, bad options, a store not built into this pyarrow
            raise UsageError(f"cannot open {self.uri}: {exc}") from None

    @property
    def filesystem(self):
        return self._resolved[0]

    @property
    def root(self) -> str:
        return self._resolved[1].rstrip("/")

    @property
    def name(self) -> str:
        return self.root.rsplit("/", 1)[-1]

    def child(self, rel: str) -> Remote:
        """The URI of `rel` under this one, keeping the query (endpoint and other options)."""
        parts = urlsplit(self.uri)
        return Remote(urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + rel)))

    def sibling(self, name: str) -> Remote:
        """The URI of `name` in the same directory."""
        parts = urlsplit(self.uri)
        return Remote(urlunsplit(parts._replace(path=parts.path.rsplit("/", 1)[0] + "/" + name)))

    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def info(self, rel: str = ""):
        return self.filesystem.get_file_info(self.path(rel))

    def is_dir(self) -> bool:
        from pyarrow import fs

        return self.info().type == fs.FileType.Directory

    def exists(self, rel: str = "") -> bool:
        from pyarrow import fs

        return self.info(rel).type != fs.FileType.NotFound

    def files(self, rel: str = "", remember: bool = False) -> list[tuple[str, int]]:
        """(path relative to this directory, size) of every file under `rel`, sorted; hidden ones
        (a component starting with '.') left out, as for local folders. `remember`: keep what the
        listing says of each file, for `stat` (inputs, whose fingerprint needs it)."""
        from pyarrow import fs

        base = self.path(rel)
        selector = fs.FileSelector(base, recursive=True, allow_not_found=True)
        found = []
        for entry in self.filesystem.get_file_info(selector):
            if entry.type != fs.FileType.File:
                continue
            relative = entry.path[len(self.root) + 1 :]
            if not any(part.startswith(".") for part in relative.split("/")):
                found.append((relative, entry.size))
                if remember:
                    _LISTED[self.child(relative).uri] = (entry.size, entry.mtime_ns)
        return sorted(found)

    def stat(self) -> tuple[int, int | None]:
        """(size, modification time in ns) of this file: from a listing that saw it if there was
        one (a million inputs are one LIST request per thousand, not a million HEADs), else asked."""
        if self.uri not in _LISTED:
            info = self.info()
            _LISTED[self.uri] = (info.size, info.mtime_ns)
        return _LISTED[self.uri]

    def open(self, rel: str = ""):
        """A sequential binary stream of the file (a context manager)."""
        return self.filesystem.open_input_stream(self.path(rel))

    def open_random(self, rel: str = ""):
        """A seekable binary file, read by ranges as it is used (what a parquet reader wants)."""
        return self.filesystem.open_input_file(self.path(rel))

    def download(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with self.open(rel) as src, open(local, "wb") as dst:
            while block := src.read(_COPY_BLOCK):
                dst.write(block)

    def delete(self, rel: str) -> None:
        self.filesystem.delete_file(self.path(rel))

    def _output(self, rel: str):
        """A stream writing the file `rel` (one object PUT, on a store)."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        if parent not in self._made:  # local and HDFS paths need their directories; a store ignores them
            self.filesystem.create_dir(parent, recursive=True)
            self._made.add(parent)
        return self.filesystem.open_output_stream(target)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self._output(rel) as dst:
            dst.write(data)

    def upload(self, local: Path, rel: str) -> None:
        with open(local, "rb") as src, self._output(rel) as dst:
            while block := src.read(_COPY_BLOCK):
                dst.write(block)

    def upload_tree(self, local_root: Path, last: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> None:
        """Every file under `local_root` but those under the `skip` prefixes, to the same relative
        paths; the ones in `last` after all the others (the done-marker that says the rest is
        complete)."""
        files = sorted(p.relative_to(local_root).as_posix() for p in local_root.rglob("*") if p.is_file())
        files = [f for f in files if not f.startswith(skip)] if skip else files
        for rel in [f for f in files if f not in last] + [f for f in files if f in last]:
            self.upload(local_root / rel, rel)


class StagingError(Exception):
    """A shard's input could not be downloaded. Not an `OSError`, so that no reader takes it for a
    truncated file of its own: the shard fails as a worker does, and is retried."""


class Arriving:
    """A remote file downloaded into a local one by a background thread, and readable while it
    arrives (`open`): a reader that reads front to back (a tar) hashes the first samples while the
    last ones are still on their way, so a shard costs its download or its hashing, whichever is
    longer, rather than both. A read past what has arrived waits for it."""

    def __init__(self, remote: Remote, local: Path):
        self.remote, self.local = remote, local
        local.parent.mkdir(parents=True, exist_ok=True)
        local.touch()
        self._arrived = 0
        self._done = False
        self._error: BaseException | None = None
        self._cancelled = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._download, daemon=True, name="safeset-staging")
        self._thread.start()

    def _download(self) -> None:
        try:
            with self.remote.open() as src, open(self.local, "wb") as dst:
                while not self._cancelled and (block := src.read(_COPY_BLOCK)):
                    dst.write(block)
                    dst.flush()  # visible to readers of the file before they are told it arrived
                    with self._changed:
                        self._arrived += len(block)
                        self._changed.notify_all()
        except BaseException as exc:  # handed to the reader, whose shard then fails
            self._error = exc
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def wait(self, size: int | None = None) -> None:
        """Until `size` bytes have arrived (None: all of them); a failed download raises."""
        with self._changed:
            self._changed.wait_for(lambda: self._done or (size is not None and self._arrived >= size))
            if self._error is not None and (size is None or self._arrived < size):
                raise StagingError(f"{self.remote.uri}: download failed ({self._error})") from None

    def cancel(self) -> None:
        """Stop downloading (the shard ended early) and wait for the thread to let go of the file."""
        self._cancelled = True
        self._thread.join()

    def open(self) -> io.BufferedReader:
        return io.BufferedReader(_ArrivingReader(self), buffer_size=1 << 20)


class _ArrivingReader(io.RawIOBase):
    def __init__(self, arriving: Arriving):
        self._arriving = arriving
        self._fh = open(arriving.local, "rb")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._arriving.wait(self._fh.tell() + len(buffer))
        return self._fh.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self._arriving.wait()
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()
        super().close()


class UnreadableFile(Exception):
    """A path that is not a regular file safeset can read; `reason` is a short code for the row."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_KINDS = (
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISDIR, "directory"),
)


def open_regular(path: Path | str):
    """An open binary file, if `path` is a regular file (links to one followed); else
    `UnreadableFile`, before a byte is read: a FIFO would block forever, a device such as
    /dev/zero never ends, a dangling link or a link loop cannot be read at all."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens without a writer
    except FileNotFoundError:
        raise UnreadableFile("missing (or a dangling link)") from None
    except OSError as exc:
        reason = {errno.ELOOP: "link loop", errno.EACCES: "permission denied"}.get(exc.errno, "unreadable")
        raise UnreadableFile(reason) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((what for test, what in _KINDS if test(mode)), "special file")
        raise UnreadableFile(f"not a regular file ({kind})")
    return os.fdopen(fd, "rb")


_ARRIVING: dict[str, Arriving] = {}  # local path -> its download, while the shard that staged it runs


@contextmanager
def arriving(files: dict[str, Path]) -> Iterator[None]:
    """Download `files` (URI -> local path) in the background for as long as the block runs; read
    them with `open_input`. On the way out every download has ended (cancelled if still going)."""
    downloads = {str(local): Arriving(Remote(uri), local) for uri, local in files.items()}
    _ARRIVING.update(downloads)
    try:
        yield
    finally:
        for local, download in downloads.items():
            download.cancel()
            _ARRIVING.pop(local, None)


def open_input(path: str | Path):
    """Open an input file for reading: a staged one as it arrives, one on a store (read in place)
    as a stream from it, a local one if it is a regular file (`BadInputError` naming it if not:
    a FIFO named like a shard would block the worker forever)."""
    download = _ARRIVING.get(str(path))
    if download is not None:
        return download.open()
    if is_remote(path):
        return Remote(str(path)).open()
    try:
        return open_regular(path)
    except UnreadableFile as exc:
        raise BadInputError(path, f"cannot read: {exc.reason}") from None


def is_staged(path: str | Path) -> bool:
    """Whether `path` is an input staged from a store, arriving while this shard runs."""
    return str(path) in _ARRIVING


def wait_for_input(path: str | Path) -> None:
    """Until a staged input file has arrived whole (for readers that need all of it: a parquet)."""
    download = _ARRIVING.get(str(path))
    if download is not None:
        download.wait()


class Lease:
    """One writer at a time for a location on a store, which has no locks: an object naming its
    holder, renewed while it is held, deleted when it is let go.

    To take it: no live lease by someone else may be there (one renewed within `ttl` seconds, and
    not left by a dead process of this machine); write ours; wait `settle` seconds; read it back.
    Two takers that both found it free both write, and the one that wrote last wins: the other
    reads the winner's lease back and gives up. (Both could win only if one's read came before
    the other's write and its write after the other's read-back, `settle` seconds later: a store
    answering that slowly, or not consistently, defeats this.) A holder that died stops renewing,
    and its lease lapses after `ttl` (at once, for a rerun on the same machine)."""

    def __init__(self, remote: Remote, rel: str, what: str, ttl: float = 300.0, settle: float = 1.0):
        self.remote, self.rel, self.what, self.ttl, self.settle = remote, rel, what, ttl, settle
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="safeset-lease")

    def __enter__(self) -> Lease:
        held = self._read()
        if held is not None and not self._lapsed(held):
            raise self._taken(held)
        self._write()
        time.sleep(self.settle)
        held = self._read()
        if held is None or held.get("token") != self.token:
            raise self._taken(held or {})
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._renewer.join()
        if (self._read() or {}).get("token") == self.token:
            self.remote.delete(self.rel)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 5):
            try:
                self._write()
            except OSError:  # the store did not answer this time; four more tries before it lapses
                pass

    def _write(self) -> None:
        lease = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid()}
        self.remote.write_bytes(
            self.rel, json.dumps({**lease, "started": self.started, "renewed": time.time()}).encode()
        )

    def _read(self) -> dict | None:
        try:
            with self.remote.open(self.rel) as fh:
                return json.loads(fh.read())
        except (FileNotFoundError, ValueError):
            return None

    def _lapsed(self, held: dict) -> bool:
        if time.time() - held.get("renewed", 0) > self.ttl:
            return True
        return held.get("host") == socket.gethostname() and not _alive(held.get("pid", 0))

    def _taken(self, held: dict) -> UsageError:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held.get("started", 0)))
        return UsageError(
            f"another {self.what} is writing to {self.remote.uri} ({held.get('host', '?')}, pid "
            f"{held.get('pid', '?')}, since {since}); if it is gone, its lease lapses {self.ttl:.0f} s "
            "after it was last renewed"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


# Filesystems that keep their files in memory only.
_MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def filesystem_type(path: str | Path) -> str | None:
    """The type of the filesystem `path` is on ("tmpfs", "ext4", ...), from /proc/self/mountinfo:
    the mount point that is the longest prefix of the resolved path. None where it cannot be told."""
    target = os.path.realpath(path)
    best, kind = "", None
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields, _, tail = line.partition(" - ")
                mount = fields.split()[4].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, tail.split()[0]
    except OSError:
        return None
    return kind


def staging_base() -> str:
    """Where input shards from a store are held: a RAM-backed directory, checked to be one. They
    may hold flagged images, whose bytes must never reach a disk (zero view)."""
    base = os.environ.get("SAFESET_STAGING") or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    if base is None:
        raise UsageError(
            "inputs on object storage are held in memory while they are checked, and this system "
            "has no /dev/shm: set SAFESET_STAGING to a RAM-backed directory (tmpfs)"
        )
    kind = filesystem_type(base)
    if kind not in _MEMORY_FILESYSTEMS and os.environ.get("SAFESET_STAGING_ALLOW_DISK") != "1":
        raise UsageError(
            f"{base} is on {kind or 'an unknown filesystem'}, not in memory: inputs from object storage may "
            "hold flagged images, which must never be written to a disk. Set SAFESET_STAGING to a tmpfs "
            "(or, knowing the disk is encrypted and private, SAFESET_STAGING_ALLOW_DISK=1)"
        )
    return base


def _remove_stale(base: str | None, prefix: str) -> None:
    """Scratch directories of `prefix` that a killed process left behind (their names carry the
    pid, and it is no longer alive on this machine): removed, so no staged shard outlives its run."""
    for entry in Path(base or tempfile.gettempdir()).glob(f"{prefix}*"):
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and entry.is_dir() and entry.stat().st_uid == os.getuid():
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def scratch(prefix: str, in_memory: bool = False) -> Iterator[Path]:
    """A private temporary directory, deleted afterwards whatever happens, and by the next run if
    this process is killed first. `in_memory`: on a RAM-backed filesystem (`SAFESET_STAGING`, else
    /dev/shm, checked), for input shards downloaded from a store."""
    base = staging_base() if in_memory else None
    _remove_stale(base, prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
