"""The local bank store: named, versioned hash lists under `--home` (env SAFESET_HOME).

Layout, every directory 0700 and every file 0600 because the lists are sensitive:

    HOME/banks/NAME/meta.json     label, enabled flag, version, dates, sources and their checksums,
                                  count and checksum per signal type, checksum of the whole bank
    HOME/banks/NAME/md5.npy       exact digests (md5, sha1, sha256, url_md5): sorted, words layout
    HOME/banks/NAME/pdq.npy       PDQ: sorted (N, 32) uint8 rows
    HOME/banks/NAME/pdq.orders.npy, pdq.starts.npy
                                  PDQ search tables (see `index.PdqIndex`), for lists of 4096+
    HOME/banks/NAME/url.txt       text types (url, domain): sorted normalised values, one per line

(see `hexarray` for the two array layouts). Adding a file to an existing bank merges it in and
bumps the version. Arrays are memory-mapped when loaded, so scan workers share one copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..atomic import atomic_writer
from ..errors import BadInputError, UsageError
from .hexarray import RowBuffer, sort_unique, words_to_rows, write_rows, write_words
from .index import PdqIndex, build_tables
from .listfile import LineError, parse_list
from .signal_types import SIGNAL_TYPES, HexDigestType, Pdq, signal_type

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def default_home() -> Path:
    return Path(os.environ.get("SAFESET_HOME") or Path.home() / ".local" / "share" / "safeset")


@dataclass(frozen=True)
class BankInfo:
    name: str
    label: str
    enabled: bool
    version: int
    created: str
    updated: str
    counts: dict[str, int]
    sha256: str
    checksums: dict[str, str] = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AddResult:
    bank: BankInfo
    lines: int
    accepted: int  # valid values in the file, duplicates included
    added: int  # distinct values the bank did not hold yet
    duplicates: int  # valid values that repeat an earlier line of the same file
    errors: list[LineError]


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _content_sha256(type_name: str, values: np.ndarray | list[str]) -> str:
    digest = hashlib.sha256(type_name.encode() + b"\0")
    if isinstance(values, np.ndarray):
        digest.update(np.ascontiguousarray(values).data)
    else:
        digest.update("\n".join(values).encode())
    return digest.hexdigest()


def _bank_sha256(checksums: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{t}:{checksums[t]}\n" for t in sorted(checksums)).encode()).hexdigest()


class BankStore:
    def __init__(self, home: Path | str | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.root = self.home / "banks"

    # ---- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "meta.json").is_file())

    def list(self) -> list[BankInfo]:
        return [self.get(name) for name in self.names()]

    def get(self, name: str) -> BankInfo:
        meta = self.root / name / "meta.json"
        if not _NAME.fullmatch(name) or not meta.is_file():
            raise UsageError(f"no bank named {name!r} in {self.root} (see `safeset bank list`)")
        return BankInfo(**json.loads(meta.read_text()))

    def resolve(self, names: Sequence[str] | None) -> list[BankInfo]:
        """The banks a scan uses: those named, or every enabled bank when none are named."""
        if not names:
            return [b for b in self.list() if b.enabled]
        banks = [self.get(n) for n in dict.fromkeys(names)]
        for bank in banks:
            if not bank.enabled:
                raise UsageError(f"bank {bank.name!r} is disabled; `safeset bank enable {bank.name}` first")
        return banks

    def _path(self, name: str, stype) -> Path:
        suffix = "npy" if isinstance(stype, HexDigestType) else "txt"
        return self.root / name / f"{stype.name}.{suffix}"

    def load(self, name: str, type_name: str) -> np.ndarray | list[str]:
        """A bank's stored values of one type, memory-mapped: (W, N) words for exact digests,
        (N, 32) rows for PDQ, sorted strings for text types."""
        stype = signal_type(type_name)
        path = self._path(name, stype)
        if isinstance(stype, HexDigestType):
            if not path.exists():
                return np.zeros((0, 32), np.uint8) if isinstance(stype, Pdq) else np.zeros((2, 0), np.uint64)
            return np.load(path, mmap_mode="r", allow_pickle=False)
        return path.read_text().splitlines() if path.exists() else []

    def load_rows(self, name: str, stype: HexDigestType) -> np.ndarray:
        """Stored digests of one type as (N, width) byte rows, whatever their layout on disk."""
        stored = self.load(name, stype.name)
        return np.asarray(stored) if isinstance(stype, Pdq) else words_to_rows(stored, stype.width)

    # ---- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)
        os.chmod(self.root, 0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def add(
        self,
        name: str,
        path: Path | str,
        type_name: str | None = None,
        label: str | None = None,
        strict: bool = False,
    ) -> AddResult:
        """Import a list file into bank `name`, creating it or merging into it.

        Bad lines are skipped and returned; with `strict`, any bad line refuses the whole file.
        """
        if not _NAME.fullmatch(name):
            raise UsageError(f"bank name {name!r} must be letters, digits, '_', '.', '-' (max 64)")
        path = Path(path)
        if not path.is_file():
            raise BadInputError(path, "no such file")
        parsed = parse_list(path, type_name)
        if strict and parsed.errors:
            first = parsed.errors[0]
            raise BadInputError(
                path, f"{first.reason} ({len(parsed.errors)} bad line(s); --strict refuses the file)", line=first.line
            )
        with self._locked():
            bank_dir = self.root / name
            existing = self.get(name) if (bank_dir / "meta.json").is_file() else None
            bank_dir.mkdir(exist_ok=True, mode=0o700)
            counts = dict(existing.counts) if existing else {}
            checksums = dict(existing.checksums) if existing else {}
            added, duplicates = 0, parsed.text_duplicates
            for stype_name, buffer in parsed.hex.items():
                new, dup = self._merge_hex(name, signal_type(stype_name), buffer, counts, checksums)
                added, duplicates = added + new, duplicates + dup
            for stype_name, values in parsed.text.items():
                added += self._merge_text(name, signal_type(stype_name), values, counts, checksums)
            now = _now()
            source = {
                "file": path.name,
                "sha256": _file_sha256(path),
                "added": now,
                "lines": parsed.lines,
                "accepted": parsed.accepted,
                "rejected": len(parsed.errors),
            }
            info = BankInfo(
                name=name,
                label=label if label is not None else (existing.label if existing else ""),
                enabled=existing.enabled if existing else True,
                version=(existing.version + 1) if existing else 1,
                created=existing.created if existing else now,
                updated=now,
                counts={t: counts[t] for t in SIGNAL_TYPES if counts.get(t)},
                sha256=_bank_sha256(checksums),
                checksums={t: checksums[t] for t in SIGNAL_TYPES if t in checksums},
                sources=(existing.sources if existing else []) + [source],
            )
            self._write_meta(info)
        return AddResult(info, parsed.lines, parsed.accepted, added, duplicates, parsed.errors)

    def _merge_hex(self, name: str, stype: HexDigestType, buffer: RowBuffer, counts, checksums) -> tuple[int, int]:
        """Merge new digests into the stored ones; (newly added, duplicates within the file)."""
        new = buffer.rows
        distinct = sort_unique(new)
        before = counts.get(stype.name, 0)
        if before:
            combined = RowBuffer(stype.width, before + distinct)
            combined.append(self.load_rows(name, stype))
            combined.append(new[:distinct])
            rows = combined.rows
            total = sort_unique(rows)
        else:
            rows, total = new, distinct
        rows = rows[:total]
        with atomic_writer(self._path(name, stype), mode=0o600) as fh:
            (write_rows if isinstance(stype, Pdq) else write_words)(fh, rows)
        if isinstance(stype, Pdq):
            self._write_tables(name, rows)
        counts[stype.name] = total
        checksums[stype.name] = _content_sha256(stype.name, rows)
        return total - before, len(new) - distinct

    def _tables_paths(self, name: str) -> tuple[Path, Path]:
        return self.root / name / "pdq.orders.npy", self.root / name / "pdq.starts.npy"

    def _write_tables(self, name: str, rows: np.ndarray) -> None:
        """Keep a PDQ list's search tables beside it: built once here, mapped by every worker."""
        paths = self._tables_paths(name)
        if len(rows) < PdqIndex.MIH_MIN_ENTRIES:
            for path in paths:
                path.unlink(missing_ok=True)
            return
        for path, table in zip(paths, build_tables(rows), strict=True):
            with atomic_writer(path, mode=0o600) as fh:
                np.save(fh, table, allow_pickle=False)

    def load_tables(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A PDQ list's stored search tables, memory-mapped; None where there are none (small
        lists, or a store written before they were kept: the index then builds its own)."""
        paths = self._tables_paths(name)
        if not all(path.is_file() for path in paths):
            return None
        orders, starts = (np.load(path, mmap_mode="r", allow_pickle=False) for path in paths)
        return orders, starts

    def _merge_text(self, name: str, stype, values: set[str], counts, checksums) -> int:
        old = self.load(name, stype.name)
        merged = sorted(set(old) | values)
        with atomic_writer(self._path(name, stype), mode=0o600) as fh:
            fh.write("".join(v + "\n" for v in merged).encode())
        counts[stype.name] = len(merged)
        checksums[stype.name] = _content_sha256(stype.name, merged)
        return len(merged) - len(old)

    def _write_meta(self, info: BankInfo) -> None:
        with atomic_writer(self.root / info.name / "meta.json", mode=0o600) as fh:
            fh.write(json.dumps(info.to_dict(), indent=2).encode())

    def set_enabled(self, name: str, enabled: bool) -> BankInfo:
        with self._locked():
            info = self.get(name)
            info = BankInfo(**{**info.to_dict(), "enabled": enabled, "updated": _now()})
            self._write_meta(info)
        return info

    def remove(self, name: str) -> None:
        with self._locked():
            self.get(name)
            shutil.rmtree(self.root / name)
