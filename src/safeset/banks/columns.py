"""What a batch of results offers to match, column by column: the values each signal type compares
with its lists, read from an Arrow table of results (the schema of `sinks.results`) without one
Python object per row.

A results table is what a scan writes and a decide round reads, so matching has one input, and one
code path, whichever of the two is running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..hashing.columns import whole
from .hexarray import parse_hex_rows


@dataclass
class Queries:
    """Queried values and where each comes from, in parallel: the row (`owners`), the payload and
    the PDQ variant (codes into `payload_names` and `variant_names`; "" is the row's own and the
    plain hash). `values` is (n, width) uint8 for digests, an Arrow string array for text."""

    owners: np.ndarray
    values: np.ndarray | pa.Array
    payloads: np.ndarray
    variants: np.ndarray
    payload_names: list[str] = field(default_factory=lambda: [""])
    variant_names: list[str] = field(default_factory=lambda: [""])

    def __len__(self) -> int:
        return len(self.owners)

    def payload(self, i: int) -> str:
        return self.payload_names[self.payloads[i]]

    def variant(self, i: int) -> str:
        return self.variant_names[self.variants[i]]

    @classmethod
    def join(cls, parts: list[Queries], empty_values: np.ndarray | pa.Array) -> Queries:
        """One set of queries of several, their names merged."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(np.zeros(0, np.int64), empty_values, np.zeros(0, np.int32), np.zeros(0, np.int32))
        payload_names: dict[str, int] = {}
        variant_names: dict[str, int] = {}
        payloads, variants = [], []
        for part in parts:
            remap = np.array([payload_names.setdefault(n, len(payload_names)) for n in part.payload_names], np.int32)
            payloads.append(remap[part.payloads])
            remap = np.array([variant_names.setdefault(n, len(variant_names)) for n in part.variant_names], np.int32)
            variants.append(remap[part.variants])
        if isinstance(parts[0].values, np.ndarray):
            values = np.concatenate([p.values for p in parts])
        else:
            values = pa.concat_arrays([p.values for p in parts])
        return cls(
            np.concatenate([p.owners for p in parts]),
            values,
            np.concatenate(payloads),
            np.concatenate(variants),
            list(payload_names),
            list(variant_names),
        )


def plain(owners: np.ndarray, values: np.ndarray | pa.Array) -> Queries:
    """Queries of rows' own values (payload "", variant "")."""
    zeros = np.zeros(len(owners), np.int32)
    return Queries(np.asarray(owners, np.int64), values, zeros, zeros)


def hex_values(column: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, (k, width) uint8) of the valid hex digests of a string column; nulls and
    malformed values (never written by safeset, but a results file is input too) are skipped."""
    column = whole(column).cast(pa.string())
    n = len(column)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, width), np.uint8)
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset : column.offset + n + 1]
    right = np.diff(offsets) == 2 * width
    if column.null_count:
        right &= column.is_valid().to_numpy(zero_copy_only=False)
    positions = np.flatnonzero(right)
    data = np.frombuffer(column.buffers()[2], np.uint8) if column.buffers()[2] is not None else np.zeros(0, np.uint8)
    if len(positions) == n:  # the usual case: every value there, back to back
        chars = data[offsets[0] : offsets[0] + n * 2 * width]
    else:
        starts = offsets[positions]
        chars = data[(starts[:, None] + np.arange(2 * width)).ravel()] if len(positions) else data[:0]
    rows, valid = parse_hex_rows(chars.reshape(-1, 2 * width))
    return positions[valid], rows


def binary_values(column: pa.Array, width: int) -> np.ndarray:
    """(k, width) uint8 of a fixed_size_binary column without nulls."""
    column = whole(column)
    if len(column) == 0:
        return np.zeros((0, width), np.uint8)
    data = np.frombuffer(column.buffers()[1], np.uint8)
    return data[column.offset * width : (column.offset + len(column)) * width].reshape(-1, width)


def flat(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A list column's elements and, for each, the index of its row. A null list (never written
    by safeset) holds nothing, whatever its offsets span."""
    column = whole(column)
    if column.null_count:
        empty = pa.array([[]], column.type).take(pa.array(np.zeros(len(column), np.int64)))
        column = pc.if_else(pc.is_valid(column), column, empty)
    return pc.list_flatten(column), pc.list_parent_indices(column).to_numpy().astype(np.int64)


def prefixed(
    column: pa.Array, prefixes: tuple[str, ...], excluding: tuple[str, ...] = ()
) -> tuple[np.ndarray, list[str]]:
    """(row, value) of each element of a list-of-strings column (a results part's `reasons`) that
    starts with one of `prefixes` and none of `excluding`."""
    values, rows = flat(column)
    if not len(values):
        return rows, []
    hit = np.zeros(len(values), bool)
    for prefix in prefixes:
        hit |= pc.fill_null(pc.starts_with(values, prefix), False).to_numpy(zero_copy_only=False)
    for prefix in excluding:
        hit &= ~pc.fill_null(pc.starts_with(values, prefix), False).to_numpy(zero_copy_only=False)
    return rows[hit], values.filter(pa.array(hit)).to_pylist()


def codes(names: pa.Array) -> tuple[np.ndarray, list[str]]:
    """Strings as (codes, distinct names): a few variant or payload names over many rows."""
    encoded = pc.dictionary_encode(pc.fill_null(whole(names), ""))
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32), encoded.dictionary.to_pylist()


def struct_field(column: pa.Array, name: str) -> pa.Array:
    return pc.struct_field(whole(column), name)


def valid(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(positions, values) of a column's non-null values."""
    column = whole(column)
    positions = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
    return positions, column.take(pa.array(positions))


def pdq_queries(
    pdq: pa.Array,
    quality: pa.Array,
    variants: pa.Array,
    owners: np.ndarray,
    payload_codes: tuple[np.ndarray, list[str]] | None,
    min_quality: int,
) -> list[Queries]:
    """The PDQ queries of images (rows, or payloads whose rows are `owners`): each plain hash of
    a quality that passes the gate, and every stored variant."""
    names, distinct = payload_codes if payload_codes is not None else (np.zeros(len(owners), np.int32), [""])
    positions, rows = hex_values(pdq, 32)
    scores = pc.fill_null(whole(quality), 0).to_numpy(zero_copy_only=False)[positions]
    gated = scores >= min_quality
    positions, rows = positions[gated], rows[gated]
    parts = [Queries(owners[positions], rows, names[positions], np.zeros(len(rows), np.int32), distinct, [""])]
    elements, parents = flat(variants)
    present = pc.is_valid(struct_field(elements, "pdq")).to_numpy(zero_copy_only=False) if len(elements) else None
    if present is not None and not present.all():  # a variant without its hash: none to query
        elements, parents = elements.filter(pa.array(present)), parents[present]
    if len(elements):
        variant_codes, variant_names = codes(struct_field(elements, "name"))
        values = binary_values(struct_field(elements, "pdq"), 32)
        parts.append(Queries(owners[parents], values, names[parents], variant_codes, distinct, variant_names))
    return parts


VIDEO_FRAME = "video_frame:"  # the variant name of a video's frame N matched as a still: "video_frame:N"


def frame_queries(table: pa.Table, min_quality: int, whole_videos: bool) -> list[Queries]:
    """The PDQ queries of videos' frames, the rows' own and their payloads'. `whole_videos`: as
    vPDQ matches a video (`banks.vpdq`), each video's distinct frames passing the gate, variant "";
    else each frame passing the gate, matched as a still, its variant `video_frame:N`."""
    from .vpdq import prepared_groups

    sources = [(table["frames"], np.arange(table.num_rows), (np.zeros(table.num_rows, np.int32), [""]))]
    payloads, parents = flat(table["payloads"])
    if len(payloads):
        sources.append((struct_field(payloads, "frames"), parents, codes(struct_field(payloads, "name"))))
    parts = []
    for column, owners, (names, distinct) in sources:
        frames, videos = flat(column)
        if not len(frames):
            continue
        pdqs = binary_values(pc.fill_null(struct_field(frames, "pdq"), b"\0" * 32), 32)
        quality = pc.fill_null(struct_field(frames, "quality"), 0).to_numpy(zero_copy_only=False)
        if whole_videos:
            kept = np.flatnonzero(prepared_groups(videos, pdqs, quality, min_quality))
            variants, variant_names = np.zeros(len(kept), np.int32), [""]
        else:
            kept = np.flatnonzero(quality >= min_quality)
            numbers = pc.dictionary_encode(pc.fill_null(struct_field(frames, "frame"), -1).take(pa.array(kept)))
            variants = numbers.indices.to_numpy(zero_copy_only=False).astype(np.int32)
            variant_names = [f"{VIDEO_FRAME}{n}" for n in numbers.dictionary.to_pylist()]
        at = videos[kept]
        parts.append(Queries(owners[at], pdqs[kept], names[at], variants, distinct, variant_names))
    return parts
