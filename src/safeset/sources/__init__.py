"""Sources: recognising an input, splitting it into shards, and reading its rows as `Item`s.

Kinds (`--input-kind`, detected when not given):
- `webdataset`: a `.tar` or a folder holding tars (img2dataset output, its parquet beside each tar);
- `image_parquet`: a parquet with bytes in it (Hugging Face layout, img2dataset's parquet output);
- `table`: a metadata parquet / CSV / JSON-lines file with a URL column;
- `folder`: a folder of image files (recursive), one image file, or img2dataset's files layout.

A folder is recognised by all of what it holds, not by its first file: tars (with their parquet
and stats sidecars) make a webdataset; parquet and table files (a Hugging Face dataset repository,
Spark output, img2dataset's parquet output) are each read as what they are; anything else is a
folder of images. Files that are known not to be data (READMEs, licences, `_SUCCESS`, stats and
index sidecars) are left out and listed in the report. A folder that mixes kinds (tars and loose
images, say) is refused with what was found, unless `--input-kind` says how to read it, and then
what does not belong to that kind is listed in the report, never silently skipped; `folder`
reads every file, whatever it is, as a file to hash.

An input may also be a URI on object storage (`s3://bucket/shards/`, see `safeset.storage`): tars
(with their parquet beside), parquet files and tables, planned from the store's listing with the
names a local copy would get, so the outputs are the same; a large parquet table is cut into parts
as a local one is. Loose image files are not read from object storage (one request per image):
pack them into tars.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from ..errors import BadInputError, UsageError
from ..storage import Remote, is_remote
from .base import IMAGE_SUFFIXES, Reader, ReadOptions, Shard, walk, walk_files
from .folder import FolderReader, files_layout
from .image_parquet import ImageParquetReader, image_column
from .tables import TABLE_SUFFIXES, TableReader, parquet_file
from .webdataset import TAR_SUFFIXES, WebdatasetReader, sidecars


def _registry(*readers: Reader) -> dict[str, Reader]:
    found: dict[str, Reader] = {}
    for reader in readers:
        if reader.kind in found:
            raise RuntimeError(f"reader kind {reader.kind!r} is registered twice")
        found[reader.kind] = reader
    return found


READERS = _registry(WebdatasetReader(), ImageParquetReader(), TableReader(), FolderReader())
INPUT_KINDS: tuple[str, ...] = tuple(READERS)


def reader_for(kind: str) -> Reader:
    return READERS[kind]


# Files of a dataset folder that are known not to be data: what Hugging Face repositories, Spark,
# img2dataset and webdataset index tools leave beside the data.
_NOT_DATA = re.compile(
    r"(readme|license|licence|copying|notice|citation)(\.\w+)?|_success|_committed_\w+|_started_\w+"
    r"|.*_stats\.json|dataset_(info|infos|dict)\.json|state\.json|.*\.(md|crc|idx|index|yaml|yml)",
    re.IGNORECASE,
)


@dataclass
class Plan:
    """The shards of every input, and the files found beside the data that no shard reads."""

    shards: list[Shard] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}, for the report

    def ignore(self, path: Path | str, reason: str) -> None:
        self.ignored.append({"path": str(path), "reason": reason})


def _what(path: Path | PurePosixPath) -> str:
    """What one file of a folder is, for recognising the folder's layout."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(".parquet"):
        return "parquet"
    if path.suffix.lower() in (".csv", ".jsonl"):
        return "table"
    if _NOT_DATA.fullmatch(path.name):
        return "not data"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "other"


def _folder_kind(path: Path, files: list[Path]) -> tuple[str, list[Path]]:
    """The kind a folder is read as, and the files it holds that do not belong to that kind."""
    tars = {f for f in files if f.name.lower().endswith(TAR_SUFFIXES)}
    beside_tars = {side for t in tars for side in sidecars(t)}
    layout = files_layout(path)  # img2dataset's files layout: its samples and parquets are a folder's rows
    claimed = {folder for folder, _ in layout} | {parquet for _, parquet in layout}
    kinds: dict[Path, str] = {}
    for f in files:
        if f in tars or f in beside_tars:
            continue
        kinds[f] = "image" if f.relative_to(path).parts[0] in claimed else _what(f)
    counts = Counter(kinds.values())
    if tars:
        data = {k: n for k, n in counts.items() if k != "not data"}
        if not data:
            return "webdataset", [f for f, k in kinds.items() if k == "not data"]
        found = ", ".join(f"{n} {k} file(s)" for k, n in sorted(data.items()))
        raise BadInputError(
            path,
            f"holds {len(tars)} tar(s) and also {found}: it is not clear how to read it; say which with "
            "--input-kind (webdataset: the tars, listing the rest in the report; folder: every file hashed "
            "as a file), or move the other files out",
        )
    if counts["parquet"] + counts["table"] and not (counts["image"] + counts["other"]):
        return "tables", [f for f, k in kinds.items() if k == "not data"]
    if counts["parquet"] + counts["table"]:
        found = ", ".join(f"{n} {k} file(s)" for k, n in sorted(counts.items()))
        raise BadInputError(
            path,
            f"holds {found}: it is not clear whether the tables or the files are the data; say which with "
            "--input-kind (image_parquet or table: the tables; folder: every file hashed as a file)",
        )
    return "folder", []


def detect_kind(path: Path, options: ReadOptions) -> str:
    """The kind of one input path; `BadInputError` naming it when it is none of them. A folder of
    tables is "tables": each file is then detected on its own."""
    if path.is_dir():
        return _folder_kind(path, walk_files(path))[0]
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "webdataset"
    if name.endswith(".parquet"):
        schema = parquet_file(path).schema_arrow
        return "image_parquet" if image_column(schema, options.image_col, path) else "table"
    if name.endswith(TABLE_SUFFIXES):
        return "table"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "folder"
    raise BadInputError(
        path,
        "cannot tell what kind of input this is (expected a .tar, .parquet, .csv, .jsonl, an image "
        "file or a folder of them; --input-kind folder hashes any file as it is)",
    )


def plan_shards(inputs: Sequence[str | Path], options: ReadOptions = ReadOptions()) -> Plan:
    """Every shard of every input, in a stable order. Each input is named by its last path component
    in outputs (`clean/NAME/...`, row ids), so two inputs may not share a name. Every input is read
    as `options.input_kind` if it is set (`--input-kind`), else as what it is detected to be."""
    kind = options.input_kind
    if kind is not None and kind not in READERS:
        raise UsageError(f"no input kind {kind!r}; kinds: {', '.join(INPUT_KINDS)}")
    plan = Plan()
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
            if kind is not None:
                raise UsageError(f"--input-kind is for local inputs; {remote.uri} is planned from its listing")
            plan.shards.extend(_remote_shards(plan, remote, options))
        else:
            _plan_local(plan, path, name, options, kind)
    return plan


def _plan_local(plan: Plan, path: Path, name: str, options: ReadOptions, kind: str | None) -> None:
    files, left_out = walk(path) if path.is_dir() else ([path], [])
    if kind is None:
        kind, ignored = _folder_kind(path, files) if path.is_dir() else (detect_kind(path, options), [])
        reason = "not data (a README, licence, marker or sidecar)"
    else:
        ignored = _not_of_kind(path, files, kind, options)
        reason = f"not read as a {kind} input (--input-kind)"
    for file in ignored:
        plan.ignore(file, reason)
    for entry, why in left_out:
        plan.ignore(entry, why)
    skip = set(ignored)
    if kind == "tables" or (kind in ("image_parquet", "table") and path.is_dir()):
        for file in files:
            if file in skip:
                continue
            file_kind = detect_kind(file, options) if kind == "tables" else _checked(file, kind, options)
            rel = f"{name}/{file.relative_to(path).as_posix()}"
            plan.shards.extend(_rooted(reader_for(file_kind).shards(file, rel, options), path))
        return
    if kind in ("image_parquet", "table"):
        kind = _checked(path, kind, options)
    plan.shards.extend(_rooted(reader_for(kind).shards(path, name, options), path))


def _not_of_kind(path: Path, files: list[Path], kind: str, options: ReadOptions) -> list[Path]:
    """With `--input-kind`: the files of a folder that kind does not read."""
    if not path.is_dir() or kind == "folder":
        return []
    if kind == "webdataset":
        tars = [f for f in files if f.name.lower().endswith(TAR_SUFFIXES)]
        if not tars:
            raise BadInputError(path, "holds no .tar file (--input-kind webdataset)")
        read = set(tars) | {side for t in tars for side in sidecars(t)}
        return [f for f in files if f not in read]
    wanted = (".parquet",) if kind == "image_parquet" else TABLE_SUFFIXES
    return [f for f in files if not f.name.lower().endswith(wanted)]


def _checked(file: Path, kind: str, options: ReadOptions) -> str:
    """A file asked to be read as `kind`: a parquet with bytes in it is never a metadata table
    (its bytes would reach the clean release unchecked)."""
    if file.name.lower().endswith(".parquet"):
        holds_bytes = image_column(parquet_file(file).schema_arrow, options.image_col, file) is not None
        if kind == "table" and holds_bytes:
            raise BadInputError(file, "holds image bytes: it is an image_parquet input, not a table")
        if kind == "image_parquet" and not holds_bytes:
            raise BadInputError(file, "holds no bytes to check: it is a table input, not an image_parquet")
    elif kind == "image_parquet":
        raise BadInputError(file, "is not a parquet file (--input-kind image_parquet)")
    return kind


def _rooted(shards: list[Shard], root: Path) -> list[Shard]:
    return [replace(shard, root=str(root)) for shard in shards]


def _remote_shards(plan: Plan, remote: Remote, options: ReadOptions) -> list[Shard]:
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
        read = {rel for rel, _, _ in tars} | {s.as_posix() for rel, _, _ in tars for s in sidecars(PurePosixPath(rel))}
        for rel, _, uri in entries:
            if rel not in read and _what(PurePosixPath(rel)) != "not data":
                raise BadInputError(uri, "lies beside the tars of this input: move it out (a webdataset is its tars)")
            if rel not in read:
                plan.ignore(uri, "not data (a README, licence, marker or sidecar)")
        shards = []
        for rel, name, uri in tars:
            beside = [(path.as_posix(), Remote(uri).sibling(path.name)) for path in sidecars(PurePosixPath(rel))]
            there = [side.uri for path, side in beside if (path in present if folder else side.exists())]
            files = (uri, *there) if beside[0][1].uri in there else (uri,)  # stats only with the parquet
            shards.append(Shard("webdataset", name, uri, files, options=options))
        return shards
    shards = []
    for rel, name, uri in entries:
        lower = rel.lower()
        if lower.endswith(".parquet") and not image_column(parquet_file(uri).schema_arrow, options.image_col, uri):
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


__all__ = [
    "INPUT_KINDS",
    "READERS",
    "Plan",
    "ReadOptions",
    "Reader",
    "Shard",
    "detect_kind",
    "plan_shards",
    "reader_for",
]
