"""The three kinds of failure the CLI maps to exit codes, in one place.

A bad *item* is never an exception: it becomes a recorded status on its result row. These classes are
for problems with a whole file or with how safeset was called. Messages never quote image bytes or
hash-list entries: they name the file and, where it applies, the line or row.
"""

from __future__ import annotations

from pathlib import Path

from .redact import redact


class SafesetError(Exception):
    """Base class; an unexpected one is an internal error (exit code 1). Its message never shows
    the credentials of a URI it names (see `safeset.redact`)."""

    exit_code = 1

    def __str__(self) -> str:
        return redact(super().__str__())


class UsageError(SafesetError):
    """The command was called wrongly: unknown bank, conflicting options, a reused --out (exit 2)."""

    exit_code = 2


class BadInputError(SafesetError):
    """An input file cannot be read as what it claims to be (exit 3). Names the file and line/row."""

    exit_code = 3

    def __init__(self, path: str | Path, reason: str, *, line: int | None = None, row: int | None = None):
        self.path = str(path)
        self.reason = reason
        self.line = line
        self.row = row
        where = self.path
        if line is not None:
            where += f", line {line}"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # survives the trip back from a worker process
        return (_rebuild_bad_input, (self.path, self.reason, self.line, self.row))


def _rebuild_bad_input(path, reason, line, row) -> BadInputError:
    return BadInputError(path, reason, line=line, row=row)


class ShardsFailedError(SafesetError):
    """Some shards failed every attempt; the others are complete and a rerun resumes (exit 3 or 1)."""

    def __init__(self, failures: list[tuple[str, str]], *, bad_input: bool, deciding: bool = False):
        self.failures = failures
        self.exit_code = 3 if bad_input else 1
        if deciding:  # a decide round commits whole or not at all
            lines = [f"{len(failures)} shard(s) failed; the round was not committed: OUT holds its earlier outputs"]
        else:
            lines = [f"{len(failures)} shard(s) failed; the rest are done and a rerun resumes:"]
        lines += [f"  {shard}: {error}" for shard, error in failures]
        super().__init__("\n".join(lines))
