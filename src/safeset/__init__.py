"""safeset: find and remove known illegal and unwanted images from image-text datasets, without any
person viewing them, and write a cleaned, diffable release with an audit report.

    import safeset
    h = safeset.pdq(open("photo.jpg", "rb").read())   # PdqHash: str(h), h.quality, h - other
    idx = safeset.PdqIndex(hashes)                     # (N, 32) uint8
    q, e, d = idx.search(queries, radius=31)
    report = safeset.scan(["shards/"], "out/")         # the whole audit; returns report.json's content
    report = safeset.decide("out/", banks=["iwf"])     # the audit decided again, no image read again
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .banks import BankStore, PdqIndex
from .errors import BadInputError, SafesetError, UsageError
from .hashing import PdqHash, pdq
from .policy import Policy

# The scan machinery (pyarrow, readers, engines) is imported on first use, so that `safeset bank`
# and `import safeset` for hashing stay light.
_LAZY = {"Auditor": "pipeline", "ScanConfig": "pipeline", "CheckSettings": "pipeline", "ReadOptions": "sources"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "__version__":  # importlib.metadata is a twelfth of a worker's start-up: on first use
        return _version()
    raise AttributeError(f"module 'safeset' has no attribute {name!r}")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("safeset")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def scan(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    banks: Sequence[str] | None = None,
    policy: Policy | str | Path | None = None,
    workers: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Audit `inputs` against the banks and write the outputs of DESIGN.md under `out`.

    `banks`: bank names (default: every enabled bank). `policy`: a `Policy`, a TOML path, or a
    preset name (default: "default"). Other options are fields of `ScanConfig` (home, engine,
    read=ReadOptions(...), fetch=True or FetchOptions(...), save_images, progress, ...) or of
    `CheckSettings` (pdq_threshold, pdq_dihedral, ...).
    Returns the report as a dict.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    policy = _policy(policy if policy is not None else "default")
    from .pipeline import CheckSettings, ScanConfig, run_scan

    check_fields = {f.name for f in fields(CheckSettings)}
    unknown = set(options) - {f.name for f in fields(ScanConfig)} - check_fields
    if unknown:
        raise TypeError(f"unknown scan option(s): {', '.join(sorted(unknown))}")
    check = {k: options.pop(k) for k in list(options) if k in check_fields}
    if check:
        options["check"] = CheckSettings(**check)
    if options.get("fetch") is True:
        from .fetch import FetchOptions

        options["fetch"] = FetchOptions()
    config = ScanConfig(
        inputs=tuple(str(i) for i in inputs),
        out=str(out),
        banks=tuple(banks) if banks else None,
        policy=policy,
        workers=workers,
        **options,
    )
    return run_scan(config)


def decide(
    out: str | Path,
    banks: Sequence[str] | None = None,
    policy: Policy | str | Path | None = None,
    workers: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Decide the scan in `out` again (a round): its stored observations matched against the banks'
    current content and decided by the policy, the clean release, manifests and report rewritten,
    no image read again. `banks`, `policy` (a `Policy`, a TOML path or a preset name) and the PDQ
    thresholds default to what `out` was last decided with. Other options are fields of
    `DecideConfig` (home, engine, pdq_threshold, progress, ...). Returns the report as a dict."""
    from .pipeline.scan import DecideConfig, run_decide

    return run_decide(
        DecideConfig(
            out=str(out),
            banks=tuple(banks) if banks else None,
            policy=_policy(policy) if policy is not None else None,
            workers=workers,
            **options,
        )
    )


def expand(
    out: str | Path,
    embeddings: str | Path,
    seeds: str | Path = "removed",
    k: int = 100,
    min_similarity: float = 0.85,
    embedding_col: str | None = None,
    url_col: str | None = None,
    banks: Sequence[str] | None = None,
    policy: Policy | str | Path | None = None,
    workers: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A neighbour-expansion round over the scan in `out` (see `safeset.pipeline.expand`): the
    `k` rows nearest each seed in the dataset's `embeddings` (LAION's or DataComp's layout, or a
    parquet with a vector column), exactly; those at `min_similarity` or above become candidates,
    and a decide round applies the policy to them. `seeds`: "removed" (rows a bank match removed),
    "review", "confirmed" (rows verified hashes match), or a file of row ids, keys or URLs (one a
    line) or a .npy of vectors. Other options
    are `decide`'s. Returns the report as a dict; its `expansion` says what each round found."""
    from .pipeline.expand import ExpandConfig, run_expand
    from .pipeline.scan import DecideConfig

    deciding = DecideConfig(
        out=str(out),
        banks=tuple(banks) if banks else None,
        policy=_policy(policy) if policy is not None else None,
        workers=workers,
        **options,
    )
    return run_expand(
        ExpandConfig(str(out), str(embeddings), str(seeds), k, min_similarity, embedding_col, url_col, deciding)
    )


def _policy(policy: Policy | str | Path) -> Policy:
    if isinstance(policy, Policy):
        return policy
    return Policy.load(policy) if Path(policy).suffix == ".toml" else Policy.preset(str(policy))


def hash_file(path: str | Path) -> dict[str, Any]:
    """md5, sha1, sha256, PDQ and its quality of one file, with a status and reason if it is not an
    image; of a video, the number of its sampled frames (`video_frames`; no PDQ of its own)."""
    from .model import Item, Status
    from .pipeline import hash_item
    from .sources.base import UnreadableFile, read_file

    path = Path(path)
    item = Item(row_id=str(path), shard="", index=0, key=path.name)
    try:
        item.payloads = [read_file(path)]
    except UnreadableFile as exc:
        item.status, item.error = Status.NO_IMAGE, exc.reason
    result = hash_item(item)
    fields_ = ("md5", "sha1", "sha256", "pdq", "pdq_quality", "error")
    found = {"path": str(path), "status": str(result.status), **{f: getattr(result, f) for f in fields_}}
    if result.frames is not None:  # a video has frames, no PDQ of its own: `safeset hash --vpdq` prints them
        found["video_frames"] = len(result.frames)
    return found


__all__ = [
    "Auditor",
    "BadInputError",
    "BankStore",
    "CheckSettings",
    "PdqHash",
    "PdqIndex",
    "Policy",
    "ReadOptions",
    "SafesetError",
    "ScanConfig",
    "UsageError",
    "__version__",
    "decide",
    "expand",
    "hash_file",
    "pdq",
    "scan",
]
