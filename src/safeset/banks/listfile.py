"""Reading hash-list files in the three shapes they arrive in.

1. one value per line, its type given by `--type`;
2. `<type> <value>` per line (python-threatexchange's local_file format);
3. CSV with a header naming a value column (`hash`, `value`, `signal`, or a type name such as `md5`)
   and optionally a type column (`type`, `signal_type`, `hash_type`).

Blank lines and lines starting with `#` are skipped. Every bad line is reported by number and reason;
the offending value is never echoed, because lists are sensitive.

Lists run to tens of millions of lines (Re-LAION matched 16.2M hashes), so line files are read in
blocks, and the common shape, one bare hex digest per line, is validated and decoded with numpy
for a whole block at once; any other line takes the general path with its own line number.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from .hexarray import RowBuffer, parse_hex_rows
from .signal_types import HexDigestType, InvalidEntry, Pdq, SignalType, signal_type

_VALUE_COLUMNS = ("hash", "value", "signal", "signal_value", "hash_value")
_TYPE_COLUMNS = ("type", "signal_type", "hash_type")
_BLOCK = 1 << 21


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ParsedList:
    """Valid values per signal type (hex digests as byte rows, others as text), and the bad lines."""

    hex: dict[str, RowBuffer] = field(default_factory=dict)
    text: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    errors: list[LineError] = field(default_factory=list)
    lines: int = 0  # lines holding a value (good or bad)
    text_duplicates: int = 0  # repeated text values (digest duplicates are counted when sorted)
    expected: int = 1024  # how many values to reserve room for

    def reject(self, line: int, reason: str) -> None:
        self.lines += 1
        self.errors.append(LineError(line, reason))

    def rows(self, stype: HexDigestType) -> RowBuffer:
        if stype.name not in self.hex:
            self.hex[stype.name] = RowBuffer(stype.width, self.expected)
        return self.hex[stype.name]

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
        if isinstance(stype, HexDigestType):
            self.rows(stype).append_hex(normal)
        else:
            bucket = self.text[stype.name]
            self.text_duplicates += normal in bucket
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
        """Valid values, duplicates included."""
        return sum(len(r) for r in self.hex.values()) + sum(len(v) for v in self.text.values())

    def values(self, type_name: str) -> set[str]:
        """The distinct valid values of one type as text (for tests and small lists)."""
        if type_name in self.hex:
            return {row.tobytes().hex() for row in self.hex[type_name].rows}
        return set(self.text.get(type_name, ()))


def parse_list(path: Path, type_name: str | None = None) -> ParsedList:
    """Parse a list file. A file that is not text at all raises `BadInputError`; bad lines do not."""
    forced = _resolve_type(path, type_name)
    try:
        with open(path, "rb") as fh:
            first = _first_meaningful_line(fh.read(1 << 16))
    except OSError as exc:
        raise BadInputError(path, f"cannot read: {exc.strerror}") from None
    if path.suffix.lower() == ".csv" or _names_columns(first):
        return _parse_csv(path, forced)
    return _parse_lines(path, forced)


def _first_meaningful_line(head: bytes) -> str:
    text = head.decode("utf-8-sig", "replace")
    return next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")


def _names_columns(line: str) -> bool:
    """Whether a first line is a CSV header (so a URL with a comma in it is not mistaken for one)."""
    if "," not in line:
        return False
    known = set(_VALUE_COLUMNS) | set(_TYPE_COLUMNS)
    for cell in (c.strip().lower() for c in line.split(",")):
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


def _parse_lines(path: Path, forced: SignalType | None) -> ParsedList:
    parsed = ParsedList()
    fast = forced if isinstance(forced, HexDigestType) else None
    if fast is not None:
        parsed.expected = path.stat().st_size // (fast.hex_chars + 1) + 1
    number = 1  # line number of the first line of the next chunk
    with open(path, "rb") as fh:
        carry = b""
        while block := fh.read(_BLOCK):
            data = carry + block
            cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits for the next block
            chunk, carry = data[:cut], data[cut:]
            if chunk:
                _parse_block(path, chunk, number, forced, fast, parsed)
                number += chunk.count(b"\n")
        if carry:  # a last line without a newline
            _parse_block(path, carry, number, forced, fast, parsed)
    return parsed


def _parse_block(path: Path, chunk: bytes, number: int, forced, fast: HexDigestType | None, parsed: ParsedList) -> None:
    """Lines of `chunk` (the first is line `number`): bare hex digests of the forced type in bulk,
    everything else one by one."""
    raw = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    if len(ends) == 0 or ends[-1] != len(raw) - 1:
        ends = np.append(ends, len(raw))
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts
    has_cr = np.zeros(len(ends), dtype=bool)
    nonempty = lengths > 0
    has_cr[nonempty] = raw[ends[nonempty] - 1] == 13
    lengths = lengths - has_cr
    slow = np.ones(len(ends), dtype=bool)
    if fast is not None:
        candidates = np.flatnonzero(lengths == fast.hex_chars)
        if len(candidates):
            chars = raw[starts[candidates, None] + np.arange(fast.hex_chars, dtype=np.int64)[None, :]]
            rows, valid = parse_hex_rows(chars)
            if isinstance(fast, Pdq):  # all-zero PDQ lines are bad: leave them to the general path
                blank = ~rows.any(axis=1)
                valid[np.flatnonzero(valid)[blank]] = False
                rows = rows[~blank]
            parsed.rows(fast).append(rows)
            parsed.lines += len(rows)
            slow[candidates[valid]] = False
    for i in np.flatnonzero(slow).tolist():
        line = bytes(raw[starts[i] : starts[i] + lengths[i]])
        try:
            text = line.decode("utf-8-sig" if number + i == 1 else "utf-8")
        except UnicodeDecodeError:
            raise BadInputError(path, "not UTF-8 text", line=number + i) from None
        _parse_line(text, number + i, forced, parsed)


def _parse_line(text: str, number: int, forced: SignalType | None, parsed: ParsedList) -> None:
    line = text.strip()
    if not line or line.startswith("#"):
        return
    tokens = line.split()
    if len(tokens) == 1:
        parsed.add(number, forced, tokens[0])
    elif len(tokens) == 2:
        parsed.add_named(number, tokens[0], forced, tokens[1])
    else:
        parsed.reject(number, "expected '<hash>' or '<type> <hash>'")


def _parse_csv(path: Path, forced: SignalType | None) -> ParsedList:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(path, "not UTF-8 text", line=raw[: exc.start].count(b"\n") + 1) from None
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
