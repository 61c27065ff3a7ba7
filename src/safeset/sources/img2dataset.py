"""img2dataset's shard layout, written: what `--save-images` produces and the demo and tests build.

`NNNNN.tar` holds KEY.jpg (or .png, .webp, ...), KEY.txt (the caption) and KEY.json (the row) per
downloaded sample; `NNNNN.parquet` has one row per input row, failed downloads included (status
`failed_to_download`, no tar member); `NNNNN_stats.json` counts them. Keys are zero-padded.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import commit, partial_path, write_atomic


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
        self.tar = tarfile.open(partial_path(self.stem.with_suffix(".tar")), "w")

    def add(
        self,
        data: bytes | None,
        url: str | None,
        caption: str | None,
        error: str | None = None,
        size: tuple[int, int] | None = None,
        ext: str | None = None,
    ) -> str:
        """Add a sample (`data` None: a failed download, a parquet row only); returns its key."""
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
            "md5": hashlib.md5(data, usedforsecurity=False).hexdigest() if data is not None else None,
        }
        self.rows.append(row)
        if data is not None:
            members = (
                (ext or image_extension(data), data),
                ("txt", (caption or "").encode()),
                ("json", json.dumps(row).encode()),
            )
            for member_ext, payload in members:
                info = tarfile.TarInfo(f"{key}.{member_ext}")
                info.size = len(payload)
                info.mtime = 1_700_000_000  # fixed, so that reruns write identical shards
                self.tar.addfile(info, io.BytesIO(payload))
        return key

    def close(self) -> Path:
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


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


def image_extension(data: bytes) -> str:
    """The usual extension of image bytes, from their magic number."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), "jpg")
