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

import io
from dataclasses import dataclass

import numpy as np

from .._optional import import_optional
from .image import DecodeError
from .pdq import PdqHash, pdq


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


def is_video(data: bytes) -> bool:
    """Whether bytes look like a video container (by content, not name): ISO BMFF (mp4, mov, m4v;
    not the still-image brands HEIF and AVIF), Matroska/WebM, AVI, MPEG-TS, MPEG-PS, FLV."""
    head = data[:16]
    if head[4:8] == b"ftyp":
        return head[8:12] not in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis", b"heim", b"heis")
    return (
        head.startswith(b"\x1a\x45\xdf\xa3")  # EBML: Matroska, WebM
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith(b"FLV\x01")
        or head.startswith(b"\x00\x00\x01\xba")  # MPEG program stream
        or (len(data) > 376 and data[0] == 0x47 and data[188] == 0x47 and data[376] == 0x47)  # MPEG-TS
    )


def video_frames(
    data: bytes, seconds_per_hash: float = 1.0, limits: VideoLimits = VideoLimits(), skip_unsampled: bool = True
) -> list[FrameHash]:
    """The vPDQ frame hashes of a video's bytes. DecodeError (with the reason) for bytes that are
    no video FFmpeg decodes, or are past `limits`. `skip_unsampled=False` decodes every frame and
    counts them as vpdq does: the same frames, slower (the tests hold the fast path to it)."""
    av = import_optional("av", extra="video")
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
        frames = []
        try:
            for n, frame in _sampled(container, stream, step, fps, limits, skip_unsampled):
                if frame.width * frame.height > limits.max_frame_pixels:
                    raise DecodeError(f"a {frame.width}x{frame.height} frame, past the pixel limit")
                rgb = frame.reformat(
                    format="rgb24", interpolation="AREA", src_colorspace="ITU601", dst_colorspace="ITU601"
                ).to_ndarray()
                hashed: PdqHash = pdq(np.ascontiguousarray(rgb))
                timestamp = float(np.float32(n) / np.float32(fps))
                frames.append(FrameHash(n, hashed.quality, str(hashed), timestamp))
        except av.error.FFmpegError as exc:
            raise DecodeError(f"the video stops decoding at frame {len(frames)} ({type(exc).__name__})") from None
        except _Recount:
            return video_frames(data, seconds_per_hash, limits, skip_unsampled=False)
    if not frames:
        raise DecodeError("no frame decodes")
    return frames


def _sampled(container, stream, step: int, fps: float, limits: VideoLimits, skip: bool):
    """(n, frame) of every frame vpdq samples, n its place from 0 in the order the decoder returns
    frames, which is presentation order. The packets are read first (cheap: no decoding), so a video
    past the limits is refused before any frame is decoded. Where every packet has its own
    timestamp, a frame's place is its timestamp's rank, and the frames nothing refers to that are
    not sampled are skipped, not decoded (about half of an x264 stream's); otherwise every frame is
    decoded and counted, as vpdq does."""
    packets = [packet for packet in container.demux(stream) if packet.size]
    if len(packets) > limits.max_decoded_frames or len(packets) / fps > limits.max_seconds:
        raise DecodeError(f"longer than {limits.max_seconds:g} s (or {limits.max_decoded_frames:,} frames)")
    codec = stream.codec_context
    stamps = [packet.pts for packet in packets]
    if not skip or None in stamps or len(set(stamps)) < len(stamps):  # packets without their own timestamp
        n = 0
        for packet in [*packets, None]:
            for frame in codec.decode(packet):
                if n % step == 0:
                    yield n, frame
                n += 1
        return
    place = {stamp: i for i, stamp in enumerate(sorted(stamps))}
    wanted = {stamp for stamp, i in place.items() if i % step == 0}
    given = set()
    for packet in [*packets, None]:
        if packet is not None:
            codec.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
        for frame in codec.decode(packet):
            if frame.pts in wanted and frame.pts not in given:
                given.add(frame.pts)
                yield place[frame.pts], frame
    if given != wanted:  # frames came out under other timestamps than their packets': count them instead
        raise _Recount


class _Recount(Exception):
    """The timestamps did not say which frames vpdq samples: decode and count every frame."""
