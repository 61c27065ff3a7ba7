"""Checking items: hash each one, match a batch against the banks, let the policy decide.

The bytes of an item live only between `hash_item` receiving it and returning: the result keeps
hashes, and the item's `data` is dropped, so a flagged image is never held longer than its hashing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..banks import Matcher
from ..errors import UsageError
from ..hashing import DecodeError, DecodeLimits, byte_digests, pdq_bytes, url_md5
from ..hashing.image import DEFAULT_MAX_PIXELS
from ..model import Item, ItemResult, Status
from ..policy import Policy

BATCH = 256  # items matched per vectorised index call


@dataclass(frozen=True)
class CheckSettings:
    pdq_threshold: int = 31
    pdq_variant_threshold: int | None = None  # for flipped/rotated/trimmed variants; None: pdq_threshold
    pdq_min_quality: int = 50
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    pdq_dihedral: bool = True  # also query the 8 flips and quarter turns of each image
    pdq_trim: bool = True  # also query the image without uniform borders (letterbox, padding)
    pdq_exact: bool = False  # hash every image from its full decode: the reference's bits, always

    def __post_init__(self) -> None:
        for name in ("pdq_threshold", "pdq_variant_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 256:
                raise UsageError(f"--{name.replace('_', '-')} must be in 0..256, got {value}")
        if not 0 <= self.pdq_min_quality <= 100:
            raise UsageError(f"PDQ minimum quality must be in 0..100, got {self.pdq_min_quality}")

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(max_pixels=self.max_image_pixels)


def hash_item(item: Item, settings: CheckSettings = CheckSettings()) -> ItemResult:
    """Digests of the bytes and URL, and PDQ of the pixels, with the item's status."""
    result = ItemResult(
        row_id=item.row_id,
        shard=item.shard,
        index=item.index,
        key=item.key,
        url=item.url,
        status=item.status or Status.OK,
        error=item.error,
        url_md5=url_md5(item.url) if item.url else None,
        locator=item.locator,
    )
    data, item.data = item.data, None
    if item.status is not None:
        return result
    if not data:
        result.status = Status.NO_IMAGE
        result.error = "empty file" if data is not None else "no image bytes"
        return result
    digests = byte_digests(data)
    result.md5, result.sha1, result.sha256 = digests["md5"], digests["sha1"], digests["sha256"]
    try:
        variants = pdq_bytes(data, settings.limits, settings.pdq_dihedral, settings.pdq_trim, settings.pdq_exact)
    except DecodeError as exc:
        result.status = Status.DECODE_FAILED
        result.error = exc.reason
        return result
    plain = variants.pop("")
    result.pdq, result.pdq_quality = str(plain), plain.quality
    result.pdq_variants = {name: str(h) for name, h in variants.items()}
    return result


class Checker:
    """Hashing + matching + policy for a stream of items, in batches."""

    def __init__(self, matcher: Matcher, policy: Policy, settings: CheckSettings):
        self.matcher = matcher
        self.policy = policy
        self.settings = settings

    def check(
        self, items: Iterable[Item], progress: Callable[[dict], None] | None = None, threads: int = 1
    ) -> Iterator[ItemResult]:
        """Results in the order of `items`. `threads` > 1 hashes that many items at once: worth it
        only where a core would otherwise idle (fetching: see `pipeline.worker`)."""
        batch: list[ItemResult] = []
        for result in _hashed(items, self.settings, threads):
            batch.append(result)
            if len(batch) >= BATCH:
                yield from self._decide(batch, progress)
                batch = []
        if batch:
            yield from self._decide(batch, progress)

    def _decide(self, batch: list[ItemResult], progress: Callable[[dict], None] | None) -> list[ItemResult]:
        self.matcher.match(batch)
        for result in batch:
            result.pdq_variants = {}
            self.policy.decide(result, self.settings.pdq_min_quality)
        if progress is not None:
            progress({"items": len(batch)})
        return batch


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
