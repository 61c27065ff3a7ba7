"""Reading hash-list files in the three shapes they arrive in.

1. one value per line, its type given by `--type`;
2. `<type> <value>` per line (python-threatexchange's local_file format);
3. CSV with a header naming a value column (`hash`, `value`, `signal`, or a type name such as `md5`)
   and optionally a type column (`type`, `signal_type`, `hash_type`) and an id column (`id`,
   `video_id`, ...: what a match of a listed video records).

Listed videos (`vpdq`) come as python-threatexchange's signals (`vpdq [...]` lines, or with --type
vpdq bare `[...]` lines or a CSV column), or as vpdq's hash files, one video a file
(`frame,quality,pdq,timestamp` lines), alone or a folder of them. A video is named in matches by
its id, its file's path, or `FILE:LINE`.

Blank lines and lines starting with `#` are skipped. Every bad line is reported by number and reason;
the offending value is never echoed, because lists are sensitive.

Lists run to tens of millions of lines (Re-LAION matched 16.2M hashes), so line files are read in
blocks, and the common shape, one bare hex digest per line, is validated and decoded with numpy
for a whole block at once; any other line takes the general path with its own line number.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..csvrecords import csv_records
from ..errors import BadInputError
from .hexarray import RowBuffer, parse_hex_rows
from .signal_types import HexDigestType, InvalidEntry, Keyword, Pdq, SignalType, Vpdq, signal_type
from .vpdq import listed_video

_VALUE_COLUMNS = ("hash", "value", "signal", "signal_value", "hash_value")
_TYPE_COLUMNS = ("type", "signal_type", "hash_type")
_ID_COLUMNS = ("id", "video_id", "signal_id", "content_id", "name")
_BLOCK = 1 << 21
MAX_LINE = 64 * 1024  # longer lines are bad lines: no hash, URL or domain is this long
# A line (or CSV field) holding a listed video's vPDQ signal (`vpdq [...]`, or `[...]`) may be longer:
# about 75 bytes a frame at a frame a second, so 16 MiB is some 60 hours of video.
MAX_SIGNAL_LINE = 16 << 20


def _line_limit(start: bytes | str) -> int:
    """The longest a line (or field) starting with `start` may be."""
    head = start[:8].lstrip()
    return MAX_SIGNAL_LINE if head[:1] in (b"[", "[") or head[:5].lower() in (b"vpdq ", "vpdq ") else MAX_LINE


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
    source: str = ""  # the file's name: a listed video without an id is named `FILE:LINE`

    def reject(self, line: int, reason: str) -> None:
        self.lines += 1
        self.errors.append(LineError(line, reason))

    def rows(self, stype: HexDigestType) -> RowBuffer:
        if stype.name not in self.hex:
            self.hex[stype.name] = RowBuffer(stype.width, self.expected)
        return self.hex[stype.name]

    def add(self, line: int, stype: SignalType | None, value: str, label: str | None = None) -> None:
        """`label`: what a match of a listed video records (its id), else `FILE:LINE`."""
        if stype is None:
            self.reject(line, "no signal type: pass --type or name it on the line")
            return
        try:
            normal = stype.normalise(value)
        except InvalidEntry as exc:
            self.reject(line, str(exc))
            return
        self.lines += 1
        if isinstance(stype, Vpdq):
            normal = listed_video(label or f"{self.source}:{line}", normal)
        if isinstance(stype, HexDigestType):
            self.rows(stype).append_hex(normal)
        else:
            bucket = self.text[stype.name]
            self.text_duplicates += normal in bucket
            bucket.add(normal)

    def add_named(
        self, line: int, type_token: str, forced: SignalType | None, value: str, label: str | None = None
    ) -> None:
        """Add a value whose type is named on its own line (a type token or a CSV type cell)."""
        try:
            stype = signal_type(type_token)
        except KeyError:
            self.reject(line, _unknown_type(type_token))
            return
        if forced is not None and stype.name != forced.name:
            self.reject(line, f"type {stype.name} differs from --type {forced.name}")
            return
        if isinstance(stype, Keyword):  # a term is recorded by its line, which only a list of terms keeps
            self.reject(line, "keyword terms are read from a list of terms: pass --type keyword")
            return
        self.add(line, stype, value, label)

    @property
    def accepted(self) -> int:
        """Valid values, duplicates included."""
        return sum(len(r) for r in self.hex.values()) + sum(len(v) for v in self.text.values())

    def values(self, type_name: str) -> set[str]:
        """The distinct valid values of one type as text (for tests and small lists)."""
        if type_name in self.hex:
            return {row.tobytes().hex() for row in self.hex[type_name].rows}
        return set(self.text.get(type_name, ()))


def _unknown_type(token: str) -> str:
    """The reason for a type token that names no type. The token is never shown: it may be a
    listed value (a hash, or the first word of a term in a list read without --type keyword)."""
    return "unknown signal type (not shown: it may be a listed value); pass --type, e.g. --type keyword for terms"


def parse_list(path: Path, type_name: str | None = None) -> ParsedList:
    """Parse a list file (or, for `vpdq`, a folder of vpdq hash files). Bad lines (not UTF-8, too
    long, not a value) are reported, not raised."""
    forced = _resolve_type(path, type_name)
    if path.is_dir():
        if not isinstance(forced, Vpdq):
            raise BadInputError(path, "a folder is read as vpdq hash files, one video a file: pass --type vpdq")
        return _parse_hash_files(path)
    try:
        with open(path, "rb") as fh:
            first = _first_meaningful_line(fh.read(1 << 16))
    except OSError as exc:
        raise BadInputError(path, f"cannot read: {exc.strerror}") from None
    if isinstance(forced, Keyword):
        return _parse_terms(path)
    if isinstance(forced, Vpdq) and _HASH_FILE_LINE.match(first):
        parsed = ParsedList(source=path.name)
        _parse_hash_file(path, path.name, parsed)
        return parsed
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
    parsed = ParsedList(source=path.name)
    fast = forced if isinstance(forced, HexDigestType) else None
    if fast is not None:
        parsed.expected = path.stat().st_size // (fast.hex_chars + 1) + 1
    with open(path, "rb") as fh:
        for number, chunk in _line_blocks(fh, parsed):
            _parse_block(chunk, number, forced, fast, parsed)
    return parsed


def _parse_terms(path: Path) -> ParsedList:
    """A keyword list: one term or phrase per line, the whole line (`#` lines are comments). Each
    distinct term is kept with the line it is first listed on, the `line:N` its matches record."""
    parsed = ParsedList(source=path.name)
    first_line: dict[str, int] = {}
    stype = signal_type("keyword")
    with open(path, "rb") as fh:
        for number, chunk in _line_blocks(fh, parsed):
            for offset, raw in enumerate(chunk.split(b"\n")[: chunk.count(b"\n") + (not chunk.endswith(b"\n"))]):
                line = number + offset
                if len(raw) > MAX_LINE:
                    parsed.reject(line, f"line too long (over {MAX_LINE // 1024} KiB)")
                    continue
                try:
                    text = raw.decode("utf-8-sig" if line == 1 else "utf-8").strip()
                except UnicodeDecodeError:
                    parsed.reject(line, "not UTF-8 text")
                    continue
                if not text or text.startswith("#"):
                    continue
                try:
                    term = stype.normalise(text)
                except InvalidEntry as exc:
                    parsed.reject(line, str(exc))
                    continue
                parsed.lines += 1
                parsed.text_duplicates += term in first_line
                first_line.setdefault(term, line)
    if first_line:
        parsed.text["keyword"] = {f"{term}\tline:{line}" for term, line in first_line.items()}
    return parsed


# A line of a vpdq hash file: `frame,quality,pdq,timestamp`.
_HASH_FILE_LINE = re.compile(r"\s*\d+\s*,\s*\d+\s*,\s*[0-9A-Fa-f]{64}\s*,")
MAX_HASH_FILE = 64 << 20  # bytes of one video's hash file: about 200 hours at a frame a second


def hash_files(folder: Path) -> list[Path]:
    """The files of a folder of vpdq hash files, in name order: every file under it but hidden ones
    (a name starting with "." below the folder)."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(folder).parts)
    )


def _parse_hash_files(folder: Path) -> ParsedList:
    """Every file of `folder` (`hash_files`) a video's vpdq hash file, named by its path in the
    folder; a bad file is reported as a line (its place in the folder), by its path and its own
    line, and the rest read."""
    parsed = ParsedList(source=folder.name)
    for number, path in enumerate(hash_files(folder), start=1):
        _parse_hash_file(path, path.relative_to(folder).as_posix(), parsed, number)
    return parsed


def _parse_hash_file(path: Path, label: str, parsed: ParsedList, number: int | None = None) -> None:
    """One video's hash file, as one entry of `parsed`; `number`: its place in a folder, reported
    as its line, its name leading the reason."""
    from .vpdq import safe_label, signal_of_hash_file

    where = f"{safe_label(label)}: " if number is not None else ""
    number = number or 1
    try:
        if path.stat().st_size > MAX_HASH_FILE:
            parsed.reject(number, f"{where}larger than {MAX_HASH_FILE >> 20} MiB: not a vpdq hash file")
            return
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        parsed.reject(number, f"{where}cannot read: {exc.strerror}")
        return
    except UnicodeDecodeError:
        parsed.reject(number, f"{where}not UTF-8 text")
        return
    try:
        signal = signal_of_hash_file(text.splitlines())
    except InvalidEntry as exc:
        parsed.reject(number, f"{where}{exc}")
        return
    parsed.lines += 1
    entry = listed_video(label, signal)
    parsed.text_duplicates += entry in parsed.text["vpdq"]
    parsed.text["vpdq"].add(entry)


def _line_blocks(fh, parsed: ParsedList) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, block of whole lines ending in "\n") over a file whose lines may
    end in "\n", "\r\n" or a lone "\r". A line longer than its limit (`_line_limit`) is rejected
    as it streams past, never held (a 256 MiB line cost 33 s when it was gathered block by block)."""
    number = 1
    carry = b""
    skipping = 0  # inside a line too long to keep: its limit
    cr_pending = False  # the last block ended in "\r": a "\n" starting the next belongs to it
    while block := fh.read(_BLOCK):
        if cr_pending and block.startswith(b"\n"):
            block = block[1:]
        cr_pending = block.endswith(b"\r")
        if skipping:
            end = min((i for i in (block.find(b"\n"), block.find(b"\r")) if i >= 0), default=-1)
            if end < 0:
                continue
            parsed.reject(number, f"line too long (over {skipping // 1024} KiB)")
            number += 1
            skipping = 0
            block = block[end + 1 + (block[end : end + 2] == b"\r\n") :]
        data = (carry + block).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = data.rfind(b"\n") + 1
        chunk, carry = data[:cut], data[cut:]
        if chunk:
            yield number, chunk
            number += chunk.count(b"\n")
        if len(carry) > MAX_LINE and len(carry) > _line_limit(carry):
            skipping, carry = _line_limit(carry), b""
    if skipping:
        parsed.reject(number, f"line too long (over {skipping // 1024} KiB)")
    elif carry:  # a last line without a line end
        yield number, carry


def _parse_block(chunk: bytes, number: int, forced, fast: HexDigestType | None, parsed: ParsedList) -> None:
    """Lines of `chunk` (the first is line `number`, all end in "\n" but perhaps the last): bare
    hex digests of the forced type in bulk, everything else one by one."""
    raw = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    if len(ends) == 0 or ends[-1] != len(raw) - 1:
        ends = np.append(ends, len(raw))
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts
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
            parsed.reject(number + i, "not UTF-8 text")
            continue
        _parse_line(text, number + i, forced, parsed)


# `MD5 (file name) = hash`: the BSD format of md5sum/sha1sum/sha256sum --tag.
_TAGGED = re.compile(r"(MD5|SHA1|SHA256) \((.*)\) = ([0-9A-Fa-f]+)")


def _parse_line(text: str, number: int, forced: SignalType | None, parsed: ParsedList) -> None:
    """One line: `<hash>` (with --type), `<type> <hash>` (python-threatexchange), or a checksum
    tool's `<hash>  <file name>` (with --type) or `MD5 (file name) = <hash>`."""
    line = text.strip()
    if not line or line.startswith("#"):
        return
    first, _, rest = line.partition(" ")
    if line.startswith("["):  # a bare vPDQ signal, whose JSON has spaces
        parsed.add(number, forced, line)
        return
    if rest.strip().startswith("[") and _known_type(first):  # `vpdq [...]`, as python-threatexchange writes it
        parsed.add_named(number, first, forced, rest.strip())
        return
    tokens = line.split()
    if len(tokens) == 1:
        parsed.add(number, forced, tokens[0])
    elif tagged := _TAGGED.fullmatch(line):
        parsed.add_named(number, tagged.group(1), forced, tagged.group(3))
    elif len(tokens) == 2 and _known_type(tokens[0]):
        parsed.add_named(number, tokens[0], forced, tokens[1])
    elif isinstance(forced, HexDigestType) and not _known_type(tokens[0]):
        parsed.add(number, forced, tokens[0].removeprefix("\\"))  # md5sum output: the rest is a file name
    elif len(tokens) == 2:
        parsed.add_named(number, tokens[0], forced, tokens[1])
    else:
        parsed.reject(number, "expected '<hash>', '<type> <hash>', or '<hash>  <file name>' with --type")


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _known_type(token: str) -> bool:
    try:
        signal_type(token)
        return True
    except KeyError:
        return False


def _parse_csv(path: Path, forced: SignalType | None) -> ParsedList:
    # Bytes that are not UTF-8 are kept as lone surrogates, so that their rows (not the whole
    # file) are the bad ones; any line ending will do.
    text = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    records = csv_records(io.StringIO(text, newline=""), one_line=True)
    header, header_line = None, 0
    for fields, _, number in records:
        if fields is None:
            raise BadInputError(path, "not a readable CSV header (an unterminated quote?)", line=number)
        if any(c.strip() for c in fields) and not fields[0].lstrip().startswith("#"):
            header, header_line = [c.strip().lower() for c in fields], number
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
    id_col = next((header.index(c) for c in _ID_COLUMNS if c in header), None)
    if value_col is None and not typed_columns:
        raise BadInputError(
            path,
            "CSV header names no hash column (expected one of "
            + ", ".join(_VALUE_COLUMNS)
            + " or a signal type such as md5)",
            line=header_line,
        )
    if value_col is not None and type_col is None and forced is None:
        raise BadInputError(path, "CSV has no type column: pass --type", line=header_line)

    parsed = ParsedList(source=path.name)
    for row, _, number in records:
        if row is None:
            parsed.reject(number, "not a readable CSV record (an unterminated quote?)")
            continue
        if not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if any(len(cell) > _line_limit(cell) for cell in row):
            parsed.reject(number, f"field too long (over {MAX_LINE // 1024} KiB; a vPDQ signal 16 MiB)")
            continue
        if any(_not_utf8(cell) for cell in row):
            parsed.reject(number, "not UTF-8 text")
            continue
        if len(row) != len(header):
            parsed.reject(number, f"{len(row)} fields, header has {len(header)}")
            continue
        label = row[id_col].strip() or None if id_col is not None else None
        if value_col is not None and type_col is not None:
            parsed.add_named(number, row[type_col], forced, row[value_col], label)
        elif value_col is not None:
            parsed.add(number, forced, row[value_col], label)
        for col, stype in typed_columns:
            if row[col].strip():
                parsed.add(number, stype, row[col], label)
    return parsed
