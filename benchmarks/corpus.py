"""The benchmark corpus: freely licensed photos that come inside registry packages, cut into tiles.

Sources (nothing is fetched from the web; both come through their registries' own clients):
- Debian's `plasma-workspace-wallpapers` (KDE Plasma wallpapers, LGPL-3 / CC-BY-SA-4.0): the 12
  photographs among them, credited below from each wallpaper's metadata.json;
- scikit-image's sample photos (CC0 / public domain), already installed with the `demo` extra.

Sets written under build/bench/corpus/ (built once, reused):
- photos-384/   384x384 non-overlapping tiles of every photo: distinct images, none a crop of another
                (the robustness benchmark's corpus);
- jpeg-1500/    1500x1000 JPEGs (quality 88) cut from the wallpapers (speed of decode + PDQ);
- jpeg-512/     512x512 JPEG tiles (quality 88) of the wallpapers.

Run: python benchmarks/corpus.py   (the other benchmarks call it themselves)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent / "build" / "bench"
CACHE = ROOT / "cache"
CORPUS = ROOT / "corpus"
PACKAGE = "plasma-workspace-wallpapers"
# The photographs among the package's wallpapers (the others are illustrations and renders).
PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
    "Volna",
)


def wallpapers() -> Path:
    """The extracted Debian package (downloaded with `apt-get download`, unpacked with dpkg-deb)."""
    target = CACHE / "wallpapers"
    if (target / "usr").is_dir():
        return target / "usr" / "share" / "wallpapers"
    CACHE.mkdir(parents=True, exist_ok=True)
    if not list(CACHE.glob(f"{PACKAGE}_*.deb")):
        fetch = subprocess.run(["apt-get", "download", PACKAGE], cwd=CACHE, capture_output=True, text=True)
        if fetch.returncode != 0:
            sys.exit(
                f"could not download the Debian package {PACKAGE} (apt-get download: {fetch.stderr.strip()}).\n"
                "On Debian or Ubuntu run `apt-get update` first (as root), then rerun."
            )
    deb = sorted(CACHE.glob(f"{PACKAGE}_*.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return target / "usr" / "share" / "wallpapers"


def photo_files() -> list[tuple[str, Path, str]]:
    """(name, largest JPEG, credit) of each photograph."""
    root = wallpapers()
    found = []
    for name in PHOTOS:
        images = sorted((root / name / "contents" / "images").glob("*.jpg"))
        largest = max(images, key=lambda p: Image.open(p).size[0] * Image.open(p).size[1])
        credit = "Plasma wallpapers"
        meta = root / name / "metadata.json"
        if meta.is_file():
            plugin = json.loads(meta.read_text()).get("KPlugin", {})
            author = (plugin.get("Authors") or [{}])[0].get("Name", "unknown")
            credit = f"{author} ({plugin.get('License', 'see package')})"
        found.append((name, largest, credit))
    return found


def _tiles(image: Image.Image, size: int):
    for y in range(0, image.height - size + 1, size):
        for x in range(0, image.width - size + 1, size):
            yield y, x, image.crop((x, y, x + size, y + size))


def build() -> Path:
    """Build every set once; return the corpus directory."""
    stamp = CORPUS / ".complete"
    if stamp.is_file():
        return CORPUS
    shutil.rmtree(CORPUS, ignore_errors=True)
    for name in ("photos-384", "jpeg-1500", "jpeg-512"):
        (CORPUS / name).mkdir(parents=True)
    credits = []
    for name, path, credit in photo_files():
        credits.append(f"{name}: {credit}")
        image = Image.open(path).convert("RGB")
        for y, x, tile in _tiles(image, 384):
            tile.save(CORPUS / "photos-384" / f"{name}-{y}-{x}.jpg", quality=90)
        for y, x, tile in _tiles(image, 512):
            tile.save(CORPUS / "jpeg-512" / f"{name}-{y}-{x}.jpg", quality=88)
        for x in range(0, image.width - 1500 + 1, 1030):
            for y in range(0, image.height - 1000 + 1, 600):
                image.crop((x, y, x + 1500, y + 1000)).save(CORPUS / "jpeg-1500" / f"{name}-{y}-{x}.jpg", quality=88)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from safeset.demo import PHOTOS as SKIMAGE_PHOTOS
    from safeset.demo import load_photo

    for name, credit in SKIMAGE_PHOTOS.items():
        credits.append(f"scikit-image {name}: {credit}")
        image = load_photo(name)
        stem = name.split(".")[0]
        if min(image.size) < 384:
            image.save(CORPUS / "photos-384" / f"sk-{stem}.jpg", quality=90)
        for y, x, tile in _tiles(image, 384):
            tile.save(CORPUS / "photos-384" / f"sk-{stem}-{y}-{x}.jpg", quality=90)
    (CORPUS / "CREDITS.txt").write_text("\n".join(credits) + "\n")
    stamp.touch()
    return CORPUS


if __name__ == "__main__":
    corpus = build()
    for name in ("photos-384", "jpeg-1500", "jpeg-512"):
        print(f"{name}: {len(list((corpus / name).glob('*.jpg')))} images")
    print((corpus / "CREDITS.txt").read_text())
