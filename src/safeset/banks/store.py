"""The local bank store: named, versioned hash lists under `--home` (env SAFESET_HOME).

Layout, every directory 0700 and every file 0600 because the lists are sensitive:

    HOME/banks/NAME/settings.json          label and enabled flag (they change no content)
    HOME/banks/NAME/current                the version directory in use, e.g. "v000003"
    HOME/banks/NAME/v000003/meta.json      version, dates, sources and their checksums, count and
                                           checksum per signal type, checksum of the whole bank
    HOME/banks/NAME/v000003/md5.npy        exact digests (md5, sha1, sha256, url_md5): sorted, words layout
    HOME/banks/NAME/v000003/pdq.npy        PDQ: sorted (N, 32) uint8 rows
    HOME/banks/NAME/v000003/pdq.s16.orders.npy, pdq.s16.starts.npy
                                           PDQ search tables (see `index.PdqIndex`), for lists of 4096+,
                                           named by their slot count (11 from about 8M hashes)
    HOME/banks/NAME/v000003/url.txt        text types (url, domain): sorted normalised values, one per line

(see `hexarray` for the two array layouts). A version directory is never changed once it is in
use: adding a list writes a whole new one (types it does not touch are hard links to the old
files), syncs it to disk, and only then switches `current` to it, in one rename. A reader that
loads a bank, on this machine or any that shares the store, sees one version whole, never half of
an update. The previous version is kept, so a scan that started on it finds it by its checksum
(`version`), and older ones are deleted. Re-adding a file whose content the bank already holds
changes nothing. Arrays are memory-mapped when loaded, so scan workers share one copy.

Stores written before versions had directories (meta.json and the lists directly in NAME/) are
read as they are and moved into a version directory at their next change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..atomic import atomic_writer, fsync_dir
from ..errors import BadInputError, UsageError
from .hexarray import RowBuffer, sort_unique, words_to_rows, write_rows, write_words
from .index import PdqIndex, build_tables, slots_for, tables_slots
from .listfile import LineError, hash_files, parse_list
from .signal_types import SIGNAL_TYPES, HexDigestType, Keyword, Pdq, SignalType, signal_type
from .verdicts import CONFIRMED_BANK

log = logging.getLogger("safeset.banks")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION_DIR = re.compile(r"v\d{6,}")
_LEGACY_TABLES = ("pdq.orders.npy", "pdq.starts.npy")  # 16 slots, before the count depended on the size


def _table_names(slots: int) -> tuple[str, str]:
    return f"pdq.s{slots}.orders.npy", f"pdq.s{slots}.starts.npy"


def _is_pdq_table(name: str) -> bool:
    return name.startswith("pdq.") and name.endswith((".orders.npy", ".starts.npy"))


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
    directory: str = field(default="", compare=False)  # the version's files; not part of its record

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "directory"}


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
    """A list's SHA-256; a folder's (of vpdq hash files): of each file's relative name and SHA-256."""
    if path.is_dir():
        files = hash_files(path)
        lines = "".join(f"{_file_sha256(f)}  {f.relative_to(path).as_posix()}\n" for f in files)
        return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()
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


def _file_name(stype: SignalType) -> str:
    return f"{stype.name}.{'npy' if isinstance(stype, HexDigestType) else 'txt'}"


class BankStore:
    def __init__(self, home: Path | str | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.root = self.home / "banks"

    # ---- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self._current_dir(p) is not None)

    def list(self) -> list[BankInfo]:
        return [self.get(name) for name in self.names()]

    def _current_dir(self, bank_dir: Path) -> Path | None:
        """The version directory `current` names; a store of before versions: the bank's own."""
        try:
            current = (bank_dir / "current").read_text().strip()
        except FileNotFoundError:
            return bank_dir if (bank_dir / "meta.json").is_file() else None
        return bank_dir / current if _VERSION_DIR.fullmatch(current) else None

    def get(self, name: str) -> BankInfo:
        """The bank's current version."""
        directory = self._current_dir(self.root / name) if _NAME.fullmatch(name) else None
        if directory is None:
            raise UsageError(f"no bank named {name!r} in {self.root} (see `safeset bank list`)")
        return self._info(name, directory)

    def _info(self, name: str, directory: Path) -> BankInfo:
        meta = json.loads((directory / "meta.json").read_text())
        settings_path = self.root / name / "settings.json"
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        label, enabled = meta.pop("label", ""), meta.pop("enabled", True)  # in meta.json before versions
        meta.pop("name", None)
        return BankInfo(
            **meta,
            name=name,
            label=settings.get("label", label),
            enabled=settings.get("enabled", enabled),
            directory=str(directory),
        )

    def version(self, name: str, sha256: str) -> BankInfo | None:
        """The version of bank `name` whose content has this checksum, if the store still keeps it
        (the current one, or the one before: a scan that began before an update finishes on it)."""
        bank_dir = self.root / name
        current = self._current_dir(bank_dir) if _NAME.fullmatch(name) else None
        if current is None:
            return None
        candidates = [current] + sorted((p for p in bank_dir.iterdir() if _VERSION_DIR.fullmatch(p.name)), reverse=True)
        for directory in candidates:
            try:
                info = self._info(name, directory)
            except FileNotFoundError:  # deleted meanwhile
                continue
            if info.sha256 == sha256:
                return info
        return None

    def resolve(self, names: Sequence[str] | None) -> list[BankInfo]:
        """The banks a scan uses, in name order (so that the order they are asked for in changes
        nothing): those named, or every enabled bank when none are named. The bank of confirmed
        verdicts (`verdicts.CONFIRMED_BANK`, which `review import` fills) is always among them
        while it is enabled: a confirmed image is matched everywhere from then on."""
        if not names:
            return [b for b in self.list() if b.enabled]
        confirmed = CONFIRMED_BANK in self.names() and self.get(CONFIRMED_BANK).enabled
        banks = [self.get(n) for n in sorted(set(names) | ({CONFIRMED_BANK} if confirmed else set()))]
        for bank in banks:
            if not bank.enabled:
                raise UsageError(f"bank {bank.name!r} is disabled; `safeset bank enable {bank.name}` first")
        return banks

    def _bank(self, bank: BankInfo | str) -> BankInfo:
        return bank if isinstance(bank, BankInfo) else self.get(bank)

    def load(self, bank: BankInfo | str, type_name: str) -> np.ndarray | list[str]:
        """A bank version's stored values of one type, memory-mapped: (W, N) words for exact
        digests, (N, 32) rows for PDQ, sorted strings for text types. `bank`: a version, or a
        name for the current one."""
        stype = signal_type(type_name)
        path = Path(self._bank(bank).directory) / _file_name(stype)
        if isinstance(stype, HexDigestType):
            if not path.exists():
                return np.zeros((0, 32), np.uint8) if isinstance(stype, Pdq) else np.zeros((2, 0), np.uint64)
            return np.load(path, mmap_mode="r", allow_pickle=False)
        return path.read_text().splitlines() if path.exists() else []

    def load_rows(self, bank: BankInfo | str, stype: HexDigestType) -> np.ndarray:
        """Stored digests of one type as (N, width) byte rows, whatever their layout on disk."""
        stored = self.load(bank, stype.name)
        return np.asarray(stored) if isinstance(stype, Pdq) else words_to_rows(stored, stype.width)

    def load_tables(self, bank: BankInfo | str) -> tuple[np.ndarray, np.ndarray] | None:
        """A PDQ list's stored search tables, memory-mapped; None where there are none (small
        lists, or a store written before they were kept: the index then builds its own).

        The tables are named by their slot count (`pdq.s11.orders.npy`). A version whose tables
        have another count than its list's size now gets (`pdq.orders.npy`: 16 slots, written
        before the count depended on the size, a seventh of the speed at 10M) gets tables of the
        right count beside them, once: new files, derived from the hashes, so nothing a reader has
        mapped changes. A store this process cannot write keeps using the tables it has."""
        info = self._bank(bank)
        directory = Path(info.directory)
        hashes = self.load(info, "pdq")
        wanted = slots_for(len(hashes))
        found = self._tables(directory, _table_names(wanted), len(hashes))
        if found is None and len(hashes) >= PdqIndex.MIH_MIN_ENTRIES:
            try:
                with self._locked():
                    found = self._tables(directory, _table_names(wanted), len(hashes))  # written meanwhile?
                    if found is None:
                        self._write_tables(directory, hashes)
                        found = self._tables(directory, _table_names(wanted), len(hashes))
            except OSError as exc:
                log.warning("bank %s: PDQ search tables not re-cut (%s): the old ones serve", info.name, exc.strerror)
        return found or self._tables(directory, _LEGACY_TABLES, len(hashes))

    @staticmethod
    def _tables(directory: Path, names: tuple[str, str], n: int) -> tuple[np.ndarray, np.ndarray] | None:
        paths = [directory / name for name in names]
        if not all(path.is_file() for path in paths):
            return None
        orders, starts = (np.load(path, mmap_mode="r", allow_pickle=False) for path in paths)
        return (orders, starts) if tables_slots((orders, starts), n) is not None else None

    @staticmethod
    def _write_tables(directory: Path, hashes: np.ndarray) -> None:
        slots = slots_for(len(hashes))
        for name, table in zip(_table_names(slots), build_tables(hashes, slots), strict=True):
            with atomic_writer(directory / name, mode=0o600) as fh:
                np.save(fh, table, allow_pickle=False)

    # ---- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's lock. HOME may be a directory the user made (its permissions are theirs);
        `banks/` is safeset's own, and private."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.mkdir(exist_ok=True, mode=0o700)
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

        Bad lines are skipped and returned; with `strict`, any bad line refuses the whole file. A
        file with no valid value at all is refused, and creates no bank."""
        if not _NAME.fullmatch(name):
            raise UsageError(f"bank name {name!r} must be letters, digits, '_', '.', '-' (max 64)")
        path = Path(path)
        if not path.is_file() and not path.is_dir():
            raise BadInputError(path, "no such file")
        parsed = parse_list(path, type_name)
        if parsed.errors and (strict or not parsed.accepted):
            first = parsed.errors[0]
            why = "--strict refuses the file" if strict else "no line holds a valid value"
            raise BadInputError(path, f"{first.reason} ({len(parsed.errors)} bad line(s); {why})", line=first.line)
        file_sha256 = _file_sha256(path)
        with self._locked():
            bank_dir = self.root / name
            existing_dir = self._current_dir(bank_dir)
            existing = self._info(name, existing_dir) if existing_dir is not None else None
            if existing is not None and any(s["sha256"] == file_sha256 for s in existing.sources):
                # this very file is in the bank already: nothing to add, no new version
                return AddResult(existing, parsed.lines, parsed.accepted, 0, parsed.text_duplicates, parsed.errors)
            bank_dir.mkdir(exist_ok=True, mode=0o700)
            numbers = [int(p.name[1:]) for p in bank_dir.iterdir() if _VERSION_DIR.fullmatch(p.name)]
            final = bank_dir / f"v{max(numbers, default=0) + 1:06d}"
            staging = bank_dir / f".{final.name}.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)
            counts = dict(existing.counts) if existing else {}
            checksums = dict(existing.checksums) if existing else {}
            added, duplicates = 0, parsed.text_duplicates
            for stype_name, buffer in parsed.hex.items():
                new, dup = self._merge_hex(existing, staging, signal_type(stype_name), buffer, counts, checksums)
                added, duplicates = added + new, duplicates + dup
            for stype_name, values in parsed.text.items():
                added += self._merge_text(existing, staging, signal_type(stype_name), values, counts, checksums)
            if existing is not None:  # what this file does not touch stays as it was: linked, not copied
                for entry in Path(existing.directory).iterdir():
                    unfinished = entry.name.endswith(".partial")  # a table write killed halfway
                    stale = _is_pdq_table(entry.name) and "pdq" in parsed.hex  # tables of the old hashes
                    if entry.is_file() and entry.name != "meta.json" and not (staging / entry.name).exists():
                        if not (unfinished or stale):
                            os.link(entry, staging / entry.name)
            now = _now()
            source = {
                "file": path.name,
                "sha256": file_sha256,
                "added": now,
                "lines": parsed.lines,
                "accepted": parsed.accepted,
                "rejected": len(parsed.errors),
            }
            content = _bank_sha256(checksums)
            info = BankInfo(
                name=name,
                label=existing.label if existing else "",
                enabled=existing.enabled if existing else True,
                # a file that adds nothing new leaves the content, and so its version, as it was
                version=1 if existing is None else existing.version + (content != existing.sha256),
                created=existing.created if existing else now,
                updated=now,
                counts={t: counts[t] for t in SIGNAL_TYPES if counts.get(t)},
                sha256=content,
                checksums={t: checksums[t] for t in SIGNAL_TYPES if t in checksums},
                sources=(existing.sources if existing else []) + [source],
            )
            record = {k: v for k, v in info.to_dict().items() if k not in ("name", "label", "enabled")}
            with atomic_writer(staging / "meta.json", mode=0o600) as fh:
                fh.write(json.dumps(record, indent=2).encode())
            for entry in staging.iterdir():
                _fsync(entry)
            os.rename(staging, final)
            fsync_dir(bank_dir)
            if label is not None or existing is None or existing_dir == bank_dir:
                self._write_settings(name, label if label is not None else info.label, info.enabled)
            with atomic_writer(bank_dir / "current", mode=0o600) as fh:
                fh.write(final.name.encode())
            self._forget_old(bank_dir, keep=(final.name, Path(existing.directory).name if existing else ""))
            info = self._info(name, final)
        return AddResult(info, parsed.lines, parsed.accepted, added, duplicates, parsed.errors)

    def _merge_hex(
        self, existing: BankInfo | None, staging: Path, stype: HexDigestType, buffer: RowBuffer, counts, checksums
    ) -> tuple[int, int]:
        """Merge new digests into the stored ones; (newly added, duplicates within the file)."""
        new = buffer.rows
        distinct = sort_unique(new)
        before = counts.get(stype.name, 0)
        if before:
            combined = RowBuffer(stype.width, before + distinct)
            combined.append(self.load_rows(existing, stype))
            combined.append(new[:distinct])
            rows = combined.rows
            total = sort_unique(rows)
        else:
            rows, total = new, distinct
        rows = rows[:total]
        with atomic_writer(staging / _file_name(stype), mode=0o600) as fh:
            (write_rows if isinstance(stype, Pdq) else write_words)(fh, rows)
        if isinstance(stype, Pdq) and len(rows) >= PdqIndex.MIH_MIN_ENTRIES:
            self._write_tables(staging, rows)  # kept beside the hashes: built once here, mapped by every worker
        counts[stype.name] = total
        checksums[stype.name] = _content_sha256(stype.name, rows)
        return total - before, len(new) - distinct

    def _merge_text(self, existing: BankInfo | None, staging: Path, stype, values: set[str], counts, checksums) -> int:
        old = self.load(existing, stype.name) if existing else []
        if isinstance(stype, Keyword):
            values = _new_terms(old, values, len(existing.sources) + 1 if existing else 1)
        merged = sorted(set(old) | values)
        with atomic_writer(staging / _file_name(stype), mode=0o600) as fh:
            fh.write("".join(v + "\n" for v in merged).encode())
        counts[stype.name] = len(merged)
        checksums[stype.name] = _content_sha256(stype.name, merged)
        return len(merged) - len(old)

    def _forget_old(self, bank_dir: Path, keep: tuple[str, ...]) -> None:
        """Delete the versions before the previous one, what killed adds left half-written, and a
        store's files of before versions (moved into the new version by now)."""
        for entry in bank_dir.iterdir():
            if (
                entry.is_dir()
                and entry.name not in keep
                and (_VERSION_DIR.fullmatch(entry.name) or ".partial-" in entry.name)
            ):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_file() and entry.suffix in (".npy", ".txt") or entry.name == "meta.json":
                entry.unlink()

    def _write_settings(self, name: str, label: str, enabled: bool) -> None:
        with atomic_writer(self.root / name / "settings.json", mode=0o600) as fh:
            fh.write(json.dumps({"label": label, "enabled": enabled}, indent=2).encode())

    def set_enabled(self, name: str, enabled: bool) -> BankInfo:
        with self._locked():
            info = self.get(name)
            self._write_settings(name, info.label, enabled)
        return replace(info, enabled=enabled)

    def remove(self, name: str) -> None:
        with self._locked():
            self.get(name)
            shutil.rmtree(self.root / name)


def _new_terms(old: list[str], values: set[str], source: int) -> set[str]:
    """Keyword entries ("TERM\tline:N") of a file that the bank does not list yet; those of the
    bank's second file on name it too (`file:2:line:N`), so that every reference is unique."""
    known = {entry.partition("\t")[0] for entry in old}
    fresh = (entry.partition("\t") for entry in values)
    return {f"{term}\t{ref if source == 1 else f'file:{source}:{ref}'}" for term, _, ref in fresh if term not in known}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
