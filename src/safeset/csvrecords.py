"""CSV records read so that one bad record costs one row, never the rest of the file.

Python's csv reader, when not strict, reads a stray quote as the start of a quoted field and
swallows every line after it into that field, silently; when strict it raises and stops. Both
input tables and hash lists are CSV that people write by hand and tools write carelessly, so both
read it through here: a record the parser refuses is reported by its line, and reading resumes on
the line after it.
"""

from __future__ import annotations

import csv
import sys
from collections import deque
from collections.abc import Iterator

# The csv module refuses fields over 128 KiB by raising: LAION captions and list-valued fields can
# be longer. (The limit is the process's own.)
csv.field_size_limit(sys.maxsize)


def csv_records(fh, blanks: bool = False, one_line: bool = False) -> Iterator[tuple[list[str] | None, str, int]]:
    """(fields, raw text exactly as in the file, last line number) of each CSV record; a quoted
    field may span lines, unless `one_line` (hash lists: no entry spans lines, so two stray
    quotes must not make the lines between them one record). Blank records are left out unless
    `blanks`. A record the parser cannot read (an unterminated quote, text after a closing
    quote) comes back as (None, its first line, that line's number), and reading goes on from
    the line after: a stray quote costs one row, never the rest of the file."""
    source = enumerate(fh, start=1)
    again: deque[tuple[int, str]] = deque()  # lines to read once more, after a bad record
    raw: list[tuple[int, str]] = []

    def lines() -> Iterator[str]:
        while True:
            numbered = again.popleft() if again else next(source, None)
            if numbered is None:
                return
            raw.append(numbered)
            yield numbered[1]

    while True:
        try:
            for fields in csv.reader(lines(), strict=True):
                if one_line and len(raw) > 1:
                    raise csv.Error("a record spans lines")
                text, last = "".join(line for _, line in raw), raw[-1][0]
                raw.clear()
                if fields or blanks:
                    yield fields, text, last
            return
        except csv.Error:
            (number, first), *rest = raw
            raw.clear()
            again.extendleft(reversed(rest))
            yield None, first, number
