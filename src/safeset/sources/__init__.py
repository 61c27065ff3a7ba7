"""Sources: recognising an input, splitting it into shards, and reading its rows as `Item`s.

Kinds, detected from the path:
- `webdataset`: a `.tar` or a folder holding tars (img2dataset output, its parquet beside each tar);
- `image_parquet`: a parquet with an image-bytes column (Hugging Face layout);
- `table`: a metadata parquet / CSV / JSON-lines file with a URL column;
- `folder`: a folder of image files (recursive), or one image file.
A folder of parquet files is each file detected on its own.

An input may also be a URI on object storage (`s3://bucket/shards/`, see `safeset.storage`): tars
(with their parquet beside), parquet files and tables, planned from the store's listing with the
names a local copy would get, so the outputs are the same; a large parquet table is cut into parts
as a local one is. Loose image files are not read from object storage (one request per image):
pack them into tars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import BadInputError, UsageError
from ..storage import Remote, is_remote
from .base import IMAGE_SUFFIXES, Reader, ReadOptions, Shard, walk_files
from .folder import FolderReader
from .image_parquet import ImageParquetReader, image_column
from .tables import TABLE_SUFFIXES, TableReader, parquet_file
from .webdataset import TAR_SUFFIXES, WebdatasetReader, sidecar_parquet


def _registry(*readers: Reader) -> dict[str, Reader]:
    found: dict[str, Reader] = {}
    for reader in readers:
        if reader.kind in found:
            raise RuntimeError(f"reader kind {reader.kind!r} is registered twice")
        found[reader.kind] = reader
    return found


READERS = _registry(WebdatasetReader(), ImageParquetReader(), TableReader(), FolderReader())


def reader_for(kind: str) -> Reader:
    return READERS[kind]


def detect_kind(path: Path, options: ReadOptions) -> str:
    """The kind of one input path; `BadInputError` naming it when it is none of them."""
    if path.is_dir():
        files = walk_files(path)
        if any(f.name.endswith(TAR_SUFFIXES) for f in files):
            return "webdataset"
        if files and all(f.suffix.lower() == ".parquet" for f in files):
            return "parquet_folder"
        return "folder"
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "webdataset"
    if name.endswith(".parquet"):
        schema = parquet_file(path).schema_arrow
        return "image_parquet" if image_column(schema, options.image_col) else "table"
    if name.endswith(TABLE_SUFFIXES):
        return "table"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "folder"
    raise BadInputError(
        path,
        "cannot tell what kind of input this is (expected a .tar, .parquet, .csv, .jsonl, an image "
        "file or a folder of them)",
    )


def plan_shards(inputs: Sequence[str | Path], options: ReadOptions = ReadOptions()) -> list[Shard]:
    """Every shard of every input, in a stable order. Each input is named by its last path component
    in outputs (`clean/NAME/...`, row ids), so two inputs may not share a name."""
    shards: list[Shard] = []
    names: dict[str, str] = {}
    for raw in inputs:
        if is_remote(raw):
            remote = Remote(str(raw))
            name, where = remote.name, remote.uri
        else:
            path = Path(raw).resolve()
            if not path.exists():
                raise UsageError(f"input {raw} does not exist")
            name, where = path.name, str(path)
        if name in names:
            raise UsageError(f"inputs {names[name]} and {where} have the same name {name!r}; rename one")
        names[name] = where
        if is_remote(raw):
            shards.extend(_remote_shards(remote, options))
            continue
        kind = detect_kind(path, options)
        if kind == "parquet_folder":
            for file in walk_files(path):
                file_kind = detect_kind(file, options)
                rel = f"{name}/{file.relative_to(path).as_posix()}"
                shards.extend(reader_for(file_kind).shards(file, rel, options))
        else:
            shards.extend(reader_for(kind).shards(path, name, options))
    return shards


def _remote_shards(remote: Remote, options: ReadOptions) -> list[Shard]:
    """Shards of an input on object storage, named as `plan_shards` names a local copy's."""
    folder = remote.is_dir()  # asked once: on a store each call is a request
    if folder:
        listing = [rel for rel, _ in remote.files(remember=True)]
        entries = [(rel, f"{remote.name}/{rel}", remote.child(rel).uri) for rel in listing]
    elif remote.exists():
        entries = [(remote.name, remote.name, remote.uri)]
    else:
        raise UsageError(f"input {remote.uri} does not exist")
    present = {rel for rel, _, _ in entries}
    tars = [e for e in entries if e[0].lower().endswith(TAR_SUFFIXES)]
    if tars:  # as a local folder holding tars: the tars, each with its parquet if there is one
        shards = []
        for rel, name, uri in tars:
            sidecar = sidecar_parquet(PurePosixPath(rel))
            side = Remote(uri).sibling(sidecar.name)
            beside = sidecar.as_posix() in present if folder else side.exists()
            files = (uri, side.uri) if beside else (uri,)
            shards.append(Shard("webdataset", name, uri, files, options=options))
        return shards
    shards = []
    for rel, name, uri in entries:
        lower = rel.lower()
        if lower.endswith(".parquet") and not image_column(parquet_file(uri).schema_arrow, options.image_col):
            shards.extend(reader_for("table").shards(uri, name, options))  # parts, each read in place
            continue
        if lower.endswith(".parquet"):
            kind = "image_parquet"
        elif lower.endswith(TABLE_SUFFIXES):
            kind = "table"
        else:
            raise BadInputError(
                uri,
                "not read from object storage (only .tar shards, .parquet, .csv and .jsonl files are; "
                "pack loose images into webdataset tars)",
            )
        shards.append(Shard(kind, name, uri, (uri,), options=options))
    return shards


__all__ = ["READERS", "ReadOptions", "Reader", "Shard", "detect_kind", "plan_shards", "reader_for"]
