"""Video hashing (issue 16): sampled frames decoded and hashed per second, one core, against Meta's
`vpdq` package (`computeHash`) on the same videos.

The videos are made once from the corpus's wallpapers (build/bench/video/), 20 s at 25 fps, x264
with its defaults: slideshows panning slowly and cutting every 2 s (so a keyframe every 2 s) at
320x240, 640x360 and 1280x720 (small clips to HD), and a continuous pan across the photos with no
cut at 596x336, WebVid's clip size (one keyframe in 10 s, as most footage without cuts has). Both
tools sample a frame a second and run on one core (the process pinned to it; vpdq with one hashing
thread), each in its own process. Every run's frame hashes are compared: the same frames, the same
bits. What safeset saves is decoding: it decodes only the packets a sampled frame needs (from the
keyframe before it) and skips unsampled frames nothing refers to; frames other frames refer to are
decoded by both.

vpdq is source-only on PyPI: `make bench` builds it against Debian's FFmpeg (see the Makefile).

Run: python benchmarks/bench_video.py
"""

from __future__ import annotations

import io
import json
import sys
from fractions import Fraction

import common
import corpus
import numpy as np
from PIL import Image

VIDEOS = (("cuts", (320, 240)), ("cuts", (640, 360)), ("cuts", (1280, 720)), ("pan", (596, 336)))
SECONDS, RATE = 20, 25
VIDEO = corpus.ROOT / "video"


def make(kind: str, size: tuple[int, int]) -> bytes:
    import av

    photos = []
    for _, path, _ in corpus.photo_files()[:10]:
        with Image.open(path) as photo:
            photos.append(np.asarray(photo.convert("RGB").resize((size[0] + 8, size[1]), Image.Resampling.BILINEAR)))
    strip = np.concatenate(photos, axis=1)  # the photos side by side, for the continuous pan
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(RATE))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for n in range(SECONDS * RATE):
            if kind == "cuts":
                scaled = photos[(n // (2 * RATE)) % len(photos)]
                x = int(8 * (n % (2 * RATE)) / (2 * RATE))
                pixels = scaled[:, x : x + size[0]]
            else:
                x = (2 * n) % (strip.shape[1] - size[0])
                pixels = strip[:, x : x + size[0]]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def videos() -> list[tuple[str, str]]:
    VIDEO.mkdir(parents=True, exist_ok=True)
    made = []
    for kind, size in VIDEOS:
        name = f"{size[0]}x{size[1]} {kind}"
        path = VIDEO / f"{'slideshow' if kind == 'cuts' else 'pan'}-{size[0]}x{size[1]}.mp4"
        if not path.is_file():
            path.write_bytes(make(kind, size))
        made.append((name, str(path)))
    return made


_RUN = r"""
import json, os, statistics, sys, time
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
tool, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
if tool == "safeset":
    from safeset.hashing.video import hash_video
    data = open(path, "rb").read()
    work = lambda: [(f.frame, f.pdq) for f in hash_video(data).frames]
else:
    import vpdq
    work = lambda: [(f.frame_number, f.hex) for f in vpdq.computeHash(path, seconds_per_hash=1.0, thread_count=1)]
rates = []
for _ in range(runs):
    started = time.perf_counter()
    frames = work()
    rates.append(len(frames) / (time.perf_counter() - started))
print(json.dumps({"rate": statistics.median(rates), "rates": rates, "frames": frames}))
"""


def main() -> None:
    rows, results = [], {}
    for name, path in videos():
        ours = common.child(_RUN, "safeset", path, str(common.RUNS))
        theirs = common.child(_RUN, "vpdq", path, str(common.RUNS))
        same = ours["frames"] == theirs["frames"]
        results[name] = {"safeset": ours["rate"], "vpdq": theirs["rate"], "same_hashes": same}
        rows.append([name, len(ours["frames"]), ours["rate"], theirs["rate"], f"{ours['rate'] / theirs['rate']:.2f}x",
                     "yes" if same else "NO"])  # fmt: skip
    print(f"\nsampled frames (1 a second) decoded and hashed per second, one core, median of {common.RUNS}")
    common.table(["video", "frames", "safeset/s", "vpdq/s", "safeset is", "same hashes"], rows)
    common.save("video", results)
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
