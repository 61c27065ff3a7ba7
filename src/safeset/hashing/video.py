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
file. Limits bound what a hostile file costs: pixels per frame, seconds and frames decoded.
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass

import numpy as np

from .image import DecodeError
from .pdq import PdqHash, pdq
from .sniff import is_video


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float = 3600.0  # of video decoded: a longer (or endless) stream is refused past it
    max_frame_pixels: int = 8192 * 4320  # per frame, checked before any frame is decoded
    max_decoded_frames: int = 250_000  # whatever the rate claims (an absurd one would make seconds meaningless)


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
    """What hashing a video found: its sampled frames' hashes, its frame size, and why not all of
    it was hashed (`incomplete`: past a limit, or it stops decoding part way), else None. The frames
    hashed before a video stopped are kept: a listed stretch among them still matches."""

    frames: list[FrameHash]
    width: int
    height: int
    incomplete: str | None = None


def hash_video(
    data: bytes, seconds_per_hash: float = 1.0, limits: VideoLimits = VideoLimits(), skip_unsampled: bool = True
) -> Video:
    """The vPDQ frame hashes of a video's bytes. DecodeError (with the reason) for bytes that are
    no video FFmpeg decodes, whose frames are past the pixel limit, or of which no frame decodes.
    A video longer than `limits` allows has its first `max_seconds` hashed. `skip_unsampled=False`
    decodes every frame and counts them as vpdq does: the same frames, slower (the tests hold the
    fast path to it)."""
    import av

    if seconds_per_hash < 0:
        raise ValueError("seconds_per_hash must be 0 (every frame) or more")
    if not is_video(data):  # FFmpeg would read a JPEG as a video of one frame, and much else
        raise DecodeError("not a video container (mp4, mov, webm, mkv, avi, mpeg, flv)")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not a video FFmpeg reads ({type(exc).__name__})") from None
    with container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threads would apply skip_frame (below) to a later packet
        rate = stream.average_rate or stream.base_rate
        if not rate or rate <= 0:
            raise DecodeError("no frame rate")
        fps = float(rate.numerator) / float(rate.denominator)
        step = max(1, int(seconds_per_hash * fps))
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_frame_pixels:
            raise DecodeError(f"{width}x{height} frames, past the limit of {limits.max_frame_pixels:,} pixels")
        frames: list[FrameHash] = []
        sampled = _Sampled(container, stream, step, min(limits.max_decoded_frames, int(limits.max_seconds * fps)))
        incomplete = None
        try:
            for n, frame in sampled.frames(skip_unsampled):
                if frame.width * frame.height > limits.max_frame_pixels:
                    incomplete = f"a {frame.width}x{frame.height} frame at {n}, past the pixel limit"
                    break
                rgb = frame.reformat(
                    format="rgb24", interpolation="AREA", src_colorspace="ITU601", dst_colorspace="ITU601"
                ).to_ndarray()
                hashed: PdqHash = pdq(np.ascontiguousarray(rgb))
                timestamp = float(np.float32(n) / np.float32(fps))
                frames.append(FrameHash(n, hashed.quality, str(hashed), timestamp))
        except av.error.FFmpegError as exc:
            incomplete = f"stops decoding after {len(frames)} sampled frame(s) ({type(exc).__name__})"
        except _Recount:
            return hash_video(data, seconds_per_hash, limits, skip_unsampled=False)
    if not frames:
        raise DecodeError(incomplete or "no frame decodes")
    if incomplete is None and sampled.cut:
        incomplete = (
            f"longer than {limits.max_seconds:g} s (or {limits.max_decoded_frames:,} frames): the rest unhashed"
        )
    return Video(frames, width, height, incomplete)


class _Sampled:
    """The frames of a video's stream that vpdq samples, up to `limit` frames in."""

    def __init__(self, container, stream, step: int, limit: int):
        # The packets are read first (cheap: no decoding), so the frames past the limit are known
        # before any is decoded.
        self.packets = [packet for packet in container.demux(stream) if packet.size]
        self.codec = stream.codec_context
        self.step = step
        self.limit = max(1, limit)
        self.cut = len(self.packets) > self.limit

    def frames(self, skip: bool):
        """(n, frame) of every frame vpdq samples, n its place from 0 in the order the decoder
        returns frames, which is presentation order. Where every packet has its own timestamp, a
        frame's place is its timestamp's rank, and only what the sampled frames need is decoded:
        each from the keyframe before it (`_needed`), and of those packets the frames nothing
        refers to are skipped unless sampled (about half of an x264 stream's). Otherwise every frame
        is decoded and counted, as vpdq does."""
        stamps = [packet.pts for packet in self.packets]
        if not skip or None in stamps or len(set(stamps)) < len(stamps):  # packets without their own timestamp
            n = 0
            for packet in [*self.packets, None]:
                for frame in self.codec.decode(packet):
                    if n >= self.limit:
                        return
                    if n % self.step == 0:
                        yield n, frame
                    n += 1
            return
        place = {stamp: i for i, stamp in enumerate(sorted(stamps))}
        wanted = {stamp for stamp, i in place.items() if i % self.step == 0 and i < self.limit}
        needed = _needed(self.packets, wanted)
        given = set()
        for i, packet in enumerate([*self.packets, None]):
            if packet is not None and not needed[i]:
                if i and needed[i - 1]:  # a run ends: what the decoder holds comes out, then it starts afresh
                    yield from self._new(self.codec.decode(None), wanted, given, place)
                    self.codec.flush_buffers()
                continue
            if packet is not None:
                self.codec.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
            yield from self._new(self.codec.decode(packet), wanted, given, place)
            if len(given) == len(wanted):
                return
        if given != wanted:  # frames came out under other timestamps than their packets': count them instead
            raise _Recount

    @staticmethod
    def _new(frames, wanted: set, given: set, place: dict):
        for frame in frames:
            if frame.pts in wanted and frame.pts not in given:
                given.add(frame.pts)
                yield place[frame.pts], frame


def _needed(packets, wanted: set) -> list[bool]:
    """Which packets (in decode order) decoding the frames `wanted` (by timestamp) needs: for each,
    the run from the last keyframe before it in decode order that it does not show before, to its
    own packet. A keyframe's decoding refers to nothing before it; a frame shown before the keyframe
    (an open GOP's leading frame) may refer to what precedes it, so its run starts further back."""
    keyframes = [i for i, packet in enumerate(packets) if packet.is_keyframe]
    needed = [False] * (len(packets) + 1)  # the last: the end of the stream, always reached
    needed[-1] = True
    for i, packet in enumerate(packets):
        if packet.pts in wanted:
            start = bisect.bisect_right(keyframes, i) - 1
            while start >= 0 and packets[keyframes[start]].pts > packet.pts:
                start -= 1
            for j in range(i, (keyframes[start] if start >= 0 else 0) - 1, -1):
                if needed[j]:
                    break  # the rest of the run was marked for an earlier frame
                needed[j] = True
    return needed


class _Recount(Exception):
    """The timestamps did not say which frames vpdq samples: decode and count every frame."""
