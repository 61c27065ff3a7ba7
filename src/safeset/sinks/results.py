"""The results table: one row per input row, the schema every results part, manifest and report
reader relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import commit, partial_path
from ..model import ItemResult

MATCH_TYPE = pa.struct(
    [
        ("bank", pa.string()),
        ("signal_type", pa.string()),
        ("entry", pa.string()),
        ("distance", pa.int16()),
        ("variant", pa.string()),
        ("payload", pa.string()),
        ("query_percent", pa.float64()),
        ("compared_percent", pa.float64()),
    ]
)

# What a row and each of its payloads record alike: an outcome and the hashes of the bytes.
_OBSERVED = [
    ("status", pa.string()),
    ("error", pa.string()),
    ("md5", pa.string()),
    ("sha1", pa.string()),
    ("sha256", pa.string()),
    ("pdq", pa.string()),
    ("pdq_quality", pa.int16()),
    ("width", pa.int32()),
    ("height", pa.int32()),
]

# The query-side PDQ variants of an image (flips, trims, frames, ...), each of a quality that passed
# the gate when it was made: what a decide round matches besides the plain PDQ.
VARIANTS_TYPE = pa.list_(pa.struct([("name", pa.string()), ("pdq", pa.binary(32))]))

# A video's sampled frames (null for anything else): what a decide round matches against vPDQ
# lists, and frame by frame against PDQ lists.
FRAMES_TYPE = pa.list_(
    pa.struct([("frame", pa.int32()), ("quality", pa.int16()), ("pdq", pa.binary(32)), ("timestamp", pa.float32())])
)

PAYLOAD_TYPE = pa.struct([("name", pa.string()), *_OBSERVED, ("pdq_variants", VARIANTS_TYPE), ("frames", FRAMES_TYPE)])

# Where a row sits in its input (`model.stored_locator`): tar members by span, files by name.
LOCATOR_TYPE = pa.list_(
    pa.struct([("offset", pa.int64()), ("size", pa.int64()), ("md5", pa.string()), ("name", pa.binary())])
)

# Bumped whenever results parts change in a way an older reader would misread; a decide round
# refuses parts of another version (observations it cannot read are not silently missing).
FORMAT_VERSION = "4"
# Older formats a round still reads: what they lack is added, empty (`conformed`). Format 3 had no
# video frames and no vPDQ percentages.
READABLE_VERSIONS = ("3", FORMAT_VERSION)

RESULTS_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("shard", pa.string()),
        ("index", pa.int64()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        *_OBSERVED,
        ("url_md5", pa.string()),
        ("url_md5_threatexchange", pa.string()),
        ("payloads", pa.list_(PAYLOAD_TYPE)),
        ("matches", pa.list_(MATCH_TYPE)),
        ("signals", pa.map_(pa.string(), pa.float32())),
        ("decision", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("pdq_variants", VARIANTS_TYPE),
        ("frames", FRAMES_TYPE),
        ("locator", LOCATOR_TYPE),
    ],
    metadata={"safeset.format_version": FORMAT_VERSION},
)


def conformed(table: pa.Table) -> pa.Table:
    """A results table as read from a part, in the results schema (parquet names a list's items
    its own way); one of an older readable format with every column and struct field it lacks
    added, null (nothing of a video observed)."""
    try:
        return table.cast(RESULTS_SCHEMA)
    except (ValueError, pa.ArrowException):
        pass  # an older format
    return pa.Table.from_arrays(
        [
            _conformed(table[field.name], field.type)
            if field.name in table.column_names
            else pa.nulls(len(table), field.type)
            for field in RESULTS_SCHEMA
        ],
        schema=RESULTS_SCHEMA,
    )


def _conformed(column: pa.ChunkedArray | pa.Array, wanted: pa.DataType) -> pa.Array:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(wanted) and pa.types.is_list(column.type):
        offsets = column.offsets
        first, last = offsets[0].as_py(), offsets[-1].as_py()
        values = _conformed(column.values.slice(first, last - first), wanted.value_type)
        offsets = pc.subtract(offsets, pa.scalar(first, offsets.type))
        return pa.ListArray.from_arrays(
            offsets, values, type=wanted, mask=column.is_null() if column.null_count else None
        )
    if pa.types.is_struct(wanted) and pa.types.is_struct(column.type):
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        children = [
            _conformed(column.field(f.name), f.type) if f.name in names else pa.nulls(len(column), f.type)
            for f in wanted
        ]
        return pa.StructArray.from_arrays(
            children, fields=list(wanted), mask=column.is_null() if column.null_count else None
        )
    return column.cast(wanted)


def results_table(results: list[ItemResult]) -> pa.Table:
    return pa.Table.from_pylist([r.to_row() for r in results], schema=RESULTS_SCHEMA)


# Columns of few distinct values, dictionary-encoded; the rest (URLs, digests, ids) are not worth
# the dictionary's cost (a fifth of the time of writing a part).
_DICTIONARY = ["shard", "status", "error", "decision", "reasons"]


def write_results(table: pa.Table, part: Path) -> None:
    """A results part, committed (see `safeset.atomic`); the scan and every decide round write
    them alike, so that equal results are equal bytes."""
    part.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, partial_path(part), use_dictionary=_DICTIONARY)
    commit(partial_path(part), part)


def observed_table(rows: int, columns: dict[str, pa.Array]) -> pa.Table:
    """A results table of `rows` rows holding `columns`; every other column null, or empty lists
    where a column holds lists (as `ItemResult.to_row` writes a row with nothing observed; its
    `locator` and `frames` are null: no place in a file, no video). The
    decision columns are for `decide_table` to fill."""
    arrays = []
    for field in RESULTS_SCHEMA:
        if field.name in columns:
            arrays.append(columns[field.name].cast(field.type))
        elif field.name not in ("locator", "frames") and isinstance(field.type, (pa.ListType, pa.MapType)):
            arrays.append(pa.array([[]], field.type).take(pa.array(np.zeros(rows, np.int64))))
        else:
            arrays.append(pa.nulls(rows, field.type))
    return pa.Table.from_arrays(arrays, schema=RESULTS_SCHEMA)
