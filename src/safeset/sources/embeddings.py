"""Published embeddings, read as they are published, in blocks of rows: memory stays one block
whatever the file's size, from a local path or a URI alike.

Layouts (`embedding_files` tells them apart):
- LAION's: a folder with `img_emb/img_emb_NNNN.npy` (float16 or float32, N x d) and
  `metadata/metadata_NNNN.parquet` beside it, row-aligned, with `url` (any case) and perhaps `key`.
- DataComp's: a folder of `NAME.npz` (an array `l14_img`, or the one `--embedding-col` names)
  each beside `NAME.parquet` with `uid` and `url`.
- A parquet (or a folder of them) with a list<float> column (`--embedding-col`; by default one
  called `embedding`, `embeddings`, `emb`, `clip_embedding` or `image_embedding`) and the
  metadata in the same rows.

Rows are numbered across the files in their sorted order: the `first` of each file. What joins a
row to the audit's rows is its URL (the MD5 of the URL as held, the audit's `url_md5`) or, without
a URL column, its `key` (or DataComp's `uid`).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import BadInputError, UsageError
from ..storage import Remote, is_remote, open_input
from .tables import find_column, parquet_file

BLOCK_ROWS = 16384
DATACOMP_ARRAY = "l14_img"
LIST_COLUMNS = ("embedding", "embeddings", "emb", "clip_embedding", "image_embedding")
URL_COLUMNS = ("url",)
KEY_COLUMNS = ("key", "uid", "id")
_NUMBERED = re.compile(r"(\d+)")


@dataclass(frozen=True)
class EmbeddingFile:
    """One file of embeddings and the metadata of its rows (picklable: a search task's input)."""

    vectors: str  # .npy, .npz, or (for a list column) the parquet itself
    metadata: str  # the parquet whose rows are the vectors' rows
    member: str  # the .npz's array, or the parquet's list column ("" for a .npy)
    first: int  # the number of its first row among all the files'
    rows: int
    dim: int
    url_col: str | None = None
    key_col: str | None = None
    id_col: str | None = None  # `row_id`: embeddings a scan wrote (`--embed-model`) join the audit by it

    @property
    def kind(self) -> str:
        return "npz" if self.member and not self.vectors.endswith(".parquet") else "list" if self.member else "npy"


def embedding_files(src: str, column: str | None = None, url_col: str | None = None) -> list[EmbeddingFile]:
    """The files of the embeddings at `src` (see the module), each checked: the vectors a 2-d
    float array of one dimension throughout, the metadata as many rows. `BadInputError` names the
    file that is not."""
    listing = _listing(src)  # relative name -> path or URI
    if not listing:
        raise BadInputError(src, "no such file or folder, or it is empty")
    npy = _numbered(listing, r"(^|/)img_emb/[^/]*\.npy$")
    if npy:
        meta = _numbered(listing, r"(^|/)metadata/[^/]*\.parquet$")
        if set(npy) != set(meta):
            lonely = sorted(set(npy) ^ set(meta))[0]
            raise BadInputError(
                npy.get(lonely) or meta[lonely],
                "has no partner: LAION's layout pairs img_emb/img_emb_N.npy with metadata/metadata_N.parquet "
                "in the same folder",
            )
        pairs = [(npy[n], meta[n], "") for n in sorted(npy)]
    elif any(rel.endswith(".npz") for rel in listing):
        wanted = column or DATACOMP_ARRAY
        pairs = []
        for rel in sorted(r for r in listing if r.endswith(".npz")):
            partner = rel[: -len(".npz")] + ".parquet"
            if partner not in listing:
                raise BadInputError(listing[rel], f"has no {Path(partner).name} beside it (DataComp's layout)")
            pairs.append((listing[rel], listing[partner], wanted))
    else:
        tables = [listing[rel] for rel in sorted(listing) if rel.endswith(".parquet")]
        if not tables:
            raise BadInputError(src, "holds no embeddings: no img_emb/*.npy, no *.npz, no parquet")
        pairs = [(p, p, "") for p in tables]
    files, first = [], 0
    for vectors, metadata, member in pairs:
        found = _described(vectors, metadata, member, column, url_col, first)
        if files and found.dim != files[0].dim:
            raise BadInputError(vectors, f"holds {found.dim}-d vectors, {files[0].vectors} {files[0].dim}-d")
        files.append(found)
        first += found.rows
    return files


def _listing(src: str) -> dict[str, str]:
    """Every file at `src` (hidden ones left out), by its name relative to `src`."""
    if is_remote(src):
        remote = Remote(src)
        if not remote.is_dir():
            return {remote.name: src} if remote.exists() else {}
        return {rel: remote.child(rel).uri for rel, _ in remote.files()}
    path = Path(src)
    if path.is_file():
        return {path.name: str(path)}
    if not path.is_dir():
        return {}
    found = (
        p for p in path.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(path).parts)
    )
    return {p.relative_to(path).as_posix(): str(p) for p in sorted(found)}


def _numbered(listing: dict[str, str], pattern: str) -> dict[tuple[str, str], str]:
    """The files whose relative name matches `pattern`, by (the folder holding their img_emb/ or
    metadata/, number): a dataset published as several sets (laion2B-en/, laion2B-multi/) pairs
    each set's own files."""
    found: dict[tuple[str, str], str] = {}
    for rel, location in listing.items():
        if re.search(pattern, rel):
            folder, _, name = rel.rpartition("/")
            digits = _NUMBERED.findall(name)
            key = (folder.rpartition("/")[0], f"{int(digits[-1]):012d}" if digits else Path(name).stem)
            if key in found:
                raise BadInputError(location, f"and {found[key]} have one number: which pairs with which is unclear")
            found[key] = location
    return found


def _described(vectors: str, metadata: str, member: str, column: str | None, url_col: str | None, first: int):
    table = parquet_file(metadata)
    names = table.schema_arrow.names
    url = find_column(names, url_col, URL_COLUMNS, metadata, "--url-col")
    key = find_column(names, None, KEY_COLUMNS, metadata)
    row_id = "row_id" if "row_id" in names else None
    if url is None and key is None:
        raise BadInputError(metadata, "has no url, key or uid column to join its rows to the audit's")
    if vectors == metadata:  # a list column in the table itself
        member = find_column(names, column, LIST_COLUMNS, metadata, "--embedding-col") or ""
        if not member:
            raise BadInputError(
                metadata, f"has no embedding column ({', '.join(LIST_COLUMNS)}): name it with --embedding-col"
            )
        kind = table.schema_arrow.field(member).type
        listed = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
        if not listed or not pa.types.is_floating(kind.value_type):
            raise BadInputError(metadata, f"column {member!r} is {kind}, not a list of floats")
        rows = table.metadata.num_rows
        dim = _list_dim(table, member, metadata)
    else:
        with _array_stream(vectors, member) as (stream, shape, _):
            rows, dim = shape
    if vectors != metadata and table.metadata.num_rows != rows:
        raise BadInputError(vectors, f"holds {rows} vectors but {metadata} {table.metadata.num_rows} rows")
    return EmbeddingFile(vectors, metadata, member, first, rows, dim, url, key, row_id)


def _list_dim(table: pq.ParquetFile, column: str, where: str) -> int:
    for batch in table.iter_batches(batch_size=1, columns=[column]):
        values = batch.column(0)
        if len(values) and values[0].is_valid and len(values[0]):
            return len(values[0])
    raise BadInputError(where, f"column {column!r} holds no vector")


class _ArrayStream:
    """A .npy (or an .npz's member) as a stream: its header read, its rows still to come."""

    def __init__(self, path: str, member: str):
        self.path, self.member = path, member
        self._opened: list = []

    def __enter__(self):
        try:
            return self._open()
        except BaseException:
            self.__exit__()
            raise

    def _open(self):
        # an .npz is a zip, read from its end: a file on a store is opened for reads by range
        raw = Remote(self.path).open_random() if self.member and is_remote(self.path) else open_input(self.path)
        self._opened.append(raw)
        stream = raw
        where = self.path
        if self.member:
            try:
                archive = zipfile.ZipFile(raw)
            except (zipfile.BadZipFile, OSError) as exc:
                raise BadInputError(self.path, f"not a readable .npz ({exc})") from None
            self._opened.append(archive)
            name = self.member + ".npy"
            if name not in archive.namelist():
                raise BadInputError(
                    self.path,
                    f"has no array {self.member!r} (it has: "
                    f"{', '.join(n.removesuffix('.npy') for n in archive.namelist())})",
                )
            stream = archive.open(name)
            self._opened.append(stream)
            where = f"{self.path}:{self.member}"
        try:
            version = np.lib.format.read_magic(stream)
            header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in header:
                raise ValueError(f"version {version} of the format")
            shape, fortran, dtype = header[version](stream)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise BadInputError(where, f"not a .npy array ({exc})") from None
        if len(shape) != 2 or not shape[1] or fortran or dtype not in (np.dtype("<f2"), np.dtype("<f4")):
            raise BadInputError(
                where,
                f"holds a {'Fortran-ordered ' if fortran else ''}{dtype} array of shape {shape}: "
                "embeddings are a C-ordered (rows, dim) float16 or float32 array",
            )
        return stream, shape, dtype

    def __exit__(self, *exc):
        for thing in reversed(self._opened):
            thing.close()


def _array_stream(path: str, member: str) -> _ArrayStream:
    return _ArrayStream(path, member)


def blocks(file: EmbeddingFile, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """(number of its first row, (n, d) float16 or float32 array) over the file, in order. One
    buffer is reused: a block is valid until the next one is asked for."""
    if file.kind == "list":
        yield from _list_blocks(file, rows)
        return
    with _array_stream(file.vectors, file.member) as (stream, shape, dtype):
        buffer = np.empty((min(rows, shape[0]), shape[1]), dtype)
        done = 0
        while done < shape[0]:
            n = min(rows, shape[0] - done)
            view = memoryview(buffer[:n]).cast("B")
            got = 0
            while got < len(view):
                try:
                    read = stream.readinto(view[got:])
                except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a damaged .npz member
                    raise BadInputError(file.vectors, f"cannot be read past row {done} ({exc})") from None
                if not read:
                    raise BadInputError(
                        file.vectors,
                        f"ends after {done + got // (shape[1] * dtype.itemsize)} of {shape[0]} rows (truncated)",
                    )
                got += read
            yield file.first + done, buffer[:n]
            done += n


def _list_blocks(file: EmbeddingFile, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    table = parquet_file(file.metadata)
    done = 0
    for batch in table.iter_batches(batch_size=rows, columns=[file.member]):
        column = batch.column(0)
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(column)
        holes = np.zeros(len(column), bool)
        if flat.null_count:  # a vector with a missing value has no direction anyone could trust
            holes[pc.list_parent_indices(column).to_numpy()[pc.is_null(flat).to_numpy(zero_copy_only=False)]] = True
        if column.null_count or (lengths != file.dim).any() or holes.any():
            nulls = pc.is_null(column).to_numpy(zero_copy_only=False)
            bad = int(np.flatnonzero(nulls | (lengths != file.dim) | holes)[0])
            raise BadInputError(
                file.metadata, f"row {done + bad}: its {file.member!r} is not a {file.dim}-d vector of numbers"
            )
        values = flat.to_numpy(zero_copy_only=False)
        if values.dtype == np.float64:  # searched as float32; a value beyond float32 would be lost, not rounded
            with np.errstate(over="ignore"):
                narrowed = values.astype(np.float32)
            lost = np.isinf(narrowed) & np.isfinite(values)
            if lost.any():
                row = done + int(np.flatnonzero(lost)[0]) // file.dim
                raise BadInputError(file.metadata, f"row {row}: its {file.member!r} holds a value beyond float32")
            values = narrowed
        yield file.first + done, values.reshape(len(column), file.dim)
        done += len(column)


def join_keys(file: EmbeddingFile, by: str) -> pa.Array:
    """Each row's join key: the MD5 of its URL as held (hex, `by` "url"), its key ("key") or its
    row id ("row_id"); null where the row has none."""
    column = {"url": file.url_col, "key": file.key_col, "row_id": file.id_col}[by]
    if column is None:
        raise UsageError(f"{file.metadata} has no {by} column to join on")
    table = parquet_file(file.metadata).read(columns=[column])
    values = table.column(0)
    try:
        if by == "url":
            from ..hashing.columns import url_md5_column

            return url_md5_column(values)
        return pc.cast(values, pa.string()).combine_chunks()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        raise BadInputError(file.metadata, f"column {column!r} is {values.type}, not text to join on") from None


def take_rows(file: EmbeddingFile, wanted: np.ndarray) -> np.ndarray:
    """The vectors of rows `wanted` (numbers among all files' rows, within this file), float64."""
    out = np.empty((len(wanted), file.dim))
    if not len(wanted):
        return out
    order = np.argsort(wanted)
    sorted_rows = wanted[order]
    for first, block in blocks(file):
        lo, hi = np.searchsorted(sorted_rows, [first, first + len(block)])
        if hi > lo:
            out[order[lo:hi]] = block[sorted_rows[lo:hi] - first]
        if hi == len(sorted_rows):
            break
    return out
