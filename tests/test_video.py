"""Video hashing (issue 16): frames sampled as vPDQ samples them, hashed with PDQ, from memory.

The videos are made here, in memory, from the demo's photos: slideshows that pan across a photo
and cut to the next, encoded by the FFmpeg inside PyAV's wheel."""

from __future__ import annotations

import hashlib
import io
import json
from fractions import Fraction

import av
import numpy as np
import pytest

from safeset.demo import slideshow
from safeset.hashing import DecodeError
from safeset.hashing.sniff import is_video
from safeset.hashing.video import VideoLimits, hash_video


def frames_of(video: bytes, *args, **kwargs):
    return hash_video(video, *args, **kwargs).frames


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
        frames = frames_of(video, seconds_per_hash)
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
        # keyframes more often than frames are sampled: the packets between are not decoded at all
        slideshow(photos, 6, options={"x264-params": "keyint=10:min-keyint=10:scenecut=0"}),
        slideshow(photos, 6, options={"x264-params": "keyint=12:open-gop=1:bframes=3:b-pyramid=normal"}),
        slideshow(photos, 4, 24, codec="libvpx-vp9", fmt="webm", options={"g": "6"}),
        slideshow(photos, 4, 25, codec="mpeg2video", fmt="mpegts", options={"g": "6", "bf": "2"}),
    ]
    for video in videos:
        for seconds in (1.0, 0.3, 0, 2.0):
            assert frames_of(video, seconds) == frames_of(video, seconds, skip_unsampled=False)


def test_every_frame_at_zero_seconds_per_hash_and_other_containers(photos):
    webm = slideshow(photos, 1, 10, codec="libvpx-vp9", fmt="webm")
    assert is_video(webm) and [f.frame for f in frames_of(webm, 0)] == list(range(10))
    avi = slideshow(photos, 1, 10, codec="mpeg4", fmt="avi")
    assert is_video(avi) and len(frames_of(avi)) == 1


def test_hostile_videos_end_as_decode_errors_in_bounded_time(photos, tiles):
    from safeset.demo import jpeg

    video = slideshow(photos, 4)
    cut = hash_video(video, limits=VideoLimits(max_seconds=2))  # its first 2 s hashed, and said so
    assert [f.frame for f in cut.frames] == [0, 25] and cut.incomplete.startswith("longer than 2 s")
    assert hash_video(video, limits=VideoLimits(max_decoded_frames=30)).incomplete.startswith("longer than")
    assert hash_video(video).incomplete is None
    with pytest.raises(DecodeError, match="past the limit"):
        frames_of(video, limits=VideoLimits(max_frame_pixels=320 * 239))
    with pytest.raises(DecodeError):
        frames_of(video[: len(video) // 3])  # cut short: the index (moov) is at the end
    for junk in (b"", b"\x00" * 1000, jpeg(tiles[0][1]), b"RIFF\x00\x00\x00\x00AVI LIST" + b"\xff" * 500):
        with pytest.raises(DecodeError):
            frames_of(junk)
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
    from safeset.banks.vpdq import frames_of_signal, signal_of_hash_file

    frames = [("ab" * 32, 100), ("cd" * 32, 49), ("0" * 64, 0)]
    assert frames_of_signal(vpdq_to_json(_features(frames))) == frames
    lines = [f"{n},{q},{pdq.upper()},{n / 25:.3f}" for n, (pdq, q) in enumerate(frames)]
    assert frames_of_signal(signal_of_hash_file(["", *lines, ""])) == frames
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
    as_listed = [(f.pdq, f.quality) for f in frames_of(original)]
    index = VpdqIndex([as_listed, [(f.pdq, f.quality) for f in frames_of(slideshow(others, 10))]])
    copies = {
        "low quality": reencoded(original, crf=40),
        "smaller": reencoded(original, size=(240, 180)),
        "15 fps": reencoded(original, rate=15),
        "29.97 fps": reencoded(original, rate=30000 / 1001),
        "start cut": reencoded(original, skip_seconds=1.5),
        "mpeg4": reencoded(original, codec="mpeg4"),
    }
    for name, copy in copies.items():
        found = index.match([(f.pdq, f.quality) for f in frames_of(copy)])
        assert [m.video for m in found] == [0], name
        assert found[0].query_percent >= 80, name
    unrelated = slideshow([image.resize((480, 240)) for _, image in tiles[16:21]], 10)
    assert index.match([(f.pdq, f.quality) for f in frames_of(unrelated)]) == []


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
            ours = frames_of(video, seconds)
            assert [(f.frame_number, f.quality, f.hex) for f in theirs] == [(f.frame, f.quality, f.pdq) for f in ours]
            assert [round(f.timestamp, 3) for f in theirs] == [round(f.timestamp, 3) for f in ours], name


def test_hash_vpdq_prints_the_frames_as_vpdq_and_threatexchange_write_them(tmp_path, photos):
    """`safeset hash --vpdq`: vpdq's hash-file lines, or (--json) python-threatexchange's signal,
    which its own parser reads back; bad videos are named, with no content printed."""
    import json

    from helpers import run_cli
    from threatexchange.extensions.vpdq.vpdq_util import json_to_vpdq, vpdq_to_json

    from safeset.banks.vpdq import frames_of_signal, signal_of_hash_file

    path = tmp_path / "clip.mp4"
    path.write_bytes(slideshow(photos, 3))
    frames = frames_of(path.read_bytes())
    printed = run_cli("hash", "--vpdq", str(path))
    assert printed.exit_code == 0 and printed.stdout.splitlines() == [f.line() for f in frames]
    assert frames_of_signal(signal_of_hash_file(printed.stdout.splitlines())) == [(f.pdq, f.quality) for f in frames]
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


def test_a_scan_checks_the_videos_of_webdataset_shards_and_a_decide_round_rematches_them(tmp_path, home, tiles):
    """video2dataset-like shards (`.mp4` beside `.txt`): a copy of a listed video (a vPDQ list,
    vpdq's hash file) is removed with both shares recorded; a video showing a listed photo (a PDQ
    list) is removed by that frame; an unrelated video is kept; a broken one is not checked. A
    decide round with a stricter share re-matches the stored frames without reading a video."""
    import pyarrow.parquet as pq
    from helpers import read_json, run_cli, write_lines

    from safeset.demo import Sample, jpeg, write_img2dataset_shard

    photos = [image.resize((480, 240)) for _, image in tiles[:5]]
    original = slideshow(photos, 8)
    listed = tmp_path / "listed" / "case-17.vpdq"
    listed.parent.mkdir()
    listed.write_text("\n".join(f.line() for f in frames_of(original)) + "\n")
    assert run_cli("bank", "add", "videos", str(listed.parent), "--type", "vpdq", home=home).exit_code == 0
    still = tiles[30][1].resize((480, 240))
    write_lines(tmp_path / "stills.txt", [f"pdq {frames_of(slideshow([still], 1))[0].pdq}"])
    assert run_cli("bank", "add", "stills", str(tmp_path / "stills.txt"), home=home).exit_code == 0

    others = [image.resize((480, 240)) for _, image in tiles[8:12]]
    videos = {
        "copy": reencoded(slideshow(photos, 4), size=(240, 180), crf=35),  # its first half, smaller
        "still inside": slideshow([others[0], others[1], still, others[2]], 8),
        "unrelated": slideshow(others, 8),
        "broken": slideshow(others, 4)[:3000],
    }
    samples = [Sample(f"https://v.example.org/{name}.mp4", name, data, ext="mp4") for name, data in videos.items()]
    samples.append(Sample("https://v.example.org/photo.jpg", "photo", jpeg(tiles[40][1])))
    write_img2dataset_shard(tmp_path / "shards", 0, samples)

    out = tmp_path / "out"
    scanned = run_cli("scan", str(tmp_path / "shards"), "--out", str(out), "--workers", "1", "-q", home=home)
    assert scanned.exit_code == 0, scanned.output
    rows = {r["caption"]: r for r in pq.read_table(next((out / "results").glob("*.parquet"))).to_pylist()}
    copy = rows["copy"]
    assert copy["decision"] == "remove" and copy["status"] == "ok"
    (match,) = copy["matches"]
    assert (match["bank"], match["signal_type"], match["entry"]) == ("videos", "vpdq", "case-17.vpdq")
    assert (match["query_percent"], match["compared_percent"]) == (100, 50)
    assert copy["md5"] and copy["pdq"] is None and (copy["width"], copy["height"]) == (240, 180)
    assert [f["frame"] for f in copy["frames"]] == [0, 25, 50, 75]
    inside = rows["still inside"]
    assert inside["decision"] == "remove"
    assert {(m["bank"], m["variant"]) for m in inside["matches"]} == {("stills", "video_frame:100")}
    assert rows["unrelated"]["decision"] == "keep" and rows["unrelated"]["matches"] == []
    assert rows["broken"]["status"] == "video_incomplete" and rows["broken"]["error"].startswith("video:")
    assert rows["broken"]["decision"] == "review"  # a video not wholly checked is looked at
    assert rows["photo"]["frames"] is None and rows["photo"]["decision"] == "keep"
    report = read_json(out / "report.json")
    assert report["totals"]["rows"] == 5 == sum(report["totals"][k] for k in ("keep", "remove", "review"))
    assert report["videos"] == {"rows": 4, "frames": 4 + 8 + 8 + 0, "keep": 1, "remove": 2, "review": 1}

    # a verifier gets a video's frames as python-threatexchange's signal, which its parser reads
    from threatexchange.extensions.vpdq.vpdq_util import json_to_vpdq

    assert run_cli("review", "export", str(out), "--to", str(tmp_path / "cases"), "--format", "jsonl").exit_code == 0
    cases = {c["row_id"]: c for c in map(json.loads, (tmp_path / "cases" / "cases.jsonl").read_text().splitlines())}
    sent = cases[copy["row_id"]]
    assert [f.pdq_hex for f in json_to_vpdq(sent["vpdq"])] == [f["pdq"].hex() for f in copy["frames"]]
    hashes = (tmp_path / "cases" / "hashes.txt").read_text().splitlines()
    assert f"video_md5 {copy['md5']}" in hashes and f"vpdq {sent['vpdq']}" in hashes
    assert rows["photo"]["row_id"] not in cases  # kept: not a case

    strict = run_cli("decide", str(out), "--vpdq-compared-percent", "60", home=home)
    assert strict.exit_code == 0, strict.output
    rows = {r["caption"]: r for r in pq.read_table(next((out / "results").glob("*.parquet"))).to_pylist()}
    assert rows["copy"]["decision"] == "keep" and rows["copy"]["matches"] == []  # half the listed video: not 60%
    assert rows["still inside"]["decision"] == "remove"  # frames matched as stills are untouched by the shares
    assert read_json(out / "report.json")["rounds"][-1]["match"]["vpdq_compared_percent"] == 60

    # confirmed, the video's frames join the bank of confirmed hashes, named by its case
    verdicts = tmp_path / "verdicts.csv"
    verdicts.write_text(f"case_id,verdict\n{sent['case_id']},confirmed\n")
    assert run_cli("review", "import", str(verdicts), "--out", str(out), home=home).exit_code == 0
    from safeset import Auditor
    from safeset.banks.verdicts import CONFIRMED_BANK

    again = Auditor(home, banks=[CONFIRMED_BANK]).check_bytes(reencoded(slideshow(photos, 4), crf=30))
    assert {(m["signal_type"], m["entry"]) for m in again["matches"]} == {("vpdq", sent["case_id"])}


def test_listed_videos_come_in_every_shape_the_exchanges_write(tmp_path, store, tiles):
    """python-threatexchange's local file (`vpdq [...]` beside other types), bare signals with
    --type vpdq, a CSV naming each video, vpdq hash files alone or in (nested) folders: each video
    is one entry, named in matches by its id, file or line; bad files and lines are reported by
    name and number, never by content. `Auditor.check_bytes` checks a video as a scan does."""
    from threatexchange.extensions.vpdq.vpdq_util import VpdqCompactFeature, vpdq_to_json

    from safeset import Auditor
    from safeset.banks.signal_types import signal_type

    photos = [image.resize((480, 240)) for _, image in tiles[:5]]
    video = slideshow(photos, 6)
    frames = frames_of(video)
    signal = vpdq_to_json([VpdqCompactFeature(f.pdq, f.quality, f.timestamp) for f in frames])
    md5 = "ab" * 16

    pytx = tmp_path / "pytx.txt"
    pytx.write_text(f"video_md5 {md5}\nvpdq {signal}\nvpdq [not json\nvpdq {'[' * 100_000}\n")
    added = store.add("pytx", pytx)
    assert added.bank.counts == {"md5": 1, "vpdq": 1} and [e.line for e in added.errors] == [3, 4]
    assert signal not in str(added.errors)
    bare = tmp_path / "bare.txt"
    bare.write_text(f"{signal}\n")
    store.add("bare", bare, type_name="vpdq")
    table = tmp_path / "table.csv"
    table.write_text('video_id,vpdq\ncase-9,"' + signal.replace('"', '""') + '"\n')
    store.add("table", table)
    folder = tmp_path / ".lists" / "hashes"  # a folder inside a hidden one is read all the same
    (folder / "2026" / "11").mkdir(parents=True)
    (folder / "2026" / "11" / "clip.txt").write_text("# vpdq\n" + "\n".join(f.line() for f in frames))
    (folder / "broken.txt").write_text("0,100,zz,0.0\n")
    (folder / ".hidden.txt").write_text("not read\n")
    added = store.add("folder", folder, type_name="vpdq")
    assert added.accepted == 1 and [(e.line, e.reason) for e in added.errors] == [
        (2, "broken.txt: line 1: a frame's PDQ is not 64 hex digits")
    ]
    long = [VpdqCompactFeature(frames[i % len(frames)].pdq, 100, float(i)) for i in range(2000)]  # 150 KB a line
    long_list = tmp_path / "long.txt"
    long_list.write_text(f"vpdq {vpdq_to_json(long)}\n")
    assert store.add("long", long_list).accepted == 1

    auditor = Auditor(store.home, banks=["pytx", "bare", "table", "folder"])
    copy = reencoded(video, size=(320, 160), crf=30)
    row = auditor.check_bytes(copy)
    assert row["decision"] == "remove" and len(row["frames"]) == len(frames)
    assert {(m["bank"], m["entry"], m["query_percent"]) for m in row["matches"]} == {
        ("pytx", "pytx.txt:2", 100),
        ("bare", "bare.txt:1", 100),
        ("table", "case-9", 100),
        ("folder", "2026/11/clip.txt", 100),
    }
    assert signal_type("vpdq").normalise(signal) == signal_type("vpdq").normalise(signal.upper())
    unrelated = auditor.check_bytes(slideshow([image.resize((480, 240)) for _, image in tiles[20:23]], 6))
    assert unrelated["decision"] == "keep" and unrelated["matches"] == []
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "a\x1b[31mred\nname.txt").write_text("1,2,3\n")
    from safeset.errors import BadInputError

    with pytest.raises(BadInputError) as refused:  # no valid entry: refused, naming the file safely
        store.add("odd", odd, type_name="vpdq")
    assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)

    # a verifier's verdict names a listed video by its label's tag, as the report shows it
    from safeset.banks.verdicts import entry_tag
    from safeset.pipeline.review import import_verdicts

    verdicts = tmp_path / "verdicts.csv"
    verdicts.write_text(f"bank,entry,verdict\ntable,{entry_tag('case-9')},false_positive\n")
    assert import_verdicts(verdicts, store.home, entries=True)["imported"] == 1
    refuted = Auditor(store.home, banks=["table"]).check_bytes(copy)
    assert refuted["decision"] == "keep" and "verdict:false_positive" in refuted["reasons"]


def test_a_results_part_from_before_videos_is_still_decided(tmp_path, home, tiles):
    """Format 3 parts (no frames, no vPDQ shares) read as format 4 with nothing of a video."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from safeset.pipeline.decide import read_results
    from safeset.sinks.results import RESULTS_SCHEMA, conformed

    rows = [
        {"row_id": "s:0", "index": 0, "status": "ok", "payloads": [{"name": "json", "status": "ok"}],
         "matches": [{"bank": "b", "signal_type": "md5", "entry": "e", "distance": 0}]},
        {"row_id": "s:1", "index": 1, "status": "no_image", "payloads": None, "matches": []},
    ]  # fmt: skip

    def older(field: pa.Field) -> pa.Field:
        kind = field.type
        if pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
            inner = [f for f in kind.value_type if f.name not in ("frames", "query_percent", "compared_percent")]
            kind = pa.list_(pa.struct(inner))
        return pa.field(field.name, kind)

    schema = pa.schema(
        [older(f) for f in RESULTS_SCHEMA if f.name != "frames"], metadata={"safeset.format_version": "3"}
    )
    part = tmp_path / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), part)
    table = read_results(part)
    assert table.schema.equals(RESULTS_SCHEMA, check_metadata=False)
    assert table["frames"].to_pylist() == [None, None]
    assert table["payloads"].to_pylist()[0][0]["frames"] is None and table["payloads"].to_pylist()[1] is None
    assert table["matches"].to_pylist()[0][0]["query_percent"] is None
    assert conformed(table).equals(table)

    # an audit an older safeset wrote (format 3 parts, no vPDQ settings in its run record) is decided
    from helpers import listed_tile_shards, read_json, run_cli

    shards, pdq_list = listed_tile_shards(tmp_path, tiles, 12, 2, 4)
    assert run_cli("bank", "add", "listed", pdq_list, home=home).exit_code == 0
    out = tmp_path / "out"
    assert run_cli("scan", shards, "--out", out, "-q", home=home).exit_code == 0
    for part in (out / "results").glob("*.parquet"):
        new = pq.read_table(part).cast(RESULTS_SCHEMA)
        old = pa.Table.from_pylist(new.drop_columns(["frames"]).to_pylist(), schema=schema)
        pq.write_table(old, part)
    record = read_json(out / "_state" / "run.json")
    record["match"] = {k: record["match"][k] for k in ("pdq_threshold", "pdq_variant_threshold")}
    (out / "_state" / "run.json").write_text(json.dumps(record))
    decided = run_cli("decide", out, "-q", home=home)
    assert decided.exit_code == 0, decided.output
    report = read_json(out / "report.json")
    assert report["totals"]["remove"] == 3 and report["conservation"]["holds"]


def test_serve_checks_an_uploaded_video(tmp_path, home, tiles):
    """`POST /v1/check` with a video: decided by its frames, answered with both shares, a tag for
    the listed video, and the video's vPDQ signal; the listed label itself is never answered."""
    from test_serve import Server

    from safeset import BankStore
    from safeset.banks.vpdq import frames_of_signal

    photos = [image.resize((480, 240)) for _, image in tiles[:4]]
    video = slideshow(photos, 4)
    listed = tmp_path / "case-secret-label.txt"
    listed.write_text("\n".join(f.line() for f in frames_of(video)))
    BankStore(home).add("videos", listed, type_name="vpdq")
    server = Server(home, tmp_path)
    short = Server(home, tmp_path, "--max-video-seconds", "2")  # a platform's own limits
    try:
        status, found = server.request("/v1/check", reencoded(video, crf=35), **{"Content-Type": "video/mp4"})
        cut, held = short.request("/v1/check", video, **{"Content-Type": "video/mp4"})
    finally:
        server.stop()
        short.stop()
    assert cut == 422 and held["status"] == "video_incomplete" and held["decision"] == "remove"  # its start matched
    assert status == 200 and found["decision"] == "remove" and found["status"] == "ok"
    (match,) = found["matches"]
    assert match["signal_type"] == "vpdq" and match["query_percent"] == 100 and match["compared_percent"] > 0
    assert "secret" not in json.dumps(found)
    assert [q for _, q in frames_of_signal(found["vpdq"])] == [f.quality for f in frames_of(reencoded(video, crf=35))]


def test_fetched_videos_are_checked_whatever_their_content_type_says(tmp_path, home, tiles):
    """`--fetch` of URLs that serve a video (from the loopback test server), one labelled a JPEG and
    one labelled text/plain: both are decoded as videos and matched against a vPDQ list."""
    from helpers import read_json, run_cli
    from http_server import FaultyServer

    from safeset import BankStore

    video = slideshow([image.resize((480, 240)) for _, image in tiles[:4]], 4)
    listed = tmp_path / "listed.txt"
    listed.write_text("\n".join(f.line() for f in frames_of(video)))
    BankStore(home).add("videos", listed, type_name="vpdq")
    with FaultyServer({"clip": reencoded(video, crf=30)}) as server:
        meta = tmp_path / "meta.csv"
        meta.write_text(f"url\n{server.url('/img/clip')}\n{server.url('/as-text/clip')}\n")
        out = tmp_path / "out"
        scanned = run_cli("scan", meta, "--out", out, "--fetch", "--allow-private-networks", "-q", home=home)
    assert scanned.exit_code == 0, scanned.output
    import pyarrow.parquet as pq

    rows = pq.read_table(next((out / "results").glob("*.parquet"))).to_pylist()
    assert [(r["status"], r["decision"], len(r["frames"])) for r in rows] == [("ok", "remove", 4)] * 2
    assert all(r["matches"][0]["signal_type"] == "vpdq" for r in rows)
    assert read_json(out / "report.json")["problems"] == []


def _streams(*videos: bytes) -> bytes:
    """One Matroska file holding the video streams of several files, the first the default."""
    out = io.BytesIO()
    sources = [av.open(io.BytesIO(v)) for v in videos]
    with av.open(out, "w", format="matroska") as target:
        streams = [target.add_stream_from_template(s.streams.video[0]) for s in sources]
        for source, stream in zip(sources, streams, strict=True):
            for packet in source.demux(source.streams.video[0]):
                if packet.size:
                    packet.stream = stream
                    target.mux(packet)
    for source in sources:
        source.close()
    return out.getvalue()


def test_hostile_videos_are_statuses_never_crashes_and_cost_what_the_limits_allow(tiles, photos):
    """Every video stream is hashed (a decoy first stream hides nothing); an unknown codec, a
    seeded fuzz of corrupt and cut files, an audio-only file: each ends as a status with a reason;
    the budget of pixels decoded stops a video, keeping what it hashed; still images whose bytes
    hold a video's marks are still images."""
    import random

    from safeset.hashing.sniff import sniff
    from safeset.model import Payload, Status
    from safeset.pipeline.check import CheckSettings, hash_payload

    decoy, hidden = slideshow(photos[:2], 2), slideshow(photos[2:], 3)
    both = hash_payload(Payload("mkv", _streams(decoy, hidden)))
    (other,) = both.streams
    assert both.status is other.status is Status.OK and other.name == "mkv#stream1"
    assert [f.pdq for f in other.frames] == [f.pdq for f in frames_of(hidden)]

    mangled = hash_payload(Payload("", decoy.replace(b"avc1", b"zzz1")))
    assert (mangled.status, mangled.error) == (Status.VIDEO_INCOMPLETE, "video: no decoder for its codec")
    rng = random.Random(16)
    bases = [decoy, slideshow(photos[:2], 2, fmt="mpegts"), slideshow(photos[:2], 2, fmt="matroska")]
    for _ in range(300):
        damaged = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        if rng.random() < 0.3:
            damaged = damaged[: rng.randrange(len(damaged))]
        result = hash_payload(Payload("", bytes(damaged)))  # never raises
        assert result.status in (Status.OK, Status.VIDEO_INCOMPLETE, Status.UNSUPPORTED_MEDIA, Status.NO_IMAGE)
        assert result.md5 and (result.error is None or len(result.error) < 120)

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for n in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, n * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    audio = hash_payload(Payload("", out.getvalue()))
    assert (audio.status, audio.error) == (Status.UNSUPPORTED_MEDIA, "audio")

    long = slideshow(photos, 8)
    spent = hash_payload(Payload("", long), CheckSettings(max_video_pixels=320 * 240 * 60))
    assert spent.status is Status.VIDEO_INCOMPLETE and "budget" in spent.error
    assert 0 < len(spent.frames) < len(frames_of(long))

    assert sniff(b"P6\n#ftypisom\n4 4\n255\n" + b"\0" * 48) == "ppm"  # a PNM comment is no video box
    for brands in (b"miaf\0\0\0\0mif1", b"mp42\0\0\0\0MA1B", b"isom\0\0\0\0avif"):
        assert sniff(b"\0\0\0\x1cftyp" + brands + b"miaf" + b"\0" * 40) in ("avif", "heif")


def test_a_video_too_large_to_hold_is_matched_by_the_frames_of_its_start(tmp_path, home, photos):
    """A Matroska member past --max-bytes: its digests taken as it streams past, the frames of its
    first bytes hashed and matched (a listed video is removed), and the row says it was cut."""
    import pyarrow.parquet as pq
    from helpers import run_cli

    from safeset import BankStore
    from safeset.demo import Sample, write_img2dataset_shard

    video = slideshow(photos, 8, fmt="matroska")
    listed = tmp_path / "listed.txt"
    listed.write_text("\n".join(f.line() for f in frames_of(video)))
    BankStore(home).add("videos", listed, type_name="vpdq")
    write_img2dataset_shard(tmp_path / "shards", 0, [Sample("https://v.example.org/a.mkv", "a", video, ext="mkv")])
    out = tmp_path / "out"
    limit = len(video) // 2
    scanned = run_cli("scan", tmp_path / "shards", "--out", out, "--max-bytes", limit, "-q", home=home)
    assert scanned.exit_code == 0, scanned.output
    (row,) = pq.read_table(next((out / "results").glob("*.parquet"))).to_pylist()
    assert (row["status"], row["error"], row["decision"]) == ("video_incomplete", "video: too_large", "remove")
    assert 0 < len(row["frames"]) < len(frames_of(video)) and row["md5"] == hashlib.md5(video).hexdigest()


def _remux(video: bytes, fmt: str, every_packet_a_keyframe: bool = False) -> bytes:
    out = io.BytesIO()
    with av.open(io.BytesIO(video)) as source, av.open(out, "w", format=fmt) as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                packet.is_keyframe = packet.is_keyframe or every_packet_a_keyframe
                target.mux(packet)
    return out.getvalue()


def test_what_a_container_claims_does_not_hide_frames(photos):
    """A video's header that calls it a still image (AVIF and HEIF brands), keyframe flags on every
    packet, a frame rate forty times what its timestamps show, a fifth video stream: each either
    changes nothing of what is hashed or leaves the video held for review."""
    from safeset.model import Payload, Status
    from safeset.pipeline.check import hash_payload

    video = slideshow(photos, 6)
    frames = [f.pdq for f in frames_of(video)]
    head = video[: int.from_bytes(video[:4], "big")]
    for brand in (b"avif", b"mif1", b"MA1B"):
        still = video.replace(head, head[:-4] + brand, 1)  # a compatible brand of a still image
        assert [f.pdq for f in hash_payload(Payload("", still)).frames] == frames, brand

    flagged = _remux(slideshow(photos, 6, codec="flv", fmt="flv", options={"g": "300"}), "flv", True)
    assert frames_of(flagged) == frames_of(flagged, skip_unsampled=False)  # decoded from the start

    mkv = bytearray(_remux(video, "matroska"))
    at = mkv.find(bytes.fromhex("23e383"))  # DefaultDuration: 40 ms a frame, claimed to be 1 ms
    size = mkv[at + 3] & 0x0F
    mkv[at + 4 : at + 4 + size] = (10**6).to_bytes(size, "big")
    claimed = hash_payload(Payload("", bytes(mkv)))
    assert claimed.status is Status.VIDEO_INCOMPLETE and "claims 1000 frames a second" in claimed.error

    many = hash_payload(Payload("mkv", _streams(*[slideshow(photos[i % 4 :], 2) for i in range(5)])))
    assert many.status is Status.VIDEO_INCOMPLETE and many.error == "video: 5 video streams, the first 4 hashed"
    assert [s.name for s in many.streams] == ["mkv#stream1", "mkv#stream2", "mkv#stream3"]
