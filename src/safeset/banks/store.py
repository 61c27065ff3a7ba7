"""The local bank store: named, versioned hash lists under `--home` (env SAFESET_HOME).

Layout, every directory 0700 and every file 0600 because the lists are sensitive:

    HOME/banks/NAME/meta.json     label, enabled flag, version, dates, sources and their checksums,
                                  count per signal type, checksum of the stored content
    HOME/banks/NAME/md5.npy       hex-digest types: sorted unique (N, width) uint8
    HOME/banks/NAME/url.txt       text types: sorted unique normalised values, one per line

Adding a file to an existing bank merges it in and bumps the version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..errors import BadInputError, UsageError
from .listfile import LineError, parse_list
from .signal_types import SIGNAL_TYPES, HexDigestType, signal_type

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
    accepted: int  # distinct valid values in the file
    added: int  # of those, values the bank did not hold yet
    duplicates: int
    errors: list[LineError]


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _write_private(path: Path, data: bytes) -> None:
    write_atomic(path, data, mode=0o600)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


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

    def load(self, name: str, type_name: str) -> np.ndarray | list[str]:
        """A bank's stored values of one type: (N, width) uint8 for hex types, else sorted strings."""
        stype = signal_type(type_name)
        if isinstance(stype, HexDigestType):
            path = self.root / name / f"{stype.name}.npy"
            if not path.exists():
                return np.zeros((0, stype.width), dtype=np.uint8)
            # Memory-mapped: worker processes on one machine share the pages read-only.
            return np.load(path, mmap_mode="r", allow_pickle=False)
        path = self.root / name / f"{stype.name}.txt"
        return path.read_text().splitlines() if path.exists() else []

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
        file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        with self._locked():
            bank_dir = self.root / name
            existing = self.get(name) if (bank_dir / "meta.json").is_file() else None
            bank_dir.mkdir(exist_ok=True, mode=0o700)
            added = 0
            for type_name_, values in parsed.entries.items():
                added += self._merge(bank_dir, type_name_, values)
            counts, digest = self._describe(bank_dir)
            now = _now()
            source = {
                "file": path.name,
                "sha256": file_sha,
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
                counts=counts,
                sha256=digest,
                sources=(existing.sources if existing else []) + [source],
            )
            self._write_meta(info)
        return AddResult(info, parsed.lines, parsed.accepted, added, parsed.duplicates, parsed.errors)

    def _merge(self, bank_dir: Path, type_name: str, values: set[str]) -> int:
        stype = signal_type(type_name)
        old = self.load(bank_dir.name, type_name)
        if isinstance(stype, HexDigestType):
            new = np.frombuffer(bytes.fromhex("".join(sorted(values))), dtype=np.uint8).reshape(-1, stype.width)
            merged = np.unique(np.concatenate([np.asarray(old), new]), axis=0)
            count_before = len(old)
            del old  # release the memory map before replacing the file
            _write_private(bank_dir / f"{stype.name}.npy", _npy_bytes(np.ascontiguousarray(merged)))
            return len(merged) - count_before
        merged_text = sorted(set(old) | values)
        _write_private(bank_dir / f"{stype.name}.txt", "".join(v + "\n" for v in merged_text).encode())
        return len(merged_text) - len(old)

    def _describe(self, bank_dir: Path) -> tuple[dict[str, int], str]:
        """Count per type, and one checksum over the stored content (what a report cites)."""
        counts: dict[str, int] = {}
        digest = hashlib.sha256()
        for type_name in SIGNAL_TYPES:
            values = self.load(bank_dir.name, type_name)
            if len(values) == 0:
                continue
            counts[type_name] = len(values)
            digest.update(type_name.encode() + b"\0")
            if isinstance(values, np.ndarray):
                digest.update(np.ascontiguousarray(values).tobytes())
            else:
                digest.update("\n".join(values).encode())
        return counts, digest.hexdigest()

    def _write_meta(self, info: BankInfo) -> None:
        _write_private(self.root / info.name / "meta.json", json.dumps(info.to_dict(), indent=2).encode())

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
