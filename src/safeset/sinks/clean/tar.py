"""A webdataset shard's clean release: its tar, the img2dataset parquet beside it, its stats.

The clean tar is written afresh, not cut out of the input: each kept member gets a new header
(its name, size, mode and time, in a PAX record where ustar cannot hold them; no owner, none of
the input's own records) and its data, read again and
checked against the digest taken in the first pass. So the clean tar holds exactly the members
that were hashed, whatever the input's headers hold or however another tar reader would list the
input (tarfile and GNU tar disagree on crafted sparse headers); a sparse member is written expanded.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from ...atomic import commit, partial_path, write_atomic
from ...errors import BadInputError
from ...model import ItemResult, Span, printable
from ...sources.base import Shard
from ...storage import open_input
from ..img2dataset import member_header
from .base import CleanWriter, kept_places
from .tables import filter_parquet

_CHUNK = 1 << 20


class TarCopy(CleanWriter):
    """Writes each kept sample's members into a new tar as it is decided (in archive order): a new
    header for each, and its data read again from the input and checked against the MD5 of the
    first pass, before it is written when it fits in memory (`max_bytes`), as it is written
    otherwise. A mismatch fails the shard, and the worker removes the partial tar."""

    columns = ("index", "locator")

    def __init__(self, shard: Shard, clean_root: Path):
        self.shard = shard
        self.target = clean_root / shard.name
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.kept: dict[int, Any] = {}
        raw_out = open(partial_path(self.target), "wb")
        if self.target.name.endswith((".gz", ".tgz")):
            # No name and no time in the gzip header, so that reruns write identical files.
            self.out = gzip.GzipFile(filename="", mode="wb", fileobj=raw_out, mtime=0)
            self._raw_out = raw_out
        else:
            self.out, self._raw_out = raw_out, None
        self.size = 0
        self.raw = open_input(shard.path)
        try:
            self.source = tarfile.open(fileobj=self.raw, mode="r:*")
        except tarfile.ReadError:  # pass 1 recorded it: the clean tar is then empty
            self.source = None

    def keep(self, result: ItemResult) -> None:
        self.kept[result.index] = None
        for span in result.locator or ():
            self._copy(span)

    def keep_table(self, kept: pa.Table) -> None:
        for index, spans in kept_places(kept):
            self.kept[index] = None
            for span in spans:
                self._copy(span)

    def _copy(self, span: Span) -> None:
        """The member at `span`: its header read again there (long names, PAX records and sparse
        maps with it), its data checked by size and MD5 against what the first pass read."""
        info = None
        if self.source is not None:
            self.source.fileobj.seek(span.offset)
            try:
                info = tarfile.TarInfo.fromtarfile(self.source)
            except (tarfile.TarError, EOFError, OSError):
                info = None
        if info is None or info.size != span.size:
            raise BadInputError(
                self.shard.path,
                f"no member of {span.size} bytes at offset {span.offset}, where the scan read one: "
                "the input changed since; scan it again",
            )
        md5 = span.md5
        self._write(member_header(info.name, info.size, int(info.mtime), info.mode))
        handle = self.source.extractfile(info)
        digest, size = hashlib.md5(usedforsecurity=False), 0
        if info.size <= self.shard.options.max_bytes:
            data = handle.read()
            digest.update(data)
            size = len(data)
            if digest.hexdigest() == md5 and size == info.size:
                self._write(data)
        else:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                self._write(chunk)
        if digest.hexdigest() != md5 or size != info.size:
            raise BadInputError(
                self.shard.path,
                f"member {printable(info.name)!r} is not what the scan read (its size or MD5 differs): "
                "the input changed since; scan it again",
            )
        self._write(b"\0" * (-info.size % tarfile.BLOCKSIZE))

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.size += len(data)

    def abort(self) -> None:
        for handle in (self.out, self._raw_out, self.source, self.raw):
            if handle is not None:
                handle.close()

    def close(self) -> None:
        end = self.size + 2 * tarfile.BLOCKSIZE  # two zero blocks, then zeros to a whole record
        self._write(b"\0" * (end + -end % tarfile.RECORDSIZE - self.size))
        self.abort()
        commit(partial_path(self.target), self.target)
        if len(self.shard.files) > 1:
            side = Path(self.shard.files[1])
            filter_parquet(side, self.target.parent / side.name, self.kept)
        for stats in self.shard.files[2:]:
            _copy_stats(Path(stats), self.target.parent / Path(stats).name)


def _copy_stats(src: Path, dest: Path) -> None:
    """img2dataset's record of the download, as JSON text: a JSON object is written again (it is
    not copied as bytes, which could be anything), on one line (indenting deeply nested JSON would
    multiply its size); anything else is left out."""
    try:
        stats = json.loads(src.read_bytes())
    except (ValueError, RecursionError):
        return
    if isinstance(stats, dict):
        write_atomic(dest, json.dumps(stats).encode())
