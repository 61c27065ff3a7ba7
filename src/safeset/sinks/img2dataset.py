"""img2dataset's shard layout, written: what `--save-images` produces and the demo and tests build.

`NNNNN.tar` holds KEY.jpg (or .png, .webp, ...), KEY.txt (the caption) and KEY.json (the row) per
downloaded sample; `NNNNN.parquet` has one row per input row, failed downloads included (status
`failed_to_download`, no tar member); `NNNNN_stats.json` counts them. Keys are zero-padded.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import commit, partial_path, write_atomic


class Img2datasetWriter:
    """Writes one shard in img2dataset's layout: `NNNNN.tar` (KEY.ext, KEY.txt, KEY.json per
    sample), `NNNNN.parquet` (one row per row of the shard, those without an image too) and
    `NNNNN_stats.json`.

    Rows may come in any order (downloads finish in theirs): their images wait in a spill file
    beside the shard (kept images only, never flagged ones) and the shard is written in key order
    when it closes, so that the same rows always make the same bytes. A row's key is img2dataset's:
    the shard's number and the row's place in it, zero-padded to fixed widths. A row may carry other
    columns (a metadata table's own: punsafe, WIDTH, ...), kept beside img2dataset's, as its
    `save_additional_columns` does."""

    COLUMNS = pa.schema(
        [
            ("url", pa.string()),
            ("caption", pa.string()),
            ("key", pa.string()),
            ("status", pa.string()),
            ("error_message", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("original_width", pa.int64()),
            ("original_height", pa.int64()),
            ("exif", pa.string()),
            ("md5", pa.string()),
        ]
    )

    def __init__(self, directory: Path, number: int, key_digits: int = 4):
        directory.mkdir(parents=True, exist_ok=True)
        self.stem = directory / f"{number:05d}"
        self.number = number
        self.key_digits = key_digits
        self._rows: dict[int, tuple[dict, dict, tuple[int, int, str] | None]] = {}  # index -> row, extra, image
        self._extra: dict[int, dict] = {}
        self._spill_path = partial_path(self.stem.with_suffix(".spill"))
        self._spill = open(self._spill_path, "w+b")

    def key(self, index: int) -> str:
        return f"{self.number:05d}{index:0{self.key_digits}d}"

    def add(
        self,
        data: bytes | None,
        url: str | None,
        caption: str | None,
        error: str | None = None,
        size: tuple[int, int] | None = None,
        ext: str | None = None,
        md5: str | None = None,
        index: int | None = None,
        extra: dict | None = None,
    ) -> str:
        """Add the row at `index` (default: after the last): an image (`data`) or, with None, a row
        without one (a failed download: `error` says why). `md5`, when the caller has it already,
        saves hashing the bytes again. Returns its key."""
        index = len(self._rows) if index is None else index
        width, height = size or (None, None)
        row = {
            "url": url,
            "caption": caption,
            "key": self.key(index),
            "status": "success" if data is not None else "failed_to_download",
            "error_message": None if data is not None else (error or "unknown error"),
            "width": width,
            "height": height,
            "original_width": width,
            "original_height": height,
            "exif": None,
            "md5": (md5 or hashlib.md5(data, usedforsecurity=False).hexdigest()) if data is not None else None,
        }
        image = None
        if data is not None:
            offset = self._spill.seek(0, 2)
            self._spill.write(data)
            image = (offset, len(data), ext or image_extension(data))
        self._rows[index] = (row, extra or {}, image)
        return row["key"]

    def add_columns(self, index: int, extra: dict, caption: str | None = None) -> None:
        """Other columns (and the caption) of the row at `index`, known once its image was added."""
        self._extra[index] = extra
        if caption is not None:
            self._rows[index][0]["caption"] = caption

    def abort(self) -> None:
        self._spill.close()

    def close(self) -> Path:
        tar = self.stem.with_suffix(".tar")
        rows = []
        with open(partial_path(tar), "wb") as out:
            size = 0
            for index in sorted(self._rows):
                row, extra, image = self._rows[index]
                extra = {**extra, **self._extra.get(index, {})}
                rows.append({**extra, **row})
                if image is None:
                    continue
                offset, length, ext = image
                self._spill.seek(offset)
                members = (
                    (ext, self._spill.read(length)),
                    ("txt", (row["caption"] or "").encode()),
                    ("json", json.dumps({**_json_safe(extra), **row}).encode()),
                )
                for member_ext, payload in members:
                    size += _write_member(out, f"{row['key']}.{member_ext}", payload)
            end = size + 2 * tarfile.BLOCKSIZE  # two zero blocks, then zeros to a whole record
            out.write(b"\0" * (end + -end % tarfile.RECORDSIZE - size))
        self._spill.close()
        self._spill_path.unlink()
        commit(partial_path(tar), tar)
        side = self.stem.with_suffix(".parquet")
        pq.write_table(_table(rows, self.COLUMNS), partial_path(side))
        commit(partial_path(side), side)
        successes = sum(r["status"] == "success" for r in rows)
        stats = {"count": len(rows), "successes": successes, "failed_to_download": len(rows) - successes}
        write_atomic(self.stem.with_name(self.stem.name + "_stats.json"), json.dumps(stats, indent=2).encode())
        return tar


def _table(rows: list[dict], columns: pa.Schema) -> pa.Table:
    """img2dataset's columns with their types, the rows' other columns as pyarrow infers them."""
    names = list(dict.fromkeys(name for row in rows for name in row)) or columns.names
    fields = [columns.field(n) if n in columns.names else n for n in names]
    arrays = [
        pa.array(
            [row.get(f.name if isinstance(f, pa.Field) else f) for row in rows],
            f.type if isinstance(f, pa.Field) else None,
        )
        for f in fields
    ]
    return pa.table(arrays, names=names)


def _json_safe(extra: dict) -> dict:
    """A row's other columns as JSON can hold them (bytes and other odd values as text)."""
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in extra.items()}


def _write_member(out, name: str, payload: bytes) -> int:
    padding = -len(payload) % tarfile.BLOCKSIZE
    out.write(member_header(name, len(payload)))
    out.write(payload)
    out.write(b"\0" * padding)
    return tarfile.BLOCKSIZE + len(payload) + padding


class SavedShard:
    """A shard an earlier run of the same input shard wrote in this layout, read back by MD5: a
    rerun that carries kept rows over (`--retry-failed`) copies their images from it into the
    shard it writes, instead of fetching them again. It holds kept images only (never flagged
    ones), and it is indexed on first use, so a run that carries nothing never opens it."""

    def __init__(self, stem: Path):
        self.stem = stem
        self._where: dict[str, tuple[int, int]] | None = None

    def _index(self) -> dict[str, tuple[int, int]]:
        """md5 -> (offset, size) of each saved image."""
        tar, side = self.stem.with_suffix(".tar"), self.stem.with_suffix(".parquet")
        if not (tar.is_file() and side.is_file()):
            return {}
        rows = {r["key"]: r for r in pq.read_table(side).to_pylist() if r["status"] == "success"}
        where = {}
        with tarfile.open(tar) as archive:
            for member in archive:
                key, _, ext = member.name.rpartition(".")
                row = rows.get(key)
                if row is not None and ext not in ("txt", "json"):
                    where[row["md5"]] = (member.offset_data, member.size)
        return where

    def read(self, md5: str) -> bytes | None:
        """The saved image with this MD5, or None if none was saved."""
        if self._where is None:
            self._where = self._index()
        if md5 not in self._where:
            return None
        offset, size = self._where[md5]
        with open(self.stem.with_suffix(".tar"), "rb") as fh:
            fh.seek(offset)
            return fh.read(size)


SAVED_MTIME = 1_700_000_000  # the time of the members safeset writes itself: fixed, so reruns write identical shards


def _tarfile_header(name: str, size: int, mtime: int = SAVED_MTIME, mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, mode
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")  # what `tarfile.open(.., "w")` writes


_USTAR_TEMPLATE = _tarfile_header("", 0)


def member_header(name: str, size: int, mtime: int = SAVED_MTIME, mode: int = 0o644) -> bytes:
    """The header `tarfile` writes for a regular file member, owned by no one, built from a
    template: the same bytes in a fraction of the time, which matters at thousands of members a
    second. Names that need a PAX header (long, not ASCII) and out-of-range numbers go through
    `tarfile`."""
    if not name.isascii() or len(name) > 100 or not 0 <= size < 8**11 or not 0 <= mtime < 8**11:
        return _tarfile_header(name, size, mtime, mode)
    header = bytearray(_USTAR_TEMPLATE)
    header[0:100] = name.encode().ljust(100, b"\0")
    header[100:108] = b"%07o\0" % (mode & 0o7777)
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b" " * 8  # the checksum counts its own field as spaces
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


def image_extension(data: bytes) -> str:
    """The usual extension of image bytes, from their magic number."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), "jpg")
