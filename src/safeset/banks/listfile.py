"""Reading hash-list files in the three shapes they arrive in.

1. one value per line, its type given by `--type`;
2. `<type> <value>` per line (python-threatexchange's local_file format);
3. CSV with a header naming a value column (`hash`, `value`, `signal`, or a type name such as `md5`)
   and optionally a type column (`type`, `signal_type`, `hash_type`).

Blank lines and lines starting with `#` are skipped. Every bad line is reported by number and reason;
the offending value is never echoed, because lists are sensitive.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from .signal_types import InvalidEntry, SignalType, signal_type

_VALUE_COLUMNS = ("hash", "value", "signal", "signal_value", "hash_value")
_TYPE_COLUMNS = ("type", "signal_type", "hash_type")


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ParsedList:
    entries: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    errors: list[LineError] = field(default_factory=list)
    lines: int = 0  # lines holding a value (good or bad)
    duplicates: int = 0

    def reject(self, line: int, reason: str) -> None:
        self.lines += 1
        self.errors.append(LineError(line, reason))

    def add(self, line: int, stype: SignalType | None, value: str) -> None:
        if stype is None:
            self.reject(line, "no signal type: pass --type or name it on the line")
            return
        try:
            normal = stype.normalise(value)
        except InvalidEntry as exc:
            self.reject(line, str(exc))
            return
        self.lines += 1
        bucket = self.entries[stype.name]
        if normal in bucket:
            self.duplicates += 1
        bucket.add(normal)

    def add_named(self, line: int, type_token: str, forced: SignalType | None, value: str) -> None:
        """Add a value whose type is named on its own line (a type token or a CSV type cell)."""
        try:
            stype = signal_type(type_token)
        except KeyError:
            self.reject(line, f"unknown signal type {type_token[:32]!r}")
            return
        if forced is not None and stype.name != forced.name:
            self.reject(line, f"type {stype.name} differs from --type {forced.name}")
            return
        self.add(line, stype, value)

    @property
    def accepted(self) -> int:
        return sum(len(v) for v in self.entries.values())


def parse_list(path: Path, type_name: str | None = None) -> ParsedList:
    """Parse a list file. A file that is not text at all raises `BadInputError`; bad lines do not."""
    forced = _resolve_type(path, type_name)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise BadInputError(path, "not UTF-8 text", line=line) from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read: {exc.strerror}") from None
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    if path.suffix.lower() == ".csv" or _names_columns(first):
        return _parse_csv(path, text, forced)
    return _parse_lines(text, forced)


def _names_columns(line: str) -> bool:
    """Whether a first line is a CSV header (so a URL with a comma in it is not mistaken for one)."""
    if "," not in line:
        return False
    cells = [c.strip().lower() for c in line.split(",")]
    known = set(_VALUE_COLUMNS) | set(_TYPE_COLUMNS)
    for cell in cells:
        if cell in known:
            return True
        try:
            signal_type(cell)
            return True
        except KeyError:
            pass
    return False


def _resolve_type(path: Path, type_name: str | None) -> SignalType | None:
    if type_name is None:
        return None
    try:
        return signal_type(type_name)
    except KeyError:
        raise BadInputError(path, f"unknown signal type {type_name!r}") from None


def _parse_lines(text: str, forced: SignalType | None) -> ParsedList:
    parsed = ParsedList()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        if len(tokens) == 1:
            parsed.add(number, forced, tokens[0])
        elif len(tokens) == 2:
            parsed.add_named(number, tokens[0], forced, tokens[1])
        else:
            parsed.reject(number, "expected '<hash>' or '<type> <hash>'")
    return parsed


def _parse_csv(path: Path, text: str, forced: SignalType | None) -> ParsedList:
    reader = csv.reader(io.StringIO(text))
    header = None
    for row in reader:
        if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#"):
            header = [c.strip().lower() for c in row]
            break
    if header is None:
        return ParsedList()
    typed_columns: list[tuple[int, SignalType]] = []
    for i, name in enumerate(header):
        try:
            typed_columns.append((i, signal_type(name)))
        except KeyError:
            pass
    value_col = next((header.index(c) for c in _VALUE_COLUMNS if c in header), None)
    type_col = next((header.index(c) for c in _TYPE_COLUMNS if c in header), None)
    if value_col is None and not typed_columns:
        raise BadInputError(
            path,
            "CSV header names no hash column (expected one of "
            + ", ".join(_VALUE_COLUMNS)
            + " or a signal type such as md5)",
            line=reader.line_num,
        )
    if value_col is not None and type_col is None and forced is None:
        raise BadInputError(path, "CSV has no type column: pass --type", line=reader.line_num)

    parsed = ParsedList()
    for row in reader:
        number = reader.line_num
        if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != len(header):
            parsed.reject(number, f"{len(row)} fields, header has {len(header)}")
            continue
        if value_col is not None and type_col is not None:
            parsed.add_named(number, row[type_col], forced, row[value_col])
        elif value_col is not None:
            parsed.add(number, forced, row[value_col])
        for col, stype in typed_columns:
            if row[col].strip():
                parsed.add(number, stype, row[col])
    return parsed
