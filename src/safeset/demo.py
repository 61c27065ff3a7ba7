"""A demo dataset made only of benign, freely licensed photos, and the end-to-end run over it.

The photos are the CC0 / public-domain sample images scikit-image ships inside its wheel (the `demo`
extra); nothing is downloaded. They are cut into tiles, encoded as JPEG and written as img2dataset
shards (tar + parquet + stats). A few tiles are put on demo hash lists as stand-ins for "known bad"
images, and the dataset holds exact copies of some (caught by MD5 and PDQ) and resized, recompressed
copies of others (caught by PDQ alone), plus two rows whose URL is listed. Short videos made of
tiles (`slideshow`) stand for a video dataset's clips: a listed clip re-encoded (caught by vPDQ), a
clip that shows a listed tile for a moment (caught by that frame's PDQ), and an unlisted one.

The same writer builds the webdataset fixtures of the test suite.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image

from ._optional import package_dir
from .errors import UsageError
from .sinks.img2dataset import Img2datasetWriter

# scikit-image's sample photos and their licences (from the docstrings of `skimage.data`).
PHOTOS: dict[str, str] = {
    "astronaut.png": "Eileen Collins, NASA Great Images (public domain)",
    "camera.png": "Lav Varshney (CC0)",
    "coffee.png": "Rachel Michetti (CC0)",
    "chelsea.png": "Stefan van der Walt (CC0)",
    "rocket.jpg": "SpaceX, DSCOVR launch (public domain)",
    "hubble_deep_field.jpg": "NASA / ESA Hubble (public domain)",
    "retina.jpg": "Mikael Häggström, Wikimedia Commons (CC0)",
    "brick.png": "CC0Textures Bricks25 (CC0)",
    "grass.png": "linolafett, DeviantArt (CC0)",
    "gravel.png": "CC0Textures Gravel04 (CC0)",
    "coins.png": "Brooklyn Museum collection (no known copyright restrictions)",
    "cell.png": "scikit-image sample data (CC0)",
}
DEMO_MARK = ".safeset-demo"  # in a demo folder: what `safeset demo` may replace
DOMAINS = ("images.example.org", "cdn.example.net", "photos.example.com", "static.example.edu")


def photo_dir() -> Path:
    return package_dir("skimage", extra="demo") / "data"


def load_photo(name: str) -> Image.Image:
    with Image.open(photo_dir() / name) as image:
        return image.convert("RGB")


def photo_tiles(tile: int = 192, stride: int = 96, per_photo: int = 30) -> list[tuple[str, Image.Image]]:
    """Tiles of every photo on a grid of `stride`, at most `per_photo` each, evenly spread."""
    tiles: list[tuple[str, Image.Image]] = []
    for name in PHOTOS:
        image = load_photo(name)
        rows = range(0, image.height - tile + 1, stride)
        cols = range(0, image.width - tile + 1, stride)
        cells = [(y, x) for y in rows for x in cols]
        step = max(1, len(cells) // per_photo)
        for y, x in cells[::step][:per_photo]:
            tiles.append((f"{name.split('.')[0]}-y{y}x{x}", image.crop((x, y, x + tile, y + tile))))
    return tiles


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class Sample:
    """One row of an img2dataset shard; `image` None means a failed download (parquet row only)."""

    url: str
    caption: str
    image: bytes | None
    ext: str = "jpg"
    error: str | None = None
    size: tuple[int, int] | None = None


def slideshow(
    photos: Sequence[Image.Image],
    seconds: float,
    rate: Fraction | int = 25,
    size: tuple[int, int] = (320, 240),
    codec: str = "libx264",
    fmt: str = "mp4",
    options: dict[str, str] | None = None,
) -> bytes:
    """A video panning slowly across each photo for 2 s (4 px), then cutting to the next, encoded
    in memory by the FFmpeg inside PyAV's wheel; `options`: the encoder's (x264's `crf`, ...). A fast
    pan would defeat vPDQ: at a frame a second, a copy sampled half a second off sees other pictures."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = options or {}
        for n in range(int(seconds * rate)):
            photo = np.asarray(photos[int(n / rate / 2) % len(photos)].convert("RGB"))
            w, h = size
            span = min(4, max(1, photo.shape[1] - w))
            x = int(span * ((n / rate) % 2) / 2)
            crop = photo[:h, x : x + w]
            crop = np.pad(crop, ((0, h - crop.shape[0]), (0, w - crop.shape[1]), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(crop), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def write_img2dataset_shard(directory: Path, shard: int, samples: Sequence[Sample]) -> Path:
    """Write `NNNNN.tar`, `NNNNN.parquet` and `NNNNN_stats.json` as img2dataset does."""
    writer = Img2datasetWriter(directory, shard)
    for sample in samples:
        error = None if sample.image is not None else (sample.error or "HTTP Error 404: Not Found")
        writer.add(sample.image, sample.url, sample.caption, error, sample.size, sample.ext)
    return writer.close()


@dataclass(frozen=True)
class DemoData:
    shards: Path
    md5_list: Path
    pdq_list: Path
    url_list: Path
    vpdq_list: Path
    listed_exact: int
    listed_transformed: int
    listed_urls: int
    listed_videos: int
    rows: int


def build_demo_dataset(root: Path, shards: int = 3) -> DemoData:
    """Write the demo shards and hash lists under `root` (replacing what is there)."""
    from .hashing import pdq  # the demo uses the library as a user would
    from .hashing.video import hash_video

    if root.exists():
        if not root.is_dir() or (any(root.iterdir()) and not (root / DEMO_MARK).is_file()):
            raise UsageError(f"{root} holds files that are not a safeset demo: give the demo a new or empty folder")
        shutil.rmtree(root)
    tiles = photo_tiles()
    encoded = [(name, image, jpeg(image)) for name, image in tiles]
    rng = random.Random(20240830)
    # Stand-ins for "known bad" images: tiles whose PDQ is reliable (quality >= 80), spread over photos.
    candidates = [t for t in encoded if pdq(t[2]).quality >= 80]
    listed = rng.sample(candidates, 8)
    exact, transformed = listed[:4], listed[4:]
    listed_names = {name for name, _, _ in listed}

    def url_for(name: str, variant: str = "") -> str:
        domain = DOMAINS[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(DOMAINS)]
        return f"https://{domain}/photos/{name}{variant}.jpg"

    samples = [
        Sample(url_for(name), f"tile {name} of a sample photo", data, size=image.size)
        for name, image, data in encoded
        if name not in listed_names
    ]
    listed_urls = [s.url for s in rng.sample(samples, 2)]  # ordinary images reported by URL
    # Exact copies: the very bytes on the list (MD5 and PDQ both match).
    samples += [Sample(url_for(n, "-copy"), f"copy of {n}", data, size=im.size) for n, im, data in exact]
    samples += [Sample(url_for(exact[0][0], "-copy2"), "second copy", exact[0][2], size=exact[0][1].size)]
    # Resized to 75% and recompressed at quality 70: only PDQ can recognise these.
    for n, image, _ in transformed:
        small = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
        samples.append(Sample(url_for(n, "-small"), f"resized {n}", jpeg(small, 70), size=small.size))
    # Clips of 6 s at 25 fps: a listed clip, re-encoded at a lower quality (caught by vPDQ); a clip
    # showing a listed tile for 2 s of its 6 (that frame caught by PDQ); and a clip on no list.
    unlisted = [image for name, image, _ in encoded if name not in listed_names]
    clip, other = rng.sample(unlisted, 3), rng.sample(unlisted, 3)
    listed_clip = slideshow(clip, 6, size=(192, 192))
    clips = {
        "clip-copy": slideshow(clip, 6, size=(192, 192), options={"crf": "35"}),
        "clip-with-listed-tile": slideshow([other[0], exact[1][1], other[1]], 6, size=(192, 192)),
        "clip-unlisted": slideshow(other, 6, size=(192, 192)),
    }
    samples += [
        Sample(f"https://videos.example.org/{name}.mp4", f"a short {name}", data, ext="mp4")
        for name, data in clips.items()
    ]
    # Failed downloads: rows in the parquet, no sample in the tar.
    samples += [Sample(f"https://gone.example.org/missing-{i}.jpg", "lost", None) for i in range(6)]
    rng.shuffle(samples)

    root.mkdir(parents=True)
    (root / DEMO_MARK).write_text("a safeset demo: `safeset demo` replaces this folder when run again\n")
    data_dir = root / "data" / "shards"
    per_shard = -(-len(samples) // shards)
    for shard in range(shards):
        write_img2dataset_shard(data_dir, shard, samples[shard * per_shard : (shard + 1) * per_shard])

    lists = root / "lists"
    lists.mkdir(parents=True)
    md5_list = lists / "demo-md5.txt"  # one hash per line
    md5_list.write_text("".join(hashlib.md5(d).hexdigest() + "\n" for _, _, d in listed))
    pdq_list = lists / "demo-pdq.txt"  # python-threatexchange's "<type> <hash>" lines
    pdq_list.write_text("".join(f"pdq {pdq(d)}\n" for _, _, d in listed))
    url_list = lists / "demo-urls.csv"  # CSV with a header
    url_list.write_text("url,note\n" + "".join(f"{u},reported\n" for u in listed_urls))
    vpdq_list = lists / "demo-vpdq"  # a folder of vpdq hash files, one video each
    vpdq_list.mkdir()
    (vpdq_list / "listed-clip.txt").write_text("".join(f"{f.line()}\n" for f in hash_video(listed_clip).frames))
    return DemoData(
        data_dir, md5_list, pdq_list, url_list, vpdq_list, 5, len(transformed), len(listed_urls), 2, len(samples)
    )


def run_demo(root: Path, workers: int | None = None, progress: bool = True) -> tuple[DemoData, dict]:
    """Build the demo, register its banks in `root/home`, scan, and return the report."""
    from . import scan
    from .banks import BankStore

    data = build_demo_dataset(root)
    home = root / "home"
    store = BankStore(home)
    store.add("demo-md5", data.md5_list, type_name="md5", label="demo stand-ins (MD5)")
    store.add("demo-pdq", data.pdq_list, label="demo stand-ins (PDQ)")
    store.add("demo-urls", data.url_list, label="demo reported URLs")
    store.add("demo-vpdq", data.vpdq_list, type_name="vpdq", label="demo stand-ins (vPDQ videos)")
    report = scan([data.shards], root / "out", workers=workers, home=str(home), progress=progress)
    return data, report


def credits() -> Iterable[str]:
    for name, credit in PHOTOS.items():
        yield f"{name}: {credit}"
