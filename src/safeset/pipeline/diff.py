"""`safeset diff A B`: what changed between two audits, two rounds of one, or two releases.

- Two OUTs (`safeset scan` outputs of the same inputs, e.g. before and after a bank update or a
  round of verdicts): the rows whose decision differs, by transition and reason, joined by row id.
- Two decide rounds of one OUT (`safeset diff OUT --rounds 2..5`; OUT alone: what its last round
  changed): each round keeps the rows whose decision or reasons it changed
  (`_state/rounds/round-NNN/`, written by the round's shards), and the rounds between are
  composed: a row's decision and reasons after the first round against those after the last.
- Two release tables (metadata parquet, CSV or JSON lines, e.g. LAION's old and new metadata):
  the rows of A not in B and of B not in A, a row being its (url, caption) pair (or `--key COL`).
  Streamed with bounded memory: each row's identity is hashed to 16 bytes and written to one of
  256 bucket files on disk by its first byte, the buckets compared one at a time, then each table
  read once more to write its rows that the other lacks. Memory: one bucket (24 bytes a row of
  both tables over 256) plus 8 bytes per differing row; temporary disk: 24 bytes per row of both.
  A row counts as present when its identity is, however many times either table holds it.
"""

from __future__ import annotations

import codecs
import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..csvrecords import csv_records
from ..errors import BadInputError, UsageError
from ..hashing.columns import md5_digests
from ..report.build import value_counts
from ..sinks import OutLayout, read_json
from ..sinks.results import RESULTS_SCHEMA
from ..sources.tables import find_column

BUCKETS = 256
_BATCH = 65536


def diff(
    a: str | Path,
    b: str | Path | None = None,
    to: str | Path | None = None,
    key: str | None = None,
    rounds: tuple[int, int | None] | None = None,
) -> dict[str, Any]:
    """See the module. `rounds`: (first, last) of the one OUT `a` (last None: its latest); `to`:
    a new or empty folder for the differing rows."""
    if to is not None:
        _check_target(Path(to))
    if b is None or rounds is not None:
        if b is not None:
            raise UsageError("--rounds compares the rounds of one OUT: give one OUT, not two")
        return _diff_rounds(Path(a), rounds, Path(to) if to else None)
    outs = [OutLayout(p).run_spec.is_file() for p in (a, b)]
    if all(outs):
        return _diff_outs(Path(a), Path(b), Path(to) if to else None)
    if any(outs):
        raise UsageError("diff takes two audits (OUTs) or two release tables, not one of each")
    return _diff_tables(Path(a), Path(b), Path(to) if to else None, key)


def _results(out: Path) -> pa.Table:
    from .decide import check_format

    parts = sorted(OutLayout(out).results.glob("part-*.parquet"))
    if not parts:
        raise UsageError(f"{out} holds no results")
    columns = ["row_id", "url", "decision", "reasons"]
    return pa.concat_tables(check_format(p).read(columns=columns) for p in parts)


def changed_rows(old: pa.Table, new: pa.Table, reasons_too: bool = False) -> pa.Table:
    """The rows of two aligned results tables (same rows, same order) whose decision differs (or,
    `reasons_too`, their reasons): row_id, url, and each side's decision and reasons."""
    differs = pc.not_equal(old["decision"], new["decision"])
    if reasons_too:
        same = pc.equal(pc.binary_join(old["reasons"], "\n"), pc.binary_join(new["reasons"], "\n"))
        differs = pc.or_(differs, pc.invert(pc.fill_null(same, False)))
    return pa.table(
        {
            "row_id": old["row_id"].filter(differs),
            "url": old["url"].filter(differs),
            "decision_a": old["decision"].filter(differs),
            "decision_b": new["decision"].filter(differs),
            "reasons_a": old["reasons"].filter(differs),
            "reasons_b": new["reasons"].filter(differs),
        }
    )


def _changes_summary(changed: pa.Table) -> dict[str, Any]:
    """Rows changed, by transition; and by transition and reason (a row counted under each of its
    reasons, as a round's `transitions` count them)."""
    from .decide import transitions

    sides = [
        pa.table({"decision": changed[f"decision_{s}"], "reasons": changed[f"reasons_{s}"]}).combine_chunks()
        for s in "ab"
    ]
    moves = pc.binary_join_element_wise(changed["decision_a"], changed["decision_b"], "->")
    by_transition = dict(sorted(value_counts(moves).items())) if changed.num_rows else {}
    return {"changed": changed.num_rows, "rows_by_transition": by_transition, "transitions": transitions(*sides)}


def _write_diff(to: Path | None, changed: pa.Table, summary: dict[str, Any]) -> dict[str, Any]:
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        pq.write_table(changed, to / "changed.parquet")
        (to / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _check_target(to: Path) -> None:
    """--to is a new or empty folder: not an OUT's, and nothing of an earlier diff left in it."""
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UsageError(f"--to {to} is not an empty folder: diff writes its rows into a new one")


def _diff_outs(a: Path, b: Path, to: Path | None) -> dict[str, Any]:
    before, after = _results(a), _results(b)
    left = pa.table({"row_id": before["row_id"], "ia": pa.array(np.arange(before.num_rows))})
    right = pa.table({"row_id": after["row_id"], "ib": pa.array(np.arange(after.num_rows))})
    pairs = left.join(right, "row_id", join_type="inner").sort_by("row_id")  # list columns do not join
    changed = changed_rows(before.take(pairs["ia"]), after.take(pairs["ib"]))
    summary = {
        "kind": "audits",
        "rows_a": before.num_rows,
        "rows_b": after.num_rows,
        "only_in_a": before.num_rows - pairs.num_rows,
        "only_in_b": after.num_rows - pairs.num_rows,
        **_changes_summary(changed),
    }
    return _write_diff(to, changed, summary)


def _diff_rounds(out: Path, rounds: tuple[int, int | None] | None, to: Path | None) -> dict[str, Any]:
    """From the decisions after round `first` to those after round `last` of one OUT: the rows
    each round in between changed, composed (a row changed back and forth is no change)."""
    from .decide import ROUND_RECORD, round_changes

    layout = OutLayout(out)
    if not layout.run_spec.is_file() or not layout.report_json.is_file():
        raise UsageError(f"{out} holds no scan: diff of rounds takes one OUT")

    held = [r["round"] for r in read_json(layout.report_json).get("rounds", [])]
    latest = max(held, default=1)
    first, last = rounds if rounds is not None else (max(latest - 1, 1), None)
    last = latest if last is None else last
    if not 1 <= first <= last <= latest:
        raise UsageError(f"{out} has rounds 1 to {latest}: rounds {first} to {last} are not among them")
    steps = []
    for number in range(first + 1, last + 1):
        folder = round_changes(layout, number)
        if not (folder / ROUND_RECORD).is_file():
            raise UsageError(
                f"round {number} of {out} kept no record of the rows it changed (an older safeset decided it): "
                "diff two copies of OUT instead"
            )
        steps += [pq.read_table(p) for p in sorted(folder.glob("part-*.parquet"))]
    empty = RESULTS_SCHEMA.empty_table()
    steps = pa.concat_tables(steps) if steps else changed_rows(empty, empty)
    # composed: each row's state before its first change, and after its last
    numbered = steps.append_column("order", pa.array(np.arange(steps.num_rows)))
    ends = numbered.group_by("row_id").aggregate([("order", "min"), ("order", "max")])
    start, end = steps.take(ends["order_min"]), steps.take(ends["order_max"])
    changed = pa.table(
        {
            "row_id": start["row_id"],
            "url": start["url"],
            "decision_a": start["decision_a"],
            "decision_b": end["decision_b"],
            "reasons_a": start["reasons_a"],
            "reasons_b": end["reasons_b"],
        }
    )
    changed = changed.filter(pc.not_equal(changed["decision_a"], changed["decision_b"]))
    changed = changed.sort_by("row_id")
    summary = {"kind": "rounds", "out": str(out), "from_round": first, "to_round": last, **_changes_summary(changed)}
    return _write_diff(to, changed, summary)


def _csv(path: Path, columns: list[str] | None):
    """A CSV as text, every column a string (no type is guessed: a caption "007" stays "007"),
    quoted newlines allowed."""
    from pyarrow import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv_records(fh), (None,))[0]
    except UnicodeDecodeError:
        raise BadInputError(path, "is not UTF-8 text") from None
    if header is None:
        raise BadInputError(path, "its first line is no CSV header")
    convert = csv.ConvertOptions(
        include_columns=columns, column_types={name: pa.string() for name in header}, strings_can_be_null=False
    )
    return csv.open_csv(path, parse_options=csv.ParseOptions(newlines_in_values=True), convert_options=convert)


def _check_utf8(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as fh:
        try:
            while block := fh.read(1 << 24):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise BadInputError(path, "is not UTF-8 text") from None


def table_batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":  # not pre-buffered: that holds every row group's columns read (135 MB at 4M rows)
            yield from pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=_BATCH, columns=columns)
        elif suffix == ".csv":
            with _csv(path, columns) as reader:
                yield from reader
        elif suffix in (".jsonl", ".json", ".ndjson"):  # streamed; identity columns read as text
            from pyarrow import json as pajson

            _check_utf8(path)  # pyarrow's JSON reader takes any bytes for text

            parse = pajson.ParseOptions(
                explicit_schema=pa.schema([(name, pa.string()) for name in columns]) if columns else None,
                unexpected_field_behavior="ignore" if columns else "infer",
            )
            yield from pajson.open_json(path, parse_options=parse, read_options=pajson.ReadOptions(block_size=1 << 24))
        else:
            raise BadInputError(path, "is not a release table (parquet, csv or jsonl)")
    except (pa.ArrowException, OSError):  # pyarrow's message quotes the row: captions are not ours to print
        raise BadInputError(path, "cannot be read as a table (a malformed row, or not parquet/csv/jsonl)") from None


def _names(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_schema(path).names
        if suffix == ".csv":
            with _csv(path, None) as reader:
                return reader.schema.names
    except (pa.ArrowException, OSError):
        raise BadInputError(path, "cannot be read as a table (a malformed row, or not parquet/csv/jsonl)") from None
    first = next(table_batches(path), None)
    return first.schema.names if first is not None else []


# the tables of a release folder: not .json, which img2dataset's stats files are
TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")


def release_tables(path: Path) -> list[Path]:
    """A release's metadata tables: the file, or every table in the folder and below (LAION's
    metadata is hundreds of parquet files), in name order; other files (a webdataset's tars, its
    stats .json) are not tables and are passed over."""
    if not path.is_dir():
        return [path]
    if OutLayout(path).run_spec.is_file():
        raise UsageError(
            f"{path} is an audit's OUT, whose results list removed rows too: give its clean release, {path / 'clean'}"
        )
    found = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in TABLE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not found:
        raise BadInputError(path, "holds no release table (parquet, csv or jsonl)")
    return found


def identity_columns(path: Path, key: str | None, keyed: bool = True) -> list[str]:
    """The columns that name a row of a release table: `key`, else url and caption (or url
    alone). `keyed`: the command has --key to offer when there is no url column."""
    names = _names(path)
    if key:
        found = find_column(names, key, (), path, "--key")
        if found is None:
            raise BadInputError(path, f"has no column {key!r}")
        return [found]
    url = find_column(names, None, ("url",), path, "--key")
    if url is None:
        hint = ": name the column that identifies a row with --key" if keyed else " (a url column names its rows)"
        raise BadInputError(path, f"has no url column{hint}")
    caption = find_column(names, None, ("caption", "text"), path)
    return [url, caption] if caption else [url]


def _digests(batch: pa.RecordBatch) -> np.ndarray:
    # a null is not an empty string: it is held as a byte no text of a table holds
    texts = [pc.fill_null(pc.cast(column, pa.string()), "\x01") for column in batch.columns]
    joined = texts[0] if len(texts) == 1 else pc.binary_join_element_wise(*texts, "\x00")
    return md5_digests(joined)


def spill(batches: Iterable[pa.RecordBatch], folder: Path, first: int = 0) -> int:
    """Every row's identity digest (of the batches' columns) and number (from `first` on),
    appended to the bucket files of `folder`; how many rows the batches hold."""
    files = [open(folder / f"{i:03d}", "ab") for i in range(BUCKETS)]  # noqa: SIM115
    rows = first
    try:
        for batch in batches:
            digests = _digests(batch)
            numbers = np.arange(rows, rows + batch.num_rows, dtype=np.int64)
            records = np.empty(batch.num_rows, [("digest", "V16"), ("row", "<i8")])
            records["digest"] = digests.view("V16")[:, 0]
            records["row"] = numbers
            order = np.argsort(digests[:, 0], kind="stable")
            records, leading = records[order], digests[order, 0]
            bounds = np.searchsorted(leading, np.arange(BUCKETS + 1))
            for i in np.flatnonzero(np.diff(bounds)):
                files[i].write(records[bounds[i] : bounds[i + 1]].tobytes())
            rows += batch.num_rows
    finally:
        for fh in files:
            fh.close()
    return rows - first


def lacking(mine: Path, theirs: Path, present: bool = False) -> np.ndarray:
    """The row numbers in bucket `mine` whose identity bucket `theirs` does not hold (`present`:
    does hold)."""
    kind = np.dtype([("digest", "V16"), ("row", "<i8")])
    a = np.fromfile(mine, kind) if mine.exists() else np.zeros(0, kind)
    b = np.fromfile(theirs, kind) if theirs.exists() else np.zeros(0, kind)
    if not len(a):
        return np.zeros(0, np.int64)
    held = np.isin(a["digest"].view("S16"), np.unique(b["digest"].view("S16")))
    return np.sort(a["row"][held if present else ~held])


def _write_rows(path: Path, wanted: np.ndarray, target: Path) -> None:
    """The rows numbered `wanted` (ascending) of the table at `path`, into `target` (written even
    when there are none: a folder of a diff always holds both files)."""
    writer, schema = None, None
    start = 0
    for batch in table_batches(path):
        schema = batch.schema
        lo, hi = np.searchsorted(wanted, [start, start + batch.num_rows])
        if hi > lo:
            picked = pa.Table.from_batches([batch]).take(pa.array(wanted[lo:hi] - start))
            if writer is None:
                writer = pq.ParquetWriter(target, picked.schema)
            writer.write_table(picked)
        start += batch.num_rows
    if writer is not None:
        writer.close()
    else:
        pq.write_table(pa.Table.from_batches([], schema) if schema is not None else pa.table({}), target)


def _diff_tables(a: Path, b: Path, to: Path | None, key: str | None) -> dict[str, Any]:
    columns = {side: identity_columns(path, key) for side, path in (("a", a), ("b", b))}
    if len(columns["a"]) != len(columns["b"]):
        raise UsageError(f"{a} and {b} do not both have a caption column: compare by --key, or by url alone")
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="safeset-diff-", dir=to) as scratch:
        folders = {side: Path(scratch) / side for side in "ab"}
        for folder in folders.values():
            folder.mkdir()
        rows = {side: spill(table_batches(path, columns[side]), folders[side]) for side, path in (("a", a), ("b", b))}
        only = {"a": [], "b": []}
        for i in range(BUCKETS):
            name = f"{i:03d}"
            only["a"].append(lacking(folders["a"] / name, folders["b"] / name))
            only["b"].append(lacking(folders["b"] / name, folders["a"] / name))
        only = {side: np.sort(np.concatenate(parts)) for side, parts in only.items()}
    summary = {
        "kind": "releases",
        "identity": columns["a"],
        "rows_a": rows["a"],
        "rows_b": rows["b"],
        "only_in_a": int(len(only["a"])),
        "only_in_b": int(len(only["b"])),
    }
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        _write_rows(a, only["a"], to / "only_in_a.parquet")
        _write_rows(b, only["b"], to / "only_in_b.parquet")
        (to / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
