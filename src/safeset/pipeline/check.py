"""Checking items: hash each one, match a batch against the banks, let the policy decide.

The bytes of an item live only between `hash_item` receiving it and returning: the result keeps
hashes, and the item's `data` is dropped, so a flagged image is never held longer than its hashing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..banks import Matcher, MatchSettings
from ..banks.columns import flat, struct_field
from ..banks.signal_types import InvalidEntry, signal_type
from ..banks.verdicts import Verdicts
from ..banks.vpdq import COMPARED_PERCENT, QUERY_PERCENT
from ..errors import UsageError
from ..hashing import (
    DecodeError,
    DecodeLimits,
    UnsupportedMedia,
    byte_digests,
    open_image,
    pdq_image,
    pdq_partial,
    url_md5,
)
from ..hashing.columns import whole
from ..hashing.digests import threatexchange_url_md5
from ..hashing.image import DEFAULT_MAX_PIXELS
from ..hashing.sniff import VIDEO_KINDS, is_video
from ..hashing.video import Video, VideoLimits, hash_videos
from ..model import HASH_FIELDS, Decision, Item, ItemResult, Match, Payload, PayloadResult, Status, printable
from ..neighbours import SIGNAL as EXPANDED
from ..options import option
from ..policy import Policy
from ..policy.rules import signal_values
from ..signals import models, nsfw
from ..signals.optout import SIGNAL as OPTOUT
from ..signals.optout import in_file_optouts
from ..sinks.results import MATCH_TYPE, results_table
from . import flood

BATCH = 256  # items matched per vectorised index call


# What of `CheckSettings` only decides, given the observations: how near a PDQ must be to match,
# and how much of a video must match a listed one.
MATCH_SETTINGS = ("pdq_threshold", "pdq_variant_threshold", "vpdq_query_percent", "vpdq_compared_percent")


@dataclass(frozen=True)
class CheckSettings:
    pdq_threshold: int = 31
    pdq_variant_threshold: int | None = None  # for flipped/rotated/trimmed variants; None: pdq_threshold
    pdq_min_quality: int = 50
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    pdq_dihedral: bool = True  # also query the 8 flips and quarter turns of each image
    pdq_trim: bool = True  # also query the image without uniform borders (letterbox, padding)
    pdq_exact: bool = False  # hash every image from its full decode: the reference's bits, always
    nsfw: bool = False  # score every image with the nsfw classifier (`signals.nsfw`)
    embed_model: str | None = None  # an ONNX image encoder (`signals.models`)
    embed_size: tuple[int, int] = (224, 224)  # its input's height and width, read from the model
    score_models: tuple[tuple[str, str], ...] = ()  # (signal, model file) turning embeddings into scores
    # Videos (`hashing.video`): frames hashed per second (vPDQ's 1; 0 every frame), and the limits a
    # hostile file meets (past them, the frames hashed so far are kept and the video is not all checked)
    video_fps: float = field(
        default=1.0,
        metadata=option("Video frames hashed per second of video (vPDQ's rate); 0 hashes every frame.", min=0),
    )
    max_video_seconds: float = field(
        default=VideoLimits.max_seconds,
        metadata=option("Seconds of a video hashed; a longer one has its start hashed and is held for review.", min=1),
    )
    max_video_frame_pixels: int = field(
        default=VideoLimits.max_frame_pixels,
        metadata=option("Pixels of a video frame decoded at most; a video of larger frames is held for review.", min=1),
    )
    max_video_frames: int = field(
        default=VideoLimits.max_decoded_frames,
        metadata=option("Frames of a video hashed at most, whatever its frame rate claims.", min=1),
    )
    max_video_pixels: int = field(
        default=VideoLimits.max_pixels,
        metadata=option(
            "Pixels decoded of one video file in all (about 3 minutes of 1080p by default): what bounds the "
            "time a video costs; past it the video is held for review.",
            min=1,
        ),
    )
    vpdq_query_percent: float = QUERY_PERCENT  # a video matches a listed one when this share of its frames match...
    vpdq_compared_percent: float = COMPARED_PERCENT  # ...and this share of the listed one's (vPDQ's defaults)

    def __post_init__(self) -> None:
        # as read back from a run's record (JSON has lists, not tuples): hashable, as a key must be
        object.__setattr__(self, "embed_size", tuple(self.embed_size))
        object.__setattr__(self, "score_models", tuple(tuple(pair) for pair in self.score_models))
        for name in ("pdq_threshold", "pdq_variant_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 256:
                raise UsageError(f"--{name.replace('_', '-')} must be in 0..256, got {value}")
        if not 0 <= self.pdq_min_quality <= 100:
            raise UsageError(f"PDQ minimum quality must be in 0..100, got {self.pdq_min_quality}")
        for name in ("vpdq_query_percent", "vpdq_compared_percent"):
            if not 0 <= getattr(self, name) <= 100:
                raise UsageError(f"--{name.replace('_', '-')} must be in 0..100, got {getattr(self, name)}")
        if self.video_fps < 0:
            raise UsageError(f"--video-fps must be 0 (every frame) or more, got {self.video_fps}")

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(max_pixels=self.max_image_pixels)

    @property
    def video_limits(self) -> VideoLimits:
        return VideoLimits(
            self.max_video_seconds, self.max_video_frame_pixels, self.max_video_frames, self.max_video_pixels
        )

    @property
    def seconds_per_hash(self) -> float:
        return 1 / self.video_fps if self.video_fps else 0.0

    @property
    def thresholds(self) -> dict[str, float | None]:
        """The settings that only decide (`MATCH_SETTINGS`): changing them is a decide round."""
        return {name: getattr(self, name) for name in MATCH_SETTINGS}

    @property
    def match(self) -> MatchSettings:
        return MatchSettings(
            self.pdq_threshold,
            self.pdq_min_quality,
            self.pdq_variant_threshold,
            self.vpdq_query_percent,
            self.vpdq_compared_percent,
        )


def hash_payload(payload: Payload, settings: CheckSettings = CheckSettings(), classify: bool = False) -> PayloadResult:
    """Digests and PDQ of one payload, with its status; its bytes are dropped here. `classify`:
    also keep the inputs of the models the settings ask for (`signals.nsfw`, `signals.models`)."""
    hashed = PayloadResult(name=payload.name)
    data, payload.data = payload.data, None
    hashed.optout = in_file_optouts(data) if data else ()
    digests = payload.digests if payload.digests is not None else byte_digests(data) if data else None
    if digests is not None:
        hashed.md5, hashed.sha1, hashed.sha256 = digests["md5"], digests["sha1"], digests["sha256"]
    if payload.error:  # too large to hold (hashed as it streamed past), or cut off: not decoded whole
        hashed.status, hashed.error = Status.DECODE_FAILED, payload.error
        head, payload.head = payload.head, None
        if head and is_video(head):  # the frames of what is here are matched; the video is not all checked
            return _hash_video(hashed, bytes(head), settings, cut=payload.error)
        if head:
            hashed.pdq_variants = _partial(head, settings)
        return hashed
    if not data:
        hashed.status, hashed.error = Status.NO_IMAGE, "empty file" if data is not None else "no image bytes"
        return hashed
    try:
        image = pdq_image(
            data,
            settings.limits,
            settings.pdq_dihedral,
            settings.pdq_trim,
            settings.pdq_exact,
            payload.resized,
            settings.pdq_min_quality,
        )
    except UnsupportedMedia as exc:
        if exc.reason in VIDEO_KINDS:  # no image decoder takes it, and it is a video's container
            return _hash_video(hashed, data, settings)
        hashed.status, hashed.error = Status.UNSUPPORTED_MEDIA, exc.reason
        return _as_video(hashed, data, settings)
    except DecodeError as exc:
        hashed.status, hashed.error = Status.DECODE_FAILED, exc.reason
        if exc.reason == "truncated":
            hashed.pdq_variants = _partial(data, settings)
        return _as_video(hashed, data, settings)
    if classify:
        prepare = {"nsfw": nsfw.classifier_input if settings.nsfw else None}
        if settings.embed_model:
            prepare["embed"] = partial(models.prepare, size=settings.embed_size)
        for name, made in prepare.items():
            try:
                if made is not None:
                    hashed.inputs[name] = made(data, settings.limits)
            except DecodeError:  # decoded for PDQ but not again in colour: no input, no score
                pass
    plain = image.variants.pop("")
    hashed.pdq, hashed.pdq_quality = str(plain), plain.quality
    hashed.width, hashed.height = image.width, image.height
    hashed.pdq_variants = {name: str(h) for name, h in image.variants.items()}
    if image.incomplete:  # its first frame is checked, not all it holds
        hashed.status, hashed.error = Status.DECODE_FAILED, image.incomplete
    if data[4:8] == b"ftyp" and getattr(open_image(data, settings.limits), "n_frames", 1) > 1:
        # an AVIF or HEIF sequence is a video too (an AV1 video need only call itself one): its
        # frames as vPDQ samples them, besides its pictures' PDQs
        hashed.frames = _as_video(replace(hashed, frames=None), data, settings).frames
    return hashed


def _hash_video(
    hashed: PayloadResult, data: bytes, settings: CheckSettings, cut: str | None = None, any_box: bool = False
) -> PayloadResult:
    """A video's sampled frames (their PDQs: see `hashing.video`), of its best stream, and of its
    other video streams as payloads of their own (`streams`, named `NAME#stream<index>`). A video
    not hashed to its end (past a limit, broken part way, `cut` short before it reached us) keeps
    the frames it gave and is `video_incomplete`; a container with no video stream is audio.
    `any_box`: ISO BMFF whatever its brands say (`_as_video`)."""
    try:
        first, *others = hash_videos(data, settings.seconds_per_hash, settings.video_limits, any_box=any_box)
    except UnsupportedMedia as exc:
        hashed.status, hashed.error = Status.UNSUPPORTED_MEDIA, exc.reason
        return hashed
    except DecodeError as exc:
        hashed.status, hashed.error = Status.VIDEO_INCOMPLETE, f"video: {cut or exc.reason}"
        return hashed
    _video_result(hashed, first, cut)
    hashed.streams = [_video_result(PayloadResult(name=f"{hashed.name}#stream{v.stream}"), v, cut) for v in others]
    return hashed


def _as_video(hashed: PayloadResult, data: bytes, settings: CheckSettings) -> PayloadResult:
    """An ISO BMFF file no image decoder took (its brands say HEIF or AVIF, which anyone may write
    into a video's header): hashed as a video if FFmpeg gives frames of it, else as it was."""
    if data[4:8] != b"ftyp":
        return hashed
    video = _hash_video(replace(hashed, status=Status.OK, error=None), data, settings, any_box=True)
    return video if video.frames else hashed


def _video_result(hashed: PayloadResult, video: Video, cut: str | None) -> PayloadResult:
    hashed.frames, hashed.width, hashed.height = video.frames, video.width, video.height
    hashed.status, hashed.error = Status.OK, None
    if cut or video.incomplete:
        hashed.status, hashed.error = Status.VIDEO_INCOMPLETE, f"video: {cut or video.incomplete}"
    return hashed


def _partial(data: bytes, settings: CheckSettings) -> dict[str, str]:
    """PDQ variants of what decodes of an image not all there (see `hashing.pdq_partial`): matched
    like any variant, while the payload stays `decode_failed` and has no PDQ of its own."""
    found = pdq_partial(data, settings.limits, settings.pdq_dihedral, settings.pdq_min_quality)
    return {name: str(value) for name, value in found.items()}


# A payload that could not be checked makes its whole row unchecked, the worst one first. An empty
# extra payload holds nothing to check and changes nothing.
_DEGRADING = (Status.VIDEO_INCOMPLETE, Status.DECODE_FAILED, Status.UNSUPPORTED_MEDIA)


def hash_item(item: Item, settings: CheckSettings = CheckSettings()) -> ItemResult:
    """Every payload of the item hashed (digests, PDQ); the row's own hash fields are its primary
    payload's, the first decoded image among them (else the first), the others go to `payloads`.
    The row's status is the primary's, unless another payload could not be checked."""
    result = ItemResult(
        row_id=item.row_id,
        shard=item.shard,
        index=item.index,
        key=item.key,
        url=item.url,
        caption=item.caption,
        signals=item.signals,
        status=item.status or Status.OK,
        error=item.error,
        locator=item.locator,
    )
    if item.url:
        result.url_md5 = url_md5(item.url)
        other = threatexchange_url_md5(item.url)
        result.url_md5_threatexchange = other if other != result.url_md5 else None
    hashed: list[PayloadResult] = []
    for payload in item.payloads:
        # the classifier scores the row's image: the first that decodes (a video is not scored)
        classify = (settings.nsfw or bool(settings.embed_model)) and not any(
            h.status is Status.OK and h.frames is None for h in hashed
        )
        done = hash_payload(payload, settings, classify)
        hashed += [done, *done.streams]  # a video's other streams: payloads of their own
        done.streams = []
    item.payloads = []
    if not hashed:
        if item.status is None:
            result.status, result.error = Status.NO_IMAGE, "no image bytes"
        return result
    primary = next((h for h in hashed if h.status is Status.OK), hashed[0])
    # A row whose status its fetcher set (a page: `not_image`) keeps it; its digests are matched.
    judged = item.status is not None
    for name in ("status", "error", *HASH_FIELDS, "pdq_variants", "frames"):
        if not (judged and name in ("status", "error")):
            setattr(result, name, getattr(primary, name))
    result.payloads = [h for h in hashed if h is not primary]
    result.inputs = primary.inputs  # the row's image is its primary one's
    for h in hashed:
        h.inputs = {}
    # 1.0 where bytes of the row opt out, 0.0 where bytes were read and do not: a row without
    # the signal had no bytes to read, which rules and the report count apart
    said = sorted({source for h in hashed for source in h.optout})
    if said:
        result.signals = {**result.signals, OPTOUT: 1.0, **{f"{OPTOUT}.{source}": 1.0 for source in said}}
    elif any(h.md5 for h in hashed):
        result.signals = {**result.signals, OPTOUT: 0.0}
    worst = min(result.payloads, key=lambda h: _rank(h.status), default=None)
    if worst is not None and _rank(worst.status) < _rank(result.status):
        result.status, result.error = worst.status, f"{printable(worst.name)}: {worst.error}"
    return result


def _rank(status: Status) -> int:
    return _DEGRADING.index(status) if status in _DEGRADING else len(_DEGRADING)


class Auditor:
    """Banks, a policy and settings, loaded once: what checks items (hashing, matching, policy),
    for the shard worker and in-process callers alike (`safeset.Auditor`). It holds no state
    beyond what it was built with, so one can serve any number of checks, and several live side
    by side.

        auditor = safeset.Auditor(home, banks=["iwf"], policy="strict")
        row = auditor.check_bytes(open("x.jpg", "rb").read(), url="https://...")
        row["decision"], row["matches"]   # the result row a scan writes for such a row

    `banks`: names (default: every enabled bank, current versions); `policy`: a `Policy` or a
    preset name; `settings`: `CheckSettings`."""

    def __init__(
        self,
        home: str | Path | None = None,
        banks: Sequence[str] | None = None,
        policy: Policy | str | None = None,
        settings: CheckSettings | None = None,
    ):
        from ..banks import BankStore

        store = BankStore(home)
        policy = Policy.preset(policy) if isinstance(policy, str) else policy or Policy.preset("default")
        policy.check_banks(store.names())
        settings = settings or CheckSettings()
        chosen = store.resolve([banks] if isinstance(banks, str) else banks)
        self._setup(Matcher.load(store, chosen, settings.match), policy, settings, Verdicts.load(store.home))
        self.banks = [bank.name for bank in chosen]  # what it matches against (none: nothing can match)

    @classmethod
    def of(cls, matcher: Matcher, policy: Policy, settings: CheckSettings, verdicts: Verdicts | None = None) -> Auditor:
        """An auditor of banks already loaded (the shard worker loads the very versions a scan planned)."""
        auditor = cls.__new__(cls)
        auditor._setup(matcher, policy, settings, verdicts)
        return auditor

    def _setup(self, matcher: Matcher, policy: Policy, settings: CheckSettings, verdicts: Verdicts | None) -> None:
        self.matcher = matcher
        self.verdicts = verdicts
        self.policy = policy
        self.settings = settings
        self._classifier: nsfw.NsfwClassifier | None = None  # loaded with the first image to score
        self._encoder: models.Encoder | None = None  # likewise, and the score models with it
        self._scorers: list[models.Scorer] = []
        self._dim: int | None = None

    def embedding_dim(self) -> int:
        """The `--embed-model`'s embedding size (the encoder loaded if it was not yet)."""
        if self._encoder is None:
            self._encoder = models.Encoder(self.settings.embed_model)
            self._scorers = [models.Scorer(name, path) for name, path in self.settings.score_models]
        if self._dim is None:
            self._dim = self._encoder.embed([np.full((*self._encoder.size, 3), 128, np.uint8)]).shape[1]
        return self._dim

    def check_bytes(self, data: bytes, url: str | None = None, caption: str | None = None) -> dict[str, Any]:
        """Hash, match and decide one image (or any bytes): the result row a scan writes."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"check_bytes takes bytes, not {type(data).__name__}")
        item = Item(row_id="", shard="", index=0, key="", url=url, caption=caption, payloads=[Payload("", bytes(data))])
        return self._row(hash_item(item, self.settings))

    def check_hashes(
        self,
        *,
        md5: str | None = None,
        sha1: str | None = None,
        sha256: str | None = None,
        pdq: str | None = None,
        pdq_quality: int | None = None,
        url: str | None = None,
    ) -> dict[str, Any]:
        """Match and decide what is known of an image: its digests, its PDQ (with its quality;
        one held below the gate, or none, leaves the image unchecked by PDQ, as for a row) and
        its URL. Hex digests in either case; a malformed one is a `UsageError`. With no hash of
        an image at all, the row is `no_image`, as a URL-only row of a table is."""
        return self._row(self._known(md5=md5, sha1=sha1, sha256=sha256, pdq=pdq, pdq_quality=pdq_quality, url=url))

    def check_hashes_many(self, queries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`check_hashes` of each query (its keyword arguments), matched and decided as one batch:
        a lookup of thousands of hashes costs one pass over the banks, not thousands. A query
        that is not valid gives `{"invalid": why}` in its place."""
        results, errors = {}, {}
        for i, query in enumerate(queries):
            try:
                results[i] = self._known(**query)
            except (UsageError, TypeError) as exc:
                errors[i] = str(exc)
        if results:
            self.decide(list(results.values()))
        return [self._as_row(results[i]) if i in results else {"invalid": errors[i]} for i in range(len(queries))]

    def _known(
        self,
        *,
        md5: str | None = None,
        sha1: str | None = None,
        sha256: str | None = None,
        pdq: str | None = None,
        pdq_quality: int | None = None,
        url: str | None = None,
    ) -> ItemResult:
        known = {"md5": md5, "sha1": sha1, "sha256": sha256, "pdq": pdq}
        for name, value in known.items():
            if value is not None:
                try:
                    known[name] = signal_type(name).normalise(value) if isinstance(value, str) else None
                except InvalidEntry as exc:
                    raise UsageError(f"{name}: {exc}") from None
                if known[name] is None:
                    raise UsageError(f"{name} must be hex text, not {type(value).__name__}")
        if pdq_quality is not None and not (isinstance(pdq_quality, int) and 0 <= pdq_quality <= 100):
            raise UsageError(f"pdq_quality must be an integer in 0..100, got {pdq_quality!r}")
        imaged = any(v is not None for v in known.values())
        status, error = (Status.OK, None) if imaged else (Status.NO_IMAGE, "no hash of an image given")
        item = Item(row_id="", shard="", index=0, key="", url=url, status=status, error=error)
        result = hash_item(item, self.settings)
        result.md5, result.sha1, result.sha256, result.pdq = known.values()
        result.pdq_quality = pdq_quality
        return result

    def _row(self, result: ItemResult) -> dict[str, Any]:
        self.decide([result])
        return self._as_row(result)

    @staticmethod
    def _as_row(result: ItemResult) -> dict[str, Any]:
        row = result.to_row()
        for name in ("row_id", "shard", "index", "key", "locator"):
            row.pop(name)
        row["signals"] = dict(row["signals"])
        return row

    def check(
        self, items: Iterable[Item], progress: Callable[[dict], None] | None = None, threads: int = 1
    ) -> Iterator[ItemResult]:
        """Results in the order of `items`. `threads` > 1 hashes that many items at once: worth it
        only where a core would otherwise idle (fetching: see `pipeline.worker`)."""
        batch: list[ItemResult] = []
        for result in _hashed(items, self.settings, threads):
            batch.append(result)
            if len(batch) >= BATCH:
                yield from self.decide(batch, progress)
                batch = []
        if batch:
            yield from self.decide(batch, progress)

    def decide(self, batch: list[ItemResult], progress: Callable[[dict], None] | None = None) -> list[ItemResult]:
        """Match a batch of hashed results against the banks and let the policy decide each, as
        a decide round does from stored observations (`decide_table`, the one way both go)."""
        scored = [r for r in batch if "nsfw" in r.inputs]
        if scored:  # a batch of images scored at once, their inputs then dropped
            self._classifier = self._classifier or nsfw.NsfwClassifier()
            for result, score in zip(scored, self._classifier.scores([r.inputs["nsfw"] for r in scored]), strict=True):
                result.signals = {**result.signals, nsfw.SIGNAL: float(score)}
        embedded = [r for r in batch if "embed" in r.inputs]
        if embedded:
            self.embedding_dim()  # the models loaded with the first image
            vectors = self._encoder.embed([r.inputs["embed"] for r in embedded])
            scores = {s.name: s.scores(vectors) for s in self._scorers}
            for i, result in enumerate(embedded):
                result.embedding = vectors[i].astype(np.float16)
                result.signals = {**result.signals, **{name: float(found[i]) for name, found in scores.items()}}
        for result in batch:
            result.inputs = {}
        table, found = decide_table(
            results_table(batch), self.matcher, self.policy, self.settings.pdq_min_quality, verdicts=self.verdicts
        )
        decisions, reasons = table["decision"].to_pylist(), table["reasons"].to_pylist()
        for i, result in enumerate(batch):
            result.matches = found.get(i, [])
            result.decision, result.reasons = Decision(decisions[i]), reasons[i]
        if progress is not None:
            progress({"items": len(batch)})
        return batch


def decide_table(
    table: pa.Table,
    matcher: Matcher,
    policy: Policy,
    min_quality: int,
    expanded: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
    copies: Mapping[int, str] | None = None,
    verdicts: Verdicts | None = None,
    quarantine: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[pa.Table, dict[int, list[Match]]]:
    """A results table with its `matches`, `decision` and `reasons` worked out anew, column by
    column: matched against `matcher`'s banks, decided by `policy`; and the matches by row.
    `expanded`: the neighbour-expansion candidates among the rows (positions, similarity, reason;
    see `pipeline.expand`), whose similarity the rules read as the signal `nn_similarity`;
    `copies`: rows whose image is a removed row's, with their reason `copy_of:ROW`; `verdicts`:
    verification verdicts on images (`banks.verdicts`), a false positive's matches dropped;
    `quarantine`: (bank, entry) pairs that flooded the audit (`pipeline.flood`), whose matches
    are recorded but do not act."""
    found = matcher.search(table)
    signals = signal_values(table, [s for s in policy.signals if s != EXPANDED])
    noted: dict[int, list[str]] = {row: [reason] for row, reason in (copies or {}).items()}
    if expanded is not None:
        rows, similarity, reasons = expanded
        values, present = np.zeros(table.num_rows), np.zeros(table.num_rows, bool)
        values[rows], present[rows] = similarity, True
        signals[EXPANDED] = (values, present)
        for row, reason in zip(rows.tolist(), reasons, strict=True):
            noted.setdefault(row, []).append(reason)
    refuted = verdicts.apply(table, found, noted) if verdicts else {}
    acting = {}
    for row, matches in found.items():  # every match stays recorded; these are the ones that act
        held = sorted({flood.reason(m.bank, m.entry) for m in matches if (m.bank, m.entry) in quarantine})
        if held:
            noted.setdefault(row, []).extend(held)
        quiet = quarantine | refuted.get(row, set())
        acting[row] = [(m.bank, m.signal_type) for m in matches if (m.bank, m.entry) not in quiet]
    statuses = pc.dictionary_encode(whole(table["status"]))
    decisions, reasons, chosen = policy.decide_rows(
        statuses.indices.to_numpy(zero_copy_only=False),
        statuses.dictionary.to_pylist(),
        low_quality(table, min_quality),
        acting,
        signals,
        noted,
    )
    where = pa.array(chosen)
    columns = {
        "matches": matches_column(table.num_rows, found),
        "decision": pa.array([str(d) for d in decisions], pa.string()).take(where),
        "reasons": pa.array(reasons, pa.list_(pa.string())).take(where),
    }
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table, found


def matches_column(rows: int, found: dict[int, list[Match]]) -> pa.Array:
    counts = np.zeros(rows + 1, np.int32)
    for row, matches in found.items():
        counts[row + 1] = len(matches)
    values = pa.array([m.to_row() for row in sorted(found) for m in found[row]], MATCH_TYPE)
    return pa.ListArray.from_arrays(pa.array(np.cumsum(counts, dtype=np.int32)), values)


def low_quality(table: pa.Table, min_quality: int) -> np.ndarray:
    """Per row: an image of it was too flat for its PDQ to count (a video: every frame), or it
    decoded with no PDQ."""

    def flat_image(pdq: pa.Array, quality: pa.Array) -> np.ndarray:
        present = pc.is_valid(pdq).to_numpy(zero_copy_only=False)
        return present & (pc.fill_null(quality, 0).to_numpy(zero_copy_only=False) < min_quality)

    def flat_video(frames: pa.Array) -> np.ndarray:
        """Videos none of whose frames passes the gate."""
        video = pc.is_valid(frames).to_numpy(zero_copy_only=False)
        elements, owners = flat(frames)
        sharp = np.zeros(len(frames), bool)
        if len(elements):
            quality = pc.fill_null(struct_field(elements, "quality"), 0).to_numpy(zero_copy_only=False)
            sharp[owners[quality >= min_quality]] = True
        return video & ~sharp

    pdq = whole(table["pdq"])
    low = flat_image(pdq, whole(table["pdq_quality"])) | flat_video(table["frames"])
    ok = pc.equal(whole(table["status"]), str(Status.OK)).to_numpy(zero_copy_only=False)
    imaged = pc.is_valid(pdq).to_numpy(zero_copy_only=False) | pc.is_valid(whole(table["frames"])).to_numpy(
        zero_copy_only=False
    )
    low |= ok & ~imaged
    payloads, parents = flat(table["payloads"])
    if len(payloads):
        low[parents[flat_image(struct_field(payloads, "pdq"), struct_field(payloads, "pdq_quality"))]] = True
        low[parents[flat_video(struct_field(payloads, "frames"))]] = True
    return low


def _hashed(items: Iterable[Item], settings: CheckSettings, threads: int) -> Iterator[ItemResult]:
    """`hash_item` over `items`, in order, on `threads` threads. Decoding, PDQ's matrix products
    and the digests release the GIL, so threads overlap them with each other and with the
    fetcher's event loop; a few items ahead at most, so memory stays bounded."""
    if threads <= 1:
        yield from (hash_item(item, settings) for item in items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="safeset-hash") as pool:
        ahead: deque[Future[ItemResult]] = deque()
        for item in items:
            ahead.append(pool.submit(hash_item, item, settings))
            if len(ahead) >= 4 * threads:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
