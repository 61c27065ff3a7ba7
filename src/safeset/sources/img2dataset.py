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
from ..hashing import Resized


def resized(record: dict) -> Resized | None:
    """What img2dataset did to a sample's image, from its row (or its .json): its size before
    (`original_width`, `original_height`), and, where it wrote a square of an image that was not
    one, the box its `border` resizing (the default) put the content in: scaled so that the longer
    side fills the square, centred, the rest white. Which resize mode ran is not recorded, so PDQ
    uses the box only where what lies outside it is uniform (see `hashing.pdq.content_crop`)."""
    sides = [record.get(k) for k in ("width", "height", "original_width", "original_height")]
    if not all(isinstance(v, int) and v > 0 for v in sides):
        return None
    width, height, original_width, original_height = sides
    if width != height or original_width == original_height:
        return Resized((original_width, original_height))
    scale = width / max(original_width, original_height)
    inner_width, inner_height = round(original_width * scale), round(original_height * scale)
    if inner_width > width or inner_height > height:
        return Resized((original_width, original_height))
    left, top = (width - inner_width) // 2, (height - inner_height) // 2
    return Resized((original_width, original_height), (left, top, left + inner_width, top + inner_height))


class Img2datasetWriter:
    """Writes one shard in img2dataset's layout: `NNNNN.tar` (KEY.ext, KEY.txt, KEY.json per
    sample), `NNNNN.parquet` (one row per sample) and `NNNNN_stats.json`."""

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

    def __init__(self, directory: Path, number: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.stem = directory / f"{number:05d}"
        self.number = number
        self.rows: list[dict] = []
        self.tar = open(partial_path(self.stem.with_suffix(".tar")), "wb")
        self.tar_size = 0

    def add(
        self,
        data: bytes | None,
        url: str | None,
        caption: str | None,
        error: str | None = None,
        size: tuple[int, int] | None = None,
        ext: str | None = None,
        md5: str | None = None,
    ) -> str:
        """Add a sample (`data` None: a failed download, a parquet row only); returns its key.
        `md5`, when the caller has it already, saves hashing the bytes again."""
        key = f"{self.number:05d}{len(self.rows):04d}"
        width, height = size or (None, None)
        row = {
            "url": url,
            "caption": caption,
            "key": key,
            "status": "success" if data is not None else "failed_to_download",
            "error_message": None if data is not None else (error or "unknown error"),
            "width": width,
            "height": height,
            "original_width": width,
            "original_height": height,
            "exif": None,
            "md5": (md5 or hashlib.md5(data, usedforsecurity=False).hexdigest()) if data is not None else None,
        }
        self.rows.append(row)
        if data is not None:
            members = (
                (ext or image_extension(data), data),
                ("txt", (caption or "").encode()),
                ("json", json.dumps(row).encode()),
            )
            for member_ext, payload in members:
                self._member(f"{key}.{member_ext}", payload)
        return key

    def _member(self, name: str, payload: bytes) -> None:
        padding = -len(payload) % tarfile.BLOCKSIZE
        self.tar.write(_ustar_header(name, len(payload)))
        self.tar.write(payload)
        self.tar.write(b"\0" * padding)
        self.tar_size += tarfile.BLOCKSIZE + len(payload) + padding

    def close(self) -> Path:
        end = self.tar_size + 2 * tarfile.BLOCKSIZE  # two zero blocks, then zeros to a whole record
        self.tar.write(b"\0" * (end + -end % tarfile.RECORDSIZE - self.tar_size))
        self.tar.close()
        tar = self.stem.with_suffix(".tar")
        commit(partial_path(tar), tar)
        side = self.stem.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist(self.rows, schema=self.COLUMNS), partial_path(side))
        commit(partial_path(side), side)
        successes = sum(r["status"] == "success" for r in self.rows)
        stats = {"count": len(self.rows), "successes": successes, "failed_to_download": len(self.rows) - successes}
        write_atomic(self.stem.with_name(self.stem.name + "_stats.json"), json.dumps(stats, indent=2).encode())
        return tar


class SavedShard:
    """A shard an earlier run of the same input shard wrote in this layout, read back by MD5: a
    rerun that carries kept rows over (`--retry-failed`) copies their images from it into the
    shard it writes, instead of fetching them again. It holds kept images only (never flagged
    ones), and it is indexed on first use, so a run that carries nothing never opens it."""

    def __init__(self, stem: Path):
        self.stem = stem
        self._where: dict[str, tuple[int, int, str | None, str | None]] | None = None

    def _index(self) -> dict[str, tuple[int, int, str | None, str | None]]:
        """md5 -> (offset, size, url, caption) of each saved image."""
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
                    where[row["md5"]] = (member.offset_data, member.size, row["url"], row["caption"])
        return where

    def copy(self, md5: str, writer: Img2datasetWriter) -> None:
        """Add the saved image with this MD5 to `writer`. Its absence means the earlier run's
        outputs are not what its done-marker says: the shard fails, and is run again in full."""
        if self._where is None:
            self._where = self._index()
        if md5 not in self._where:
            raise RuntimeError(f"{self.stem.with_suffix('.tar')}: no saved image with MD5 {md5}")
        offset, size, url, caption = self._where[md5]
        with open(self.stem.with_suffix(".tar"), "rb") as fh:
            fh.seek(offset)
            writer.add(fh.read(size), url, caption, md5=md5)


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 1_700_000_000  # fixed, so that reruns write identical shards
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")  # what `tarfile.open(.., "w")` writes


_USTAR_TEMPLATE = _tarfile_header("", 0)


def _ustar_header(name: str, size: int) -> bytes:
    """The header `tarfile` writes for a regular member (mode 644, fixed mtime), built from a
    template: the same bytes in a fraction of the time, which matters at thousands of members a
    second. Names that need a PAX header (long, not ASCII) go through `tarfile`."""
    encoded = name.encode()
    if len(encoded) > 100 or not name.isascii() or size >= 8**11:
        return _tarfile_header(name, size)
    header = bytearray(_USTAR_TEMPLATE)
    header[0:100] = encoded.ljust(100, b"\0")
    header[124:136] = b"%011o\0" % size
    header[148:156] = b" " * 8  # the checksum counts its own field as spaces
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


def image_extension(data: bytes) -> str:
    """The usual extension of image bytes, from their magic number."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), "jpg")
