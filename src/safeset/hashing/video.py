"""Video: frames sampled as Meta's vPDQ samples them, each hashed with PDQ, decoded from memory.

vPDQ (ThreatExchange's `vpdq`) hashes the frame the decoder returns when its count from 0 is a
multiple of `int(seconds_per_hash * frame rate)` (the stream's average rate, else its base rate;
at least 1): frame 0 always, then every so many frames, whatever their timestamps. Each chosen frame
is converted to RGB as FFmpeg's swscale does with no colour details given (BT.601, the range of the
pixel format, area interpolation, native size) and hashed with PDQ; its timestamp is the frame count
over the rate, in float32 as vpdq computes it. The same rule here gives the same frames and, since
safeset's PDQ on a full-size luma is the reference's, the same bits (tests/test_video.py compares
them with the `vpdq` package).

Decoding is PyAV's (FFmpeg inside its wheel): the bytes are read from memory, never written to a
file. Limits bound what a hostile file costs (`VideoLimits`): pixels per frame, seconds and frames
hashed, pixels decoded in all; a file's every video stream is hashed, not only the one vpdq picks.
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass, replace

import numpy as np

from .image import DecodeError, UnsupportedMedia
from .pdq import PdqHash, pdq
from .sniff import is_video


@dataclass(frozen=True)
class VideoLimits:
    """What hashing one video may cost. Past a limit, the frames hashed so far are kept and the
    video is not wholly checked (`Video.incomplete`); a frame past `max_frame_pixels` is never
    decoded (FFmpeg's own `max_pixels` refuses it, probing included)."""

    max_seconds: float = 3600.0  # of video hashed: a longer (or endless) stream has its start hashed
    max_frame_pixels: int = 3840 * 2160  # per frame (4K)
    max_decoded_frames: int = 250_000  # whatever the rate claims (an absurd one would make seconds meaningless)
    # pixels decoded in all, the file's streams together, a hashed frame's counted 4 more times (it
    # costs about that much more): what bounds the time a small file of huge or countless frames
    # costs. About 3 minutes of 1080p at 25 fps decoded in full, about 5 with unsampled frames skipped.
    max_pixels: int = 10**10


# Video streams of one file hashed, the one a player shows (FFmpeg's best) first: a decoy first
# stream, a second angle or a cover picture (an attached still is a one-frame stream) are hashed too.
MAX_STREAMS = 4


@dataclass(frozen=True)
class FrameHash:
    """One sampled frame, as a line of vPDQ's hash files: `frame,quality,pdq,timestamp`."""

    frame: int
    quality: int
    pdq: str
    timestamp: float

    def line(self) -> str:
        return f"{self.frame},{self.quality},{self.pdq},{self.timestamp:.3f}"


@dataclass(frozen=True)
class Video:
    """What hashing one video stream found: its sampled frames' hashes, its frame size, and why not
    all of it was hashed (`incomplete`: past a limit, or it stops decoding part way), else None. The
    frames hashed before a stream stopped are kept: a listed stretch among them still matches."""

    stream: int  # its index among the file's streams
    frames: list[FrameHash]
    width: int
    height: int
    incomplete: str | None = None


# What PyAV raises on bytes FFmpeg cannot read (its demuxers and decoders' errors, and a few of its
# own on the values they leave): the file's fault, so a reason, never a crash.
def _errors():
    import av

    return (av.error.FFmpegError, ValueError, IndexError, OverflowError, EOFError, UnicodeDecodeError)


def hash_video(
    data: bytes, seconds_per_hash: float = 1.0, limits: VideoLimits = VideoLimits(), skip_unsampled: bool = True
) -> Video:
    """The vPDQ frame hashes of a video's bytes: of its best video stream, the one vpdq hashes and
    a player shows (`hash_videos` hashes them all). DecodeError (with the reason) for bytes that
    are no video FFmpeg decodes, whose frames are past the pixel limit, or of which no frame
    decodes; `UnsupportedMedia` for a file with no video stream (audio). `skip_unsampled=False`
    decodes every frame and counts them as vpdq does: the same frames, slower (the tests hold the
    fast path to it)."""
    return _best(hash_videos(data, seconds_per_hash, limits, skip_unsampled, streams=1))


def hash_videos(
    data: bytes,
    seconds_per_hash: float = 1.0,
    limits: VideoLimits = VideoLimits(),
    skip_unsampled: bool = True,
    streams: int = MAX_STREAMS,
    any_box: bool = False,
) -> list[Video]:
    """`hash_video` of each video stream of the file (at most `streams`), the best first. Raises
    as `hash_video` does if none gives a frame; a stream that gives none is a `Video` without
    frames, saying why. `any_box`: read ISO BMFF whose brands say it is a still image too."""
    if seconds_per_hash < 0:
        raise ValueError("seconds_per_hash must be 0 (every frame) or more")
    if not (is_video(data) or (any_box and data[4:8] == b"ftyp")):  # FFmpeg would read a JPEG as a video, and much else
        raise DecodeError("not a video container (mp4, mov, webm, mkv, avi, mpeg, flv)")
    budget = _Budget(limits.max_pixels)
    try:
        with _open(data, limits) as container:
            found = container.streams.video
            if not found:
                raise UnsupportedMedia("audio" if container.streams.audio else "no video stream")
            best = container.streams.best("video") or found[0]
            order = [best.index, *(s.index for s in found if s is not best)][:streams]
            layouts = _layouts(container, order, limits)
    except _errors() as exc:
        raise DecodeError(f"not a video FFmpeg reads ({type(exc).__name__})") from None
    videos = [_hash_stream(data, layouts[i], seconds_per_hash, limits, skip_unsampled, budget) for i in order]
    _best(videos)  # raises if no stream gave a frame
    if len(found) > streams:  # the rest are not looked at: the file is not wholly checked
        unhashed = f"{len(found)} video streams, the first {streams} hashed"
        videos[0] = replace(videos[0], incomplete="; ".join(filter(None, (videos[0].incomplete, unhashed))))
    return videos


def _best(videos: list[Video]) -> Video:
    """The best stream's video; DecodeError if no stream gave a frame."""
    if not any(v.frames for v in videos):
        raise DecodeError(videos[0].incomplete or "no frame decodes")
    return videos[0]


def _open(data: bytes, limits: VideoLimits):
    import av

    # `max_pixels` reaches the decoders FFmpeg opens to probe the streams: a frame past it is refused
    # before it is allocated (a 16000x16000 frame would cost 1.5 GB to probe)
    options = {"max_pixels": str(limits.max_frame_pixels)}
    return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore", options=options)


@dataclass
class _Layout:
    """A video stream as its packets lay it out, read without decoding: each packet's timestamp
    and whether it is a keyframe, in decode order, up to `limit` packets (`cut`: more follow)."""

    index: int
    fps: float
    width: int
    height: int
    stamps: list
    keyframes: list[int]
    limit: int
    time_base: float = 0.0
    cut: bool = False
    refused: str | None = None  # why the stream is not decoded at all

    def rate_claimed_falsely(self) -> str | None:
        """Why the rate the stream claims (which says which frames are sampled) is not to be
        believed: over twice what its timestamps show, so that far fewer frames would be sampled."""
        stamps = [s for s in self.stamps if s is not None]
        if len(stamps) < 3 or not self.time_base:
            return None
        seconds = (max(stamps) - min(stamps)) * self.time_base
        # every packet counts, with or without a timestamp of its own (MPEG-PS stamps a few)
        shown = (len(self.stamps) - 1) / seconds if seconds > 0 else None
        if shown is None or self.fps <= 2 * shown:
            return None
        return f"it claims {self.fps:g} frames a second, its timestamps {shown:.3g}"


def _layouts(container, order: list[int], limits: VideoLimits) -> dict[int, _Layout]:
    """The layout of each stream in `order`: its packets read once, cheaply, so that what a limit
    cuts off is known before any frame is decoded, and only timestamps are kept of them."""
    layouts = {}
    for index in order:
        stream = container.streams[index]
        codec = stream.codec_context
        rate = stream.average_rate or stream.base_rate
        refused = None
        if codec is None:
            refused = "no decoder for its codec"
        elif not rate or rate <= 0:
            refused = "no frame rate"
        elif codec.width * codec.height > limits.max_frame_pixels:
            refused = f"{codec.width}x{codec.height} frames, past the limit of {limits.max_frame_pixels:,} pixels"
        fps = float(rate.numerator) / float(rate.denominator) if rate and rate > 0 else 1.0
        limit = max(1, min(limits.max_decoded_frames, int(limits.max_seconds * fps)))
        width, height = (codec.width, codec.height) if codec is not None else (0, 0)
        time_base = float(stream.time_base) if stream.time_base else 0.0
        layouts[index] = _Layout(index, fps, width, height, [], [], limit, time_base, refused=refused)
    wanted = [container.streams[i] for i in order if layouts[i].refused is None]
    if wanted:
        for packet in container.demux(*wanted):
            layout = layouts[packet.stream.index]
            if not packet.size or layout.cut:
                continue
            if len(layout.stamps) == layout.limit:
                layout.cut = True
                if all(layouts[s.index].cut for s in wanted):
                    break
                continue
            if packet.is_keyframe:
                layout.keyframes.append(len(layout.stamps))
            layout.stamps.append(packet.pts)
    return layouts


class _Budget:
    """Pixels a file's streams may still decode between them (`VideoLimits.max_pixels`)."""

    def __init__(self, pixels: int):
        self.left = pixels

    def spend(self, frame, times: int = 1) -> bool:
        """Count a frame decoded (or hashed: `times` 4); False once the budget is spent."""
        self.left -= times * frame.width * frame.height
        return self.left >= 0


def _hash_stream(
    data: bytes, layout: _Layout, seconds_per_hash: float, limits: VideoLimits, skip: bool, budget: _Budget
) -> Video:
    """One stream's sampled frames, decoded from a fresh read of the bytes (see `_Sampled`)."""
    import av

    def video(frames: list[FrameHash], incomplete: str | None) -> Video:
        return Video(layout.index, frames, layout.width, layout.height, incomplete)

    if layout.refused:
        return video([], layout.refused)
    step = max(1, int(seconds_per_hash * layout.fps))
    frames: list[FrameHash] = []
    incomplete = None
    try:
        with _open(data, limits) as container:
            stream = container.streams[layout.index]
            stream.thread_type = "SLICE"  # frame threads would apply skip_frame (below) to a later packet
            stream.codec_context.options = {
                "max_pixels": str(limits.max_frame_pixels)
            }  # every frame, not only the first
            sampled = _Sampled(container, stream, layout, step, budget)
            for n, frame in sampled.frames(skip):
                rgb = frame.reformat(
                    format="rgb24", interpolation="AREA", src_colorspace="ITU601", dst_colorspace="ITU601"
                ).to_ndarray()
                hashed: PdqHash = pdq(np.ascontiguousarray(rgb))
                budget.spend(frame, times=4)
                timestamp = float(np.float32(n) / np.float32(layout.fps))
                frames.append(FrameHash(n, hashed.quality, str(hashed), timestamp))
            incomplete = sampled.stopped
    except _Recount:
        return _hash_stream(data, layout, seconds_per_hash, limits, False, budget)
    except av.error.ArgumentError:  # the decoder's `max_pixels` refused a frame larger than the stream said
        past = f"past the limit of {limits.max_frame_pixels:,} pixels"
        incomplete = f"a frame after {len(frames)} sampled frame(s) refused ({past}, or invalid)"
    except _errors() as exc:
        incomplete = f"stops decoding after {len(frames)} sampled frame(s) ({type(exc).__name__})"
    if incomplete is None and layout.cut:
        incomplete = (
            f"longer than {limits.max_seconds:g} s (or {limits.max_decoded_frames:,} frames): the rest unhashed"
        )
    if incomplete is None:  # sampled as vpdq samples, but a player would show many more frames
        incomplete = layout.rate_claimed_falsely()
    if not frames and incomplete is None:
        incomplete = "no frame decodes"
    return video(frames, incomplete)


class _Sampled:
    """The frames of a video stream that vpdq samples, up to its layout's limit."""

    def __init__(self, container, stream, layout: _Layout, step: int, budget: _Budget):
        self.container, self.stream, self.layout = container, stream, layout
        self.codec = stream.codec_context
        self.step = step
        self.budget = budget
        self.stopped: str | None = None  # why decoding stopped short

    def _packets(self):
        """The stream's packets with data, in decode order, as far as the layout goes."""
        count = len(self.layout.stamps)
        for i, packet in enumerate(p for p in self.container.demux(self.stream) if p.size):
            if i == count:
                return
            yield packet

    def _decoded(self, packet):
        """The frames the decoder gives for `packet` (None: the end), each counted against the budget."""
        for frame in self.codec.decode(packet):
            if not self.budget.spend(frame):
                self.stopped = "past the budget of pixels decoded: the rest unhashed"
                return
            yield frame

    def frames(self, skip: bool):
        """(n, frame) of every frame vpdq samples, n its place from 0 in the order the decoder
        returns frames, which is presentation order. Where every packet has its own timestamp, a
        frame's place is its timestamp's rank, and only what the sampled frames need is decoded:
        each from the keyframe before it (`_needed`), and of those packets the frames nothing
        refers to are skipped unless sampled (about half of an x264 stream's). Otherwise every frame
        is decoded and counted, as vpdq does."""
        stamps, limit = self.layout.stamps, self.layout.limit
        if not skip or None in stamps or len(set(stamps)) < len(stamps):  # packets without their own timestamp
            n = 0
            for packet in [*self._packets(), None]:
                for frame in self._decoded(packet):
                    if n >= limit:
                        return
                    if n % self.step == 0:
                        yield n, frame
                    n += 1
                if self.stopped:
                    return
            return
        place = {stamp: i for i, stamp in enumerate(sorted(stamps))}
        wanted = {stamp for stamp, i in place.items() if i % self.step == 0 and i < limit}
        needed = _needed(stamps, self.layout.keyframes, wanted)
        given: set = set()
        self._fresh, self._last = True, None
        for i, packet in enumerate([*self._packets(), None]):
            if packet is not None and not needed[i]:
                if i and needed[i - 1]:  # a run ends: what the decoder holds comes out, then it starts afresh
                    yield from self._new(self._decoded(None), wanted, given, place)
                    if self.stopped:
                        return
                    self.codec.flush_buffers()
                    self._fresh = True
                continue
            if packet is not None:
                self.codec.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
            yield from self._new(self._decoded(packet), wanted, given, place)
            if len(given) == len(wanted) or self.stopped:
                return
        if given != wanted:  # frames came out under other timestamps than their packets': count them instead
            raise _Recount

    def _new(self, frames, wanted: set, given: set, place: dict):
        """The wanted frames among `frames`, checked to be what a decode from the start gives: the
        first frame after starting afresh must be a keyframe (a container can flag any packet as
        one, and a frame decoded on a missing reference differs), and timestamps must rise in the
        order frames come out (in some containers they are in decode order). Otherwise `_Recount`."""
        for frame in frames:
            if self._fresh and not frame.key_frame:
                raise _Recount
            if frame.pts is None or (self._last is not None and frame.pts <= self._last):
                raise _Recount
            self._fresh, self._last = False, frame.pts
            if frame.pts in wanted and frame.pts not in given:
                given.add(frame.pts)
                yield place[frame.pts], frame


def _needed(stamps: list, keyframes: list[int], wanted: set) -> list[bool]:
    """Which packets (in decode order, by their timestamps; `keyframes` the keyframes' places)
    decoding the frames `wanted` (by timestamp) needs: for each, the run from the last keyframe
    before it in decode order that it does not show before, to its own packet. A keyframe's decoding
    refers to nothing before it; a frame shown before the keyframe (an open GOP's leading frame) may
    refer to what precedes it, so its run starts further back. The last entry (the end of the
    stream, where the decoder gives what it holds) is always needed."""
    needed = [False] * (len(stamps) + 1)
    needed[-1] = True
    for i, stamp in enumerate(stamps):
        if stamp in wanted:
            start = bisect.bisect_right(keyframes, i) - 1
            while start >= 0 and stamps[keyframes[start]] > stamp:
                start -= 1
            for j in range(i, (keyframes[start] if start >= 0 else 0) - 1, -1):
                if needed[j]:
                    break  # the rest of the run was marked for an earlier frame
                needed[j] = True
    return needed


class _Recount(Exception):
    """The timestamps or keyframe flags did not say which frames vpdq samples, or what decoding
    them needs: decode and count every frame."""
