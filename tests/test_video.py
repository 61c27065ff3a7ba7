"""Video hashing (issue 16): frames sampled as vPDQ samples them, hashed with PDQ, from memory.

The videos are made here, in memory, from the demo's photos: slideshows that pan across a photo
and cut to the next, encoded by the FFmpeg inside PyAV's wheel."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest

from safeset.hashing import DecodeError
from safeset.hashing.video import VideoLimits, is_video, video_frames

av = pytest.importorskip("av")


def slideshow(photos, seconds: float, rate: Fraction | int = 25, size=(320, 240), codec="libx264", fmt="mp4") -> bytes:
    """A video panning slowly across each photo for 2 s (4 px), then cutting to the next. (A fast
    pan defeats vPDQ: at a frame a second, a copy sampled half a second off sees other pictures.)"""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        frames = int(seconds * rate)
        for n in range(frames):
            photo = np.asarray(photos[int(n / rate / 2) % len(photos)].convert("RGB"))
            h, w = size[1], size[0]
            span = min(4, max(1, photo.shape[1] - w))
            x = int(span * ((n / rate) % 2) / 2)
            crop = photo[:h, x : x + w]
            crop = np.pad(crop, ((0, h - crop.shape[0]), (0, w - crop.shape[1]), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(crop), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(tiles):
    return [image.resize((480, 240)) for _, image in tiles[:4]]


def test_frames_are_sampled_and_hashed_as_vpdq_does(photos):
    """vPDQ's rule: the n-th decoded frame (from 0) when n % int(seconds_per_hash * fps) == 0, its
    timestamp n / fps in float32; each hashed from its BT.601 RGB at native size with PDQ, bit for
    bit the reference's (pdqhash) on the same pixels."""
    import pdqhash

    for rate, seconds_per_hash, expected in [
        (25, 1.0, [0, 25, 50, 75, 100]),
        (Fraction(30000, 1001), 1.0, [0, 29, 58, 87, 116, 145]),
        (25, 0.5, list(range(0, 125, 12))),
    ]:
        video = slideshow(photos, 5, rate)
        frames = video_frames(video, seconds_per_hash)
        assert [f.frame for f in frames] == expected
        fps = float(rate)
        assert [f.timestamp for f in frames] == [float(np.float32(n) / np.float32(fps)) for n in expected]
        with av.open(io.BytesIO(video)) as container:
            decoded = list(container.decode(video=0))
        for f in frames:
            rgb = decoded[f.frame].reformat(
                format="rgb24", interpolation="AREA", src_colorspace="ITU601", dst_colorspace="ITU601"
            )
            bits, quality = pdqhash.compute(rgb.to_ndarray())
            assert f.pdq == np.packbits(bits.astype(np.uint8)).tobytes().hex() and f.quality == quality
    assert frames[1].line() == f"12,{frames[1].quality},{frames[1].pdq},0.480"


def test_skipping_unsampled_frames_changes_no_hash(photos, tiles):
    """Frames nothing refers to and vPDQ does not sample are not decoded; a frame's place comes from
    its timestamp's rank. The hashes are those of decoding and counting every frame, as vpdq does,
    on x264 with B-frames (its frames out of order in the file), at 29.97 fps, VP9, and mpeg4."""
    videos = [
        slideshow(photos, 6),
        slideshow(photos, 4, Fraction(30000, 1001)),
        reencoded(slideshow(photos, 4), crf=35),
        slideshow(photos, 3, 24, codec="libvpx-vp9", fmt="webm"),
        slideshow(photos, 3, 25, codec="mpeg4", fmt="avi"),
    ]
    for video in videos:
        for seconds in (1.0, 0.3, 0):
            assert video_frames(video, seconds) == video_frames(video, seconds, skip_unsampled=False)


def test_every_frame_at_zero_seconds_per_hash_and_other_containers(photos):
    webm = slideshow(photos, 1, 10, codec="libvpx-vp9", fmt="webm")
    assert is_video(webm) and [f.frame for f in video_frames(webm, 0)] == list(range(10))
    avi = slideshow(photos, 1, 10, codec="mpeg4", fmt="avi")
    assert is_video(avi) and len(video_frames(avi)) == 1


def test_hostile_videos_end_as_decode_errors_in_bounded_time(photos, tiles):
    from safeset.demo import jpeg

    video = slideshow(photos, 4)
    with pytest.raises(DecodeError, match="longer than 2 s"):
        video_frames(video, limits=VideoLimits(max_seconds=2))
    with pytest.raises(DecodeError, match="past the limit"):
        video_frames(video, limits=VideoLimits(max_frame_pixels=320 * 239))
    with pytest.raises(DecodeError):
        video_frames(video[: len(video) // 3])  # cut short: the index (moov) is at the end
    for junk in (b"", b"\x00" * 1000, jpeg(tiles[0][1]), b"RIFF\x00\x00\x00\x00AVI LIST" + b"\xff" * 500):
        with pytest.raises(DecodeError):
            video_frames(junk)
    assert not is_video(jpeg(tiles[0][1])) and is_video(video)
    avif_like = b"\x00\x00\x00\x1cftypavif" + b"\x00" * 64
    assert not is_video(avif_like)  # a still image in the same box format


def _features(frames):
    from threatexchange.extensions.vpdq.vpdq_util import VpdqCompactFeature

    return [VpdqCompactFeature(pdq, quality, 0.0) for pdq, quality in frames]


def test_the_vpdq_rule_is_python_threatexchanges():
    """Percentages and decisions equal to python-threatexchange's brute matcher, on videos whose
    frames repeat, sit near the distance threshold and straddle the quality gate."""
    from threatexchange.extensions.vpdq.vpdq_brute_matcher import match_VPDQ_hash_brute

    from safeset.banks.vpdq import VpdqIndex

    rng = np.random.default_rng(16)
    base = rng.integers(0, 256, (40, 32), dtype=np.uint8)

    def video(count):
        rows = base[rng.integers(0, len(base), count)].copy()
        for row in rows:  # 0..40 bits away from the frame it copies: some within 31, some not
            for bit in rng.choice(256, rng.integers(0, 41), replace=False):
                row[bit // 8] ^= 1 << (bit % 8)
        return [(row.tobytes().hex(), int(q)) for row, q in zip(rows, rng.integers(30, 101, count), strict=True)]

    listed = [video(int(n)) for n in rng.integers(1, 30, 60)]
    listed.append([(base[0].tobytes().hex(), 10)])  # no frame of quality: never matches
    index = VpdqIndex(listed)
    for _ in range(15):
        query = video(int(rng.integers(1, 30)))
        query += query[:3]  # repeated frames count once
        found = {m.video: m for m in index.match(query, query_percent=0.0)}
        for v, frames in enumerate(listed):
            if not any(q >= 50 for _, q in frames) or not any(q >= 50 for _, q in query):
                assert v not in found  # threatexchange divides by zero here
                continue
            theirs = match_VPDQ_hash_brute(_features(query), _features(frames), 50, 31)
            if theirs.query_match_percent == 0:
                assert v not in found
                continue
            assert (found[v].query_percent, found[v].compared_percent) == (
                theirs.query_match_percent,
                theirs.compared_match_percent,
            )
        strict = {m.video for m in index.match(query)}
        assert strict == {v for v, m in found.items() if m.query_percent >= 80}


def test_listed_videos_in_threatexchange_and_vpdq_formats():
    from threatexchange.extensions.vpdq.vpdq_util import vpdq_to_json

    from safeset.banks.signal_types import InvalidEntry
    from safeset.banks.vpdq import frames_of_hash_file, frames_of_signal

    frames = [("ab" * 32, 100), ("cd" * 32, 49), ("0" * 64, 0)]
    assert frames_of_signal(vpdq_to_json(_features(frames))) == frames
    lines = [f"{n},{q},{pdq.upper()},{n / 25:.3f}" for n, (pdq, q) in enumerate(frames)]
    assert frames_of_hash_file(["", *lines, ""]) == frames
    for bad in ("[1, 2]", "{}", '["ab,100"]', '["zz,100,0.0"]', f'["{"ab" * 32},101,0.0"]', f'["{"ab" * 32},9,-1"]'):
        with pytest.raises(InvalidEntry) as caught:
            frames_of_signal(bad)
        assert "ab" * 32 not in str(caught.value)


def reencoded(video: bytes, size=None, rate=None, skip_seconds=0.0, crf=23, codec="libx264") -> bytes:
    """The video decoded and encoded again: another size, rate (frames dropped or repeated to keep
    the timing), quality, or its start cut."""
    with av.open(io.BytesIO(video)) as source:
        stream = source.streams.video[0]
        old_rate = float(stream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in source.decode(stream)]
    new_rate = rate or old_rate
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        target = container.add_stream(codec, rate=Fraction(new_rate).limit_denominator(1001))
        target.height, target.width = (frames[0].shape[0], frames[0].shape[1]) if size is None else size[::-1]
        target.pix_fmt = "yuv420p"
        if codec == "libx264":
            target.options = {"crf": str(crf)}
        count = int((len(frames) / old_rate - skip_seconds) * new_rate)
        for n in range(count):
            pixels = frames[min(len(frames) - 1, int((skip_seconds + n / new_rate) * old_rate))]
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(
                width=target.width, height=target.height
            )
            for packet in target.encode(frame):
                container.mux(packet)
        for packet in target.encode():
            container.mux(packet)
    return out.getvalue()


def test_copies_of_a_listed_video_match_it_and_other_videos_do_not(tiles):
    """Re-encoded at another quality, size or rate, or with its start cut, a listed slideshow still
    matches under the vPDQ rule; a slideshow of other photos does not."""
    from safeset.banks.vpdq import VpdqIndex

    photos = [image.resize((480, 240)) for _, image in tiles[:5]]
    others = [image.resize((480, 240)) for _, image in tiles[8:13]]
    original = slideshow(photos, 10)
    as_listed = [(f.pdq, f.quality) for f in video_frames(original)]
    index = VpdqIndex([as_listed, [(f.pdq, f.quality) for f in video_frames(slideshow(others, 10))]])
    copies = {
        "low quality": reencoded(original, crf=40),
        "smaller": reencoded(original, size=(240, 180)),
        "15 fps": reencoded(original, rate=15),
        "29.97 fps": reencoded(original, rate=30000 / 1001),
        "start cut": reencoded(original, skip_seconds=1.5),
        "mpeg4": reencoded(original, codec="mpeg4"),
    }
    for name, copy in copies.items():
        found = index.match([(f.pdq, f.quality) for f in video_frames(copy)])
        assert [m.video for m in found] == [0], name
        assert found[0].query_percent >= 80, name
    unrelated = slideshow([image.resize((480, 240)) for _, image in tiles[16:21]], 10)
    assert index.match([(f.pdq, f.quality) for f in video_frames(unrelated)]) == []


def test_frame_hashes_agree_with_the_vpdq_package(tmp_path, photos):
    """Meta's `vpdq` (built from its source by `make test` against Debian's FFmpeg) on the same
    videos: the same frames sampled, with the same bits and quality."""
    import importlib
    import os

    vpdq = importlib.import_module("vpdq") if os.environ.get("CI") else pytest.importorskip("vpdq")
    videos = {
        "x264-25.mp4": slideshow(photos, 6),
        "x264-2997.mp4": slideshow(photos, 6, Fraction(30000, 1001)),
        "vp9.webm": slideshow(photos, 4, 24, codec="libvpx-vp9", fmt="webm"),
        "mpeg4-odd.avi": slideshow(photos, 4, 25, size=(334, 202), codec="mpeg4", fmt="avi"),
    }
    for name, video in videos.items():
        path = tmp_path / name  # vpdq reads files only; these are the tests' own benign videos
        path.write_bytes(video)
        for seconds in (1.0, 0.5):
            theirs = vpdq.computeHash(str(path), seconds_per_hash=seconds)
            ours = video_frames(video, seconds)
            assert [(f.frame_number, f.quality, f.hex) for f in theirs] == [(f.frame, f.quality, f.pdq) for f in ours]
            assert [round(f.timestamp, 3) for f in theirs] == [round(f.timestamp, 3) for f in ours], name


def test_hash_vpdq_prints_the_frames_as_vpdq_and_threatexchange_write_them(tmp_path, photos):
    """`safeset hash --vpdq`: vpdq's hash-file lines, or (--json) python-threatexchange's signal,
    which its own parser reads back; bad videos are named, with no content printed."""
    import json

    from helpers import run_cli
    from threatexchange.extensions.vpdq.vpdq_util import json_to_vpdq, vpdq_to_json

    from safeset.banks.vpdq import frames_of_hash_file, frames_of_signal

    path = tmp_path / "clip.mp4"
    path.write_bytes(slideshow(photos, 3))
    frames = video_frames(path.read_bytes())
    printed = run_cli("hash", "--vpdq", str(path))
    assert printed.exit_code == 0 and printed.stdout.splitlines() == [f.line() for f in frames]
    assert frames_of_hash_file(printed.stdout.splitlines()) == [(f.pdq, f.quality) for f in frames]
    every = run_cli("hash", "--vpdq", "--seconds-per-hash", "0", str(path)).stdout.splitlines()
    assert len(every) == 75

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x01" * 500)
    both = run_cli("hash", "--vpdq", "--json", str(path), str(junk))
    assert both.exit_code == 1
    good, bad = (json.loads(line) for line in both.stdout.splitlines())
    features = json_to_vpdq(good["vpdq"])
    assert good["vpdq"] == vpdq_to_json(features)  # threatexchange writes it back the same
    assert [(f.pdq_hex, f.quality) for f in features] == [(f.pdq, f.quality) for f in frames]
    assert frames_of_signal(good["vpdq"]) == [(f.pdq, f.quality) for f in frames]
    assert bad["path"] == str(junk) and "error" in bad and "vpdq" not in bad
    alone = run_cli("hash", "--vpdq", str(junk))
    assert alone.exit_code == 3 and str(junk) in alone.stderr
    assert run_cli("hash", "--vpdq", str(path), str(path)).exit_code == 2
