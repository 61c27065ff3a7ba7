"""Verdicts from external verification (a hotline, a trust-and-safety team), kept in the bank home
beside the banks: `HOME/verdicts/log.jsonl`, append-only, directory 0700 and file 0600.

Each line is one verdict on one case, with its provenance: the verifier, their reference, when it
was imported, the checksum of the file it came in and its line there. What a verdict names is the
case's identity as hashes (md5, sha1, sha256, pdq, url): never bytes. The verdicts are
python-threatexchange's opinions:

- `confirmed`: the case's hashes go into the bank `confirmed` (`review import` adds them), which
  every later scan and decide round matches: one confirmed image takes its copies everywhere.
- `false_positive`: each (bank, listed entry) that matched the case stops firing on an image of
  the case's digest (or URL): the match is dropped and the row gets `verdict:false_positive`.
- `disputed`: the row gets `verdict:disputed` (review by default).
- `unknown`: recorded, changes nothing.

A verdict may name a listed entry instead of an image (`review import --entry`: a bank and the
entry's tag, as the report names a quarantined entry): `false_positive` disables the entry for
every audit that uses this bank home (its matches stay recorded and stop acting, as above),
`confirmed` releases it from flood quarantine (its matches act however many rows they take),
`disputed` puts it back under quarantine, `unknown` changes nothing. The last such verdict wins.

A decide round is decided with the log's checksum (`RunSpec.verdicts`), so importing verdicts and
running `safeset decide OUT` applies them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VERDICTS = ("confirmed", "false_positive", "disputed", "unknown")
CONFIRMED_BANK = "confirmed"
IDENTITY = ("md5", "sha256", "url")  # what names an image across datasets, strongest first


def entry_tag(entry: str) -> str:
    """What names a listed entry without being it (lists are sensitive, and reports are read by
    people the list's owner never cleared): the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(entry.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def log_path(home: Path | str) -> Path:
    return Path(home) / "verdicts" / "log.jsonl"


def log_sha256(home: Path | str) -> str:
    """The log's checksum ("" when there is none): what a round is decided with."""
    path = log_path(home)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def read_log(home: Path | str) -> list[dict]:
    path = log_path(home)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def imported_files(home: Path | str) -> set[str]:
    return {record["file_sha256"] for record in read_log(home)}


def append(home: Path | str, records: Sequence[Mapping]) -> None:
    """Add records to the log, durably (one write, then fsync); the log is never rewritten."""
    path = log_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def identities(row: Mapping) -> list[tuple[str, str]]:
    """The names of a row's image across datasets (md5, sha256, url): any one of them names it."""
    return [(name, str(row[name]).lower() if name != "url" else str(row[name])) for name in IDENTITY if row.get(name)]


@dataclass
class Verdicts:
    """What the log says a decide round must do, by image identity: each verdict is filed under
    every name its image has, and the last verdict that says something (not `unknown`) wins."""

    false_positive: set[tuple[str, str, str, str]] = field(default_factory=set)  # (bank, entry, kind, identity)
    disputed: set[tuple[str, str]] = field(default_factory=set)  # (kind, identity)
    disabled: set[tuple[str, str]] = field(default_factory=set)  # (bank, entry tag): refuted everywhere
    released: set[tuple[str, str]] = field(default_factory=set)  # (bank, entry tag): never quarantined

    @classmethod
    def load(cls, home: Path | str) -> Verdicts:
        found = cls()
        latest: dict[tuple[str, str], dict] = {}
        entries: dict[tuple[str, str], str] = {}
        for record in read_log(home):
            if record.get("verdict") in ("confirmed", "false_positive", "disputed"):
                if "entry_tag" in record:
                    entries[(record["bank"], record["entry_tag"])] = record["verdict"]
                for named in identities(record):
                    latest[named] = record
        found.disabled = {entry for entry, verdict in entries.items() if verdict == "false_positive"}
        found.released = {entry for entry, verdict in entries.items() if verdict == "confirmed"}
        for named, record in latest.items():
            if record["verdict"] == "false_positive":
                for bank, entry in record.get("matches", []):
                    found.false_positive.add((bank, entry, *named))
            elif record["verdict"] == "disputed":
                found.disputed.add(named)
        return found

    def __bool__(self) -> bool:
        return bool(self.false_positive or self.disputed or self.disabled)

    def _refuted(self, bank: str, entry: str, names: list[tuple[str, str]]) -> bool:
        """Whether a verdict says this match on this image is a false positive ("*": any entry of
        the bank, for a verdict that named its image by hash alone), or its entry is disabled."""
        fp = self.false_positive
        if self.disabled and (bank, entry_tag(entry)) in self.disabled:
            return True
        return any((bank, entry, *n) in fp or (bank, "*", *n) in fp for n in names)

    def apply(self, table, found: Mapping[int, list], noted: dict[int, list[str]]) -> dict[int, set[tuple[str, str]]]:
        """The matches of `found` (row -> matches of a results table) a verdict refutes, by row, as
        (bank, entry): they stay recorded and stop acting. The rows' verdicts go into `noted`."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        columns = {name: table[name].combine_chunks() for name in IDENTITY}
        refuted: dict[int, set[tuple[str, str]]] = {}
        for i in sorted(found) if self.false_positive or self.disabled else ():
            names = identities({name: columns[name][i].as_py() for name in IDENTITY})
            wrong = {(m.bank, m.entry) for m in found[i] if self._refuted(m.bank, m.entry, names)}
            if wrong:
                refuted[i] = wrong
                noted.setdefault(i, []).append("verdict:false_positive")
        disputed = np.zeros(table.num_rows, bool)
        for name in IDENTITY if self.disputed else ():
            wanted = pa.array(sorted(value for kind, value in self.disputed if kind == name), pa.string())
            if len(wanted):
                values = pc.utf8_lower(columns[name]) if name != "url" else columns[name]
                disputed |= pc.fill_null(pc.is_in(values, value_set=wanted), False).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(disputed).tolist():
            noted.setdefault(i, []).append("verdict:disputed")
        return refuted


def pytx_signals(record: Mapping) -> list[tuple[str, str]]:
    """(python-threatexchange's type name, value) of each hash a record holds: a video's MD5 as
    `video_md5` and its frames as `vpdq`, its names for them."""
    video = bool(record.get("vpdq"))
    names = ("md5", "sha1", "sha256", "pdq", "url", "vpdq")
    return [("video_md5" if video and name == "md5" else name, record[name]) for name in names if record.get(name)]


def pytx_lines(records: Iterable[Mapping]) -> list[str]:
    """`<type> <hash>` lines (python-threatexchange's local file) of the records' hashes."""
    return [f"{kind} {value}" for record in records for kind, value in pytx_signals(record)]
