"""Where everything under `--out` lives, and the write-then-rename discipline that makes resume safe.

    OUT/results/part-NNNNN.parquet   one ItemResult per input row of shard NNNNN
    OUT/clean/...                    the clean release, in each input's own format
    OUT/removed.parquet, OUT/review.parquet, OUT/evidence.jsonl, OUT/report.json, OUT/report.html
    OUT/_state/run.json              what the scan was asked to do (a rerun must ask the same)
    OUT/_state/part-NNNNN.done.json  a shard's summary, written last: its presence means "done"

Every file is written through `safeset.atomic`, so a killed run leaves no torn file, only `.partial`
leftovers, which the next run deletes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..atomic import partial_path, write_atomic
from ..errors import BadInputError, UsageError
from ..redact import redact


def write_json(path: Path, value: Any) -> None:
    """Every JSON file safeset writes (run state, done-markers, the report), with the credentials
    of any URI in it masked."""
    write_atomic(path, (json.dumps(redact(value), indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """A JSON file of OUT's (run state, a done-marker, the report): one safeset wrote atomically,
    so anything unreadable was damaged since, and is named."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(
            path, f"cannot read this file of OUT ({exc}): restore it, or scan again into a new OUT"
        ) from None


class OutLayout:
    def __init__(self, out: Path | str):
        self.root = Path(out)
        self.results = self.root / "results"
        self.clean = self.root / "clean"
        self.state = self.root / "_state"
        self.removed = self.root / "removed.parquet"
        self.review = self.root / "review.parquet"
        self.evidence = self.root / "evidence.jsonl"
        self.report_json = self.root / "report.json"
        self.report_html = self.root / "report.html"
        self.expansion = self.root / "expansion"
        self.embeddings = self.root / "embeddings"  # `--embed-model`'s, in LAION's layout
        self.run_spec = self.state / "run.json"
        # what a scan puts directly under OUT, and nothing else
        self.outputs = (
            self.results,
            self.clean,
            self.state,
            self.removed,
            self.review,
            self.evidence,
            self.report_json,
            self.report_html,
            self.expansion,
        )

    def relative(self, path: Path) -> str:
        """`path`, a file under OUT, as OUT-relative posix text (its key on object storage)."""
        return path.relative_to(self.root).as_posix()

    def part(self, index: int) -> Path:
        return self.results / f"part-{index:05d}.parquet"

    def done(self, index: int) -> Path:
        return self.state / f"part-{index:05d}.done.json"

    def read_done(self, index: int) -> dict | None:
        path = self.done(index)
        return read_json(path) if path.is_file() else None

    def create(self) -> None:
        """Make OUT's folders. OUT may be new, empty, or a scan's; a file, a place that cannot be
        written, or a folder of someone else's files is a usage error: a scan never writes into,
        or deletes from, what it did not make."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--out {self.root} is a file, not a folder")
        # Without `_state/` (made before any file is written), OUT is a scan's only if all it holds
        # is folders a scan makes, empty: a `clean/` of someone else's is not ours to clear.
        ours = {self.results.name, self.clean.name}
        if self.root.is_dir() and not self.state.is_dir():
            if any(p.name not in ours or not p.is_dir() or any(p.iterdir()) for p in self.root.iterdir()):
                raise UsageError(
                    f"--out {self.root} holds files that are not a safeset scan's: use a new or empty folder"
                )
        try:
            for directory in (self.root, self.state, self.results, self.clean):
                directory.mkdir(parents=True, exist_ok=True)
            probe = self.state / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"--out {self.root}: cannot write there ({exc.strerror})") from None

    def remove_partials(self) -> None:
        """Delete what a killed run was in the middle of writing: `.partial` files in the places
        safeset writes, and nowhere else."""
        for place in (self.results, self.state, self.clean):
            for path in place.rglob("*.partial"):
                path.unlink()
        for path in self.outputs:
            partial_path(path).unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One scan at a time per OUT."""
        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(f"another safeset run (scan or decide) is writing to {self.root}") from None
            yield
        finally:
            os.close(fd)
