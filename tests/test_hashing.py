"""PDQ and digests: golden values, the value object, agreement with the reference, bad bytes."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pdqhash
import pyarrow.parquet as pq
import pytest
from helpers import bomb_png, encode, make_shards, run_cli
from PIL import Image

import safeset
from safeset.demo import Sample, photo_dir
from safeset.hashing import DecodeError, PdqHash, decode_rgb, normalise_url, pdq_variants, to_luma, url_host
from safeset.hashing.image import DecodeLimits
from safeset.hashing.reference import reference_pdq
from safeset.model import Item, Payload, PayloadResult, Status
from safeset.pipeline import hash_item
from safeset.pipeline.check import CheckSettings, hash_payload

# Pinned so that any change to decoding or hashing is seen: the md5 of the file we hash (from
# scikit-image 0.26.0, which the test extra pins), Meta's reference PDQ of its full decode (pdqhash),
# and safeset's PDQ of the bytes, which decodes large JPEGs at reduced scale and lands a few bits away.
GOLDEN = {
    "astronaut.png": (
        "97066e0a8baf4cd0be9859f9825aa3a2",
        "2d6b1af3a956c529e79ca3d2526fa834d4196c81cedd04de0a26b855fc99b724",
        None,
        100,
    ),
    "coffee.png": (
        "f24210802e8d0690e0c1c2302f907cc4",
        "8c629e779a663698b9a33866c026726c21a679f61eb6e1f8c79ba7e23c8299e0",
        None,
        100,
    ),
    "chelsea.png": (
        "0f1b4a59504988622035d850dc0555ac",
        "5feb5321f01da156898e2bf629a5d3438412cdbd23f48942464526315db33ffd",
        None,
        100,
    ),
    "camera.png": (
        "f8b13d2cdd5ba56cf4ba2321bb7222f0",
        "dc9c9d3b746978f888f40ce6e5c3f70f7266623e8d989cb99f21f2010841e1c7",
        None,
        100,
    ),
    "rocket.jpg": (
        "511130d2072cc744a1fa5015bc23557a",
        "8792786c87937064bf1bc0e43f1fc0e03f1cc2e33da4c2537cec821b2ce4f376",
        "8793786c87937064af1bc0e43f1fc0e03f1cc2e33da4c2537cec821b2ce4f376",
        100,
    ),
    "hubble_deep_field.jpg": (
        "bfc42613c8edb720cf7d1343693787a4",
        "1c6715e46266634f72d42df2324ad397e70e86be9c665c59a42ec19c3369b919",
        "1c6715e46266634f72d42de2324ad397e70e86be9c665c59a42ec19c7369b919",
        100,
    ),
    "retina.jpg": (
        "5fa589edda0ab6832e3afcd92c402412",
        "83d22b5802d238191b87b1f8bf1ad487fc0f55f8405adc011fafa8f4ebfc2a59",
        "83d22b5802d228191b87f1f8bf1ad487fc0f55f8405adc011fafa8f4ebfc2a59",
        100,
    ),
    "moon.png": (
        "932cb5c7a6a594c2c78e55643abf6e71",
        "131645cde366d981e1e371b264d8b25b9e4d13771d8c4f366d946ca57133d0c9",
        None,
        83,
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_pdq(name):
    md5, reference_hex, ours_hex, quality = GOLDEN[name]
    data = (photo_dir() / name).read_bytes()
    assert hashlib.md5(data).hexdigest() == md5, "the test image itself changed"
    assert str(reference_pdq(data)) == reference_hex
    h = safeset.pdq(data)
    assert str(h) == (ours_hex or reference_hex)
    assert h.quality == quality
    assert h - PdqHash.from_hex(reference_hex) <= 4


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_full_size_pixels_give_exactly_the_reference_hash(name):
    """On the same full-size pixels our filter, DCT and bit order are the reference's, bit for bit."""
    with Image.open(photo_dir() / name) as image:
        rgb = np.asarray(image.convert("RGB"))
    vector, quality = pdqhash.compute(rgb)
    reference_hex = f"{int(''.join(str(int(b)) for b in vector), 2):064x}"  # pytx's conversion
    h = safeset.pdq(rgb)
    assert str(h) == reference_hex
    assert h.quality == quality


def test_pdq_accepts_bytes_pil_and_arrays(coffee):
    data = encode(coffee, "PNG")
    from_bytes = safeset.pdq(data)
    assert safeset.pdq(coffee) == from_bytes
    assert safeset.pdq(np.asarray(coffee)) == from_bytes
    grey = coffee.convert("L")
    assert safeset.pdq(np.asarray(grey)) == safeset.pdq(grey.convert("RGB"))
    with pytest.raises(TypeError):
        safeset.pdq("not bytes")  # type: ignore[arg-type]


def test_pdq_hash_value_object():
    a = PdqHash.from_hex("f" * 64, quality=90)
    b = PdqHash.from_hex("f" * 63 + "0", quality=10)
    assert a - b == 4
    assert b - a == 4
    assert a - a == 0
    assert str(a) == "f" * 64
    assert a.bits == b"\xff" * 32
    assert a.quality == 90
    assert a == PdqHash(b"\xff" * 32)  # equality is on the bits, not the quality
    assert len({a, PdqHash.from_hex("f" * 64)}) == 1
    assert a.to_array().shape == (32,)
    assert "quality=90" in repr(a)
    with pytest.raises(ValueError):
        PdqHash(b"\x00" * 31)
    with pytest.raises(ValueError):
        PdqHash.from_hex("abc")


def test_similar_images_are_near_and_different_images_far(coffee, tiles):
    original = safeset.pdq(encode(coffee, "PNG"))
    small = coffee.resize((coffee.width // 2, coffee.height // 2))
    assert original - safeset.pdq(encode(small, "JPEG", quality=70)) <= 31
    others = [safeset.pdq(image) for _, image in tiles[:40]]
    assert min(original - h for h in others) > 31


def _result(data: bytes):
    return hash_item(Item(row_id="t:0", shard="t", index=0, key="k", payloads=[Payload("", data)]))


def test_digests_and_statuses_of_good_and_bad_bytes(coffee):
    good = encode(coffee, "JPEG", quality=90)
    r = _result(good)
    assert r.status is Status.OK
    assert r.md5 == hashlib.md5(good).hexdigest()
    assert r.sha1 == hashlib.sha1(good).hexdigest()
    assert r.sha256 == hashlib.sha256(good).hexdigest()
    assert len(r.pdq) == 64 and r.pdq_quality == 100

    truncated = _result(good[: len(good) // 2])
    assert truncated.status is Status.DECODE_FAILED and truncated.error == "truncated"
    assert truncated.md5 == hashlib.md5(good[: len(good) // 2]).hexdigest()  # exact lists still apply
    assert truncated.pdq is None

    empty = _result(b"")
    assert empty.status is Status.NO_IMAGE and empty.error == "empty file" and empty.md5 is None

    html = _result(b"<!doctype html><html><body>404 Not Found</body></html>")
    assert html.status is Status.UNSUPPORTED_MEDIA and html.error == "html"
    assert html.md5 is not None

    bomb = _result(bomb_png())
    assert bomb.status is Status.DECODE_FAILED and bomb.error == "too_many_pixels"

    # a video container is decoded as a video (tests/test_video.py); one that does not decode is broken
    video = _result(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    assert video.status is Status.VIDEO_INCOMPLETE and video.error.startswith("video: ") and video.md5
    # not images: named by what their bytes are, whatever a file name would say
    heic = _result(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    assert (heic.status, heic.error) == (Status.UNSUPPORTED_MEDIA, "heif")
    eps = _result(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    assert (eps.status, eps.error) == (Status.UNSUPPORTED_MEDIA, "postscript")
    # a broken header of a format that is decoded is a broken image, not another kind of file
    broken = _result(b"\x89PNG\r\n\x1a\n" + b"\xff" * 64)
    assert broken.status is Status.DECODE_FAILED and broken.error.startswith("corrupt")


def test_decodable_oddities_hash(coffee):
    cmyk = _result(encode(coffee.convert("CMYK"), "JPEG"))
    assert cmyk.status is Status.OK and cmyk.pdq_quality == 100
    assert PdqHash.from_hex(cmyk.pdq) - safeset.pdq(coffee) <= 31

    grey16 = (np.asarray(coffee.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    png16 = _result(encode(Image.fromarray(grey16), "PNG"))
    assert png16.status is Status.OK
    assert PdqHash.from_hex(png16.pdq) - safeset.pdq(coffee.convert("L")) <= 8  # scaled, not clipped

    frames = [coffee, coffee.rotate(180)]
    gif = _result(encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0))
    assert gif.status is Status.OK  # the first frame is hashed

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW on display
    rotated = _result(encode(coffee, "JPEG", exif=exif.tobytes()))
    assert rotated.status is Status.OK
    # The stored pixels are hashed, as python-threatexchange and HMA do, so lists made by them match.
    assert PdqHash.from_hex(rotated.pdq) - safeset.pdq(coffee) <= 8


def test_pixel_limit_is_configurable(coffee):
    data = encode(coffee, "PNG")
    with pytest.raises(DecodeError) as info:
        decode_rgb(data, DecodeLimits(max_pixels=1000))
    assert info.value.reason == "too_many_pixels"
    assert decode_rgb(data).shape == (coffee.height, coffee.width, 3)


def test_decode_error_never_quotes_the_bytes():
    secret = b"II*\x00" + b"SECRETBYTES" * 10  # a TIFF header whose decoder message quotes bytes
    with pytest.raises(DecodeError) as info:
        decode_rgb(secret)
    assert "SECRET" not in str(info.value) and "II*" not in str(info.value)


def test_url_normal_form():
    assert normalise_url("HTTPS://Example.COM:443/a/B?x=1#frag") == "https://example.com/a/B?x=1"
    assert normalise_url("http://example.com") == "http://example.com/"
    assert normalise_url("http://example.com:8080/x") == "http://example.com:8080/x"
    assert normalise_url("ftp://example.com/x") is None
    assert normalise_url("not a url") is None
    assert url_host("https://Img.Example.com./a.jpg") == "img.example.com"


TRANSFORMS = {
    "flip_h": lambda a: a[:, ::-1],
    "flip_v": lambda a: a[::-1],
    "rot180": lambda a: a[::-1, ::-1],
    "transpose": lambda a: a.transpose(1, 0, 2),
    "rot90": lambda a: np.rot90(a, 1),
    "rot270": lambda a: np.rot90(a, -1),
    "antitranspose": lambda a: a[::-1, ::-1].transpose(1, 0, 2),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_each_dihedral_variant_is_the_hash_of_that_transform(name, coffee):
    pixels = np.asarray(coffee)
    variants = pdq_variants(to_luma(coffee), trim=False)
    transformed = safeset.pdq(np.ascontiguousarray(TRANSFORMS[name](pixels)))
    assert transformed - variants[name] <= 16  # the reference's asymmetric filter window costs a few bits
    assert transformed - variants[""] > 64  # while the plain hash is far away


def test_trimmed_variant_undoes_padding_and_letterboxing(coffee):
    plain = safeset.pdq(coffee)
    padded = Image.new("RGB", (coffee.width + 120, coffee.height + 80), (0, 0, 0))
    padded.paste(coffee, (60, 40))
    variants = pdq_variants(to_luma(padded))
    assert plain - variants[""] > 31
    assert plain - variants["trim"] <= 8
    letterbox = Image.new("RGB", (coffee.width, coffee.height + 160), (250, 250, 250))
    letterbox.paste(coffee, (0, 80))
    assert plain - pdq_variants(to_luma(encode(letterbox, "JPEG", quality=85)))["trim"] <= 12
    # an image without uniform borders gets no trimmed variant, and duplicates are left out
    clean = pdq_variants(to_luma(coffee))
    assert "trim" not in clean and len(set(clean.values())) == len(clean)
    assert len([name for name in clean if not name.startswith("up")]) == 8  # and its upscale, "up": small


def test_hashes_near_the_quality_gate_are_exactly_the_reference(tiles):
    """Whether an image is matched at all (quality >= 50) must not depend on the fast decode."""
    near_gate = []
    for _, image in tiles:
        data = encode(image, "JPEG", quality=85)
        reference = reference_pdq(data)
        if 46 <= reference.quality <= 54:
            near_gate.append((data, reference))
    assert len(near_gate) >= 3
    for data, reference in near_gate:
        ours = safeset.pdq(data)
        assert (str(ours), ours.quality) == (str(reference), reference.quality)


def test_pdq_exact_scans_give_the_reference_bits_for_flat_images_too(tiles, tmp_path, home):
    """The fast path is within a few bits of the reference wherever a hash can match; the bits of
    a flat image (quality < 50) are noise, and only a full decode reproduces them. `--pdq-exact`
    hashes everything that way: the results hold the reference's hash for every image."""
    encoded = [encode(image, "JPEG", quality=85) for _, image in tiles]
    flat = [data for data in encoded if reference_pdq(data).quality < 44][:10]
    assert len(flat) == 10 and max(safeset.pdq(data) - reference_pdq(data) for data in flat) > 16
    samples = [Sample(f"https://img.example.org/{k}.jpg", f"photo {k}", d) for k, d in enumerate(encoded[:6] + flat)]
    make_shards(tmp_path / "shards", [samples])
    out = tmp_path / "out"
    assert run_cli("scan", tmp_path / "shards", "--out", out, "--pdq-exact", "-q", home=home).exit_code == 0
    rows = {r["url"]: r for r in pq.read_table(out / "results").to_pylist()}
    for sample in samples:
        reference = reference_pdq(sample.image)
        assert (rows[sample.url]["pdq"], rows[sample.url]["pdq_quality"]) == (str(reference), reference.quality)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke showpage\n%%EOF\n"
_WATCH = """
import sys
seen = []
def hook(event, args):
    if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "tempfile.mkstemp", "tempfile.mkdtemp"):
        seen.append(event)
    elif event == "open" and isinstance(args[0], str) and args[0].startswith(sys.argv[2]):
        seen.append("open " + args[0])
sys.addaudithook(hook)
import safeset
record = safeset.hash_file(sys.argv[1])
print(record["status"], record["error"], record["md5"] is not None, sorted(set(seen)))
"""


@pytest.mark.parametrize("name, data", [("listed.eps", EPS), ("listed.pdf", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n")])
def test_formats_pillow_would_hand_to_another_program_are_never_decoded(tmp_path, name, data):
    """Pillow renders EPS through Ghostscript, writing the bytes to a temporary file first. Only an
    allow-list of in-memory decoders runs: no program is started, no temporary file made, and
    the bytes are still hashed (the audit hook sees every such attempt, Ghostscript installed or not)."""
    path = tmp_path / name
    path.write_bytes(data)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.run(
        [sys.executable, "-c", _WATCH, str(path), str(scratch)], env=env, capture_output=True, text=True, check=True
    )
    kind = "postscript" if name.endswith(".eps") else "pdf"
    assert proc.stdout.strip().split(maxsplit=3) == ["unsupported_media", kind, "True", "[]"]
    assert list(scratch.iterdir()) == []


def test_a_bug_while_decoding_is_raised_not_recorded_as_a_bad_image(coffee, monkeypatch):
    """Only what decoders raise on bad bytes is an item's status; an error of safeset's own code
    (here one injected into the luminance step) fails the shard, so it is seen and fixed."""
    from safeset.hashing import image

    def broken(rgb):
        raise AttributeError("a bug of ours")

    monkeypatch.setattr(image, "luma_of_rgb", broken)
    with pytest.raises(AttributeError, match="a bug of ours"):
        _result(encode(coffee, "PNG"))


def test_long_thin_images_cost_linear_memory(tmp_path):
    """PDQ's filter along a side of n pixels used an n x n matrix: 2 GB for a 228-byte 16000 x 8
    PNG. Now it costs O(64 n); a side over the limit is refused before decoding."""
    thin = encode(Image.new("L", (16000, 8), 128), "PNG", optimize=True)
    assert len(thin) < 1000
    tracemalloc.start()
    try:
        result = _result(thin)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.status is Status.OK and (result.width, result.height) == (16000, 8)
    assert peak < 64 * 2**20
    too_long = _result(encode(Image.new("L", (40000, 8), 128), "PNG", optimize=True))
    assert (too_long.status, too_long.error) == (Status.DECODE_FAILED, "too_large")


def test_small_images_are_also_hashed_upscaled_as_the_original_was(tiles):
    """PDQ's filter barely blurs a small image before sampling it, and the aliasing moves its hash
    away from the original's: the "up" variant is its bicubic upscale (folded into the filter:
    the same bits as hashing Pillow's upscale), to the original's size when a tool recorded it."""
    import importlib

    pdq_module = importlib.import_module("safeset.hashing.pdq")
    nearer = 0
    for _, tile in tiles[:40]:
        original = tile.resize((576, 384), Image.Resampling.LANCZOS)
        small = original.resize((192, 128), Image.Resampling.LANCZOS)
        luma = to_luma(small)
        up = pdq_module.upscaled(luma, original=(576, 384))
        pillow = Image.fromarray(np.ascontiguousarray(luma.pixels)).resize((576, 384), Image.Resampling.BICUBIC)
        folded, resampled = pdq_module.pdq_luma(up), safeset.pdq(np.asarray(pillow.convert("RGB")))
        assert folded - pdq_module.pdq_luma(pdq_module.Luma(np.asarray(pillow, np.float32), 384, 576)) == 0
        listed = safeset.pdq(original)
        nearer += (folded - listed) <= (safeset.pdq(small) - listed)
        assert resampled is not None
    assert nearer >= 30  # nearer the original's hash, as a rule
    assert "up" in pdq_variants(to_luma(tiles[0][1])) and "up" not in pdq_variants(
        to_luma(tiles[0][1].resize((1200, 1200)))
    )


def test_content_boxes_apply_only_around_padding_and_borders_nest(coffee):
    import importlib

    pdq_module = importlib.import_module("safeset.hashing.pdq")
    small = coffee.resize((200, 133))
    square = Image.new("RGB", (200, 200), (255, 255, 255))
    square.paste(small, (0, 33))
    box = (0, 33, 200, 166)
    assert pdq_module.content_crop(to_luma(square), box).pixels.shape == (133, 200)
    cropped = coffee.resize((300, 200)).crop((50, 0, 250, 200))  # a center crop: content everywhere
    assert pdq_module.content_crop(to_luma(cropped), box) is None
    # a black letterbox inside white padding: both trimmed
    boxed = Image.new("RGB", (coffee.width, coffee.height + 120), (0, 0, 0))
    boxed.paste(coffee, (0, 60))
    padded = Image.new("RGB", (boxed.width + 200, boxed.height + 200), (255, 255, 255))
    padded.paste(boxed, (100, 100))
    layers = pdq_module.trim_borders(to_luma(padded))
    assert [layer.pixels.shape for layer in layers] == [(boxed.height, boxed.width), (coffee.height, coffee.width)]
    assert "trim2" in pdq_variants(to_luma(padded))


def _hashed(data: bytes, **payload) -> tuple[PayloadResult, dict[str, str]]:
    """A payload's result, and its variants (which the checker would match, then drop)."""
    hashed = hash_payload(Payload("", data, **payload), CheckSettings())
    return hashed, hashed.pdq_variants


def _nearest(listed: Image.Image | PdqHash, variants: dict[str, str]) -> tuple[str, int]:
    target = listed if isinstance(listed, PdqHash) else safeset.pdq(listed)
    return min(((name, PdqHash.from_hex(value) - target) for name, value in variants.items()), key=lambda nd: nd[1])


@pytest.mark.parametrize(
    "fmt, params",
    [
        ("GIF", {}),
        ("PNG", {}),  # APNG
        ("WEBP", {"lossless": True}),
        ("TIFF", {}),  # a second page
        ("MPO", {}),  # a second picture
    ],
)
def test_every_frame_of_an_image_is_hashed(tiles, fmt, params):
    """A benign first frame with the listed picture as the second: each frame is a variant."""
    first, listed = (Image.fromarray(np.asarray(tiles[i][1].convert("RGB"))) for i in (0, 1))  # no info to carry
    data = encode(first, fmt, save_all=True, append_images=[listed], **params)
    hashed, variants = _hashed(data)
    assert hashed.status is Status.OK and hashed.pdq == str(safeset.pdq(data))  # the first frame's, as before
    name, distance = _nearest(listed, variants)
    assert name.startswith("frame2") and distance <= 20


def test_icon_sizes_are_frames_and_their_bounds_are_said(tiles):
    """An icon holds a picture per size, and they need not be one picture: each is a frame. An
    animation past the bounds (here, 4x the pixel limit) is hashed as far as they go, and said."""
    main, other = tiles[0][1].resize((128, 128)), tiles[1][1].resize((64, 64))
    _, variants = _hashed(encode(main, "ICO", sizes=[(64, 64), (128, 128)], append_images=[other]))
    name, distance = _nearest(other, variants)
    assert name.startswith("frame") and distance <= 20
    frames = [Image.effect_noise((64, 64), 60).convert("RGB") for _ in range(5)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    from safeset.hashing import image as image_module

    views, incomplete = image_module.other_views(animated, DecodeLimits(max_pixels=64 * 64))
    assert incomplete == "too_many_frames" and len(views) == 3  # 4x the pixel limit: the first and 3 more
    hashed = hash_payload(Payload("", animated), CheckSettings(max_image_pixels=64 * 64))
    assert (hashed.status, hashed.error) == (Status.DECODE_FAILED, "too_many_frames") and hashed.pdq


def test_what_shows_through_transparency_is_hashed(tiles):
    """The picture carried in the alpha channel of black pixels: dropping alpha leaves a black
    image, but a page shows it (on white, inverted; the alpha channel itself is the picture)."""
    listed = tiles[2][1].convert("L")
    hidden = Image.new("RGBA", listed.size, (0, 0, 0, 255))
    hidden.putalpha(listed)
    hashed, variants = _hashed(encode(hidden, "PNG"))
    assert hashed.status is Status.OK
    name, distance = _nearest(listed.convert("RGB"), variants)
    assert name == "alpha" and distance == 0
    # the same in an animation's second frame
    cover = tiles[0][1].convert("RGBA").resize(listed.size)
    hashed, variants = _hashed(encode(cover, "PNG", save_all=True, append_images=[hidden]))
    assert _nearest(listed.convert("RGB"), variants) == ("frame2:alpha", 0)
    opaque, opaque_variants = _hashed(encode(tiles[2][1].convert("RGBA"), "PNG"))
    assert not [n for n in opaque_variants if n.startswith(("alpha", "on_"))]  # nothing shows through


def _interlaced_png(image: Image.Image) -> bytes:
    """An Adam7-interlaced RGB PNG, which Pillow does not write: each pass's pixels, filter 0."""
    pixels = np.asarray(image.convert("RGB"))
    raw = b""
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 1)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    assert Image.open(io.BytesIO(png)).info.get("interlace") == 1
    return png


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "PNG-interlaced"])
def test_an_image_cut_short_is_matched_by_what_arrived(coffee, fmt):
    """The last 1% of the file cut off: the rows it held are grey, and what arrived still
    matches (its own PDQ, of part of it, is never recorded as the image's)."""
    data = _interlaced_png(coffee) if fmt == "PNG-interlaced" else encode(coffee, fmt)
    hashed, variants = _hashed(data[: len(data) * 99 // 100])
    assert (hashed.status, hashed.error, hashed.pdq) == (Status.DECODE_FAILED, "truncated", None)
    name, distance = _nearest(safeset.pdq(data), variants)
    assert name.startswith("partial") and distance <= 31
    # the first bytes of one too large to hold, padded with zeros, are all of the image
    hashed, variants = _hashed(b"", error="too_large", head=data + bytes(1000))
    assert (hashed.status, hashed.error, hashed.pdq) == (Status.DECODE_FAILED, "too_large", None)
    assert variants["partial"] == str(safeset.pdq(data))


def test_frames_that_do_not_decode_are_said_and_16_bit_pages_are_hashed(tiles):
    """An animation cut after its first frame, or a TIFF page without a width, is `frames:
    corrupt` (the first frame still hashed), never an exception that fails the shard; a 16-bit
    page is hashed as a 16-bit first frame is."""
    first, second = (Image.fromarray(np.asarray(tiles[i][1].convert("RGB"))) for i in (0, 1))
    animated = encode(first, "GIF", save_all=True, append_images=[second, first])
    seen = set()
    for cut in range(len(animated) // 2, len(animated), 97):  # cut anywhere: a status, never an exception
        hashed, _ = _hashed(animated[:cut])
        seen.add((hashed.status, hashed.error, hashed.pdq is not None))
    assert (Status.DECODE_FAILED, "frames: corrupt", True) in seen
    grey = Image.fromarray((np.asarray(second.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)).resize(
        (512, 512)
    )
    pages = encode(first, "TIFF", save_all=True, append_images=[grey])
    hashed, variants = _hashed(pages)
    assert hashed.status is Status.OK
    assert _nearest(second.convert("L").resize((512, 512)).convert("RGB"), variants)[1] <= 8


def test_an_exif_thumbnail_is_hashed(tiles):
    """The thumbnail a camera writes into EXIF (IFD1) is a picture file managers show: a view."""
    listed, cover = tiles[4][1].convert("RGB").resize((160, 120)), tiles[5][1].convert("RGB")
    thumb = encode(listed, "JPEG", quality=90)
    ifd1 = 14
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HI", 0, ifd1)  # IFD0: no entries; IFD1 next
    start = ifd1 + 2 + 2 * 12 + 4
    tiff += (
        struct.pack("<H", 2) + struct.pack("<HHII", 0x201, 4, 1, start) + struct.pack("<HHII", 0x202, 4, 1, len(thumb))
    )
    tiff += struct.pack("<I", 0) + thumb
    app1 = b"Exif\0\0" + tiff
    plain = encode(cover, "JPEG")
    data = plain[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + plain[2:]
    hashed, variants = _hashed(data)
    assert hashed.status is Status.OK and hashed.pdq == str(safeset.pdq(plain))
    assert _nearest(safeset.pdq(thumb), variants) == ("thumbnail", 0)


def test_the_md5_of_every_value_of_a_column_is_hashlibs():
    """The C kernel behind URL digests (`hashing/_md5.c`), at MD5's padding boundaries (a value
    of 55 bytes fits one block with its length, 56 needs two), over Arrow slices and nulls, and
    after a skipped prefix (python-threatexchange's URL form, without its scheme)."""
    import pyarrow as pa

    from safeset.hashing import _md5
    from safeset.hashing.columns import md5_digests, url_digests

    rng = np.random.default_rng(5)
    lengths = [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, 3 << 20]
    values = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    column = pa.array(values, pa.binary())
    digests = md5_digests(column)
    assert [d.tobytes() for d in digests] == [hashlib.md5(v).digest() for v in values]
    skip = rng.integers(0, 70, len(values))
    assert [d.tobytes() for d in md5_digests(column.slice(2), skip[2:])] == [
        hashlib.md5(v[s:]).digest() for v, s in zip(values[2:], skip[2:], strict=True)
    ]
    texts = pa.array(["é", None, "", "https://example.com/a.jpg"]).slice(1)
    assert url_digests(texts)[0].to_pylist() == [
        None,
        hashlib.md5(b"").hexdigest(),
        hashlib.md5(b"https://example.com/a.jpg").hexdigest(),
    ]
    for starts, ends in (([-1], [0]), ([2], [1]), ([0], [5]), ([0, 0], [1])):  # outside the 4 bytes: refused
        with pytest.raises(ValueError):
            _md5.md5_many(b"abcd", np.array(starts, np.int64), np.array(ends, np.int64))


def test_upscale_weights_read_off_combs_are_pillows_own():
    """PDQ of a small image's upscale folds Pillow's bicubic weights into the filter; they are read
    off a few comb rows, which must give what upscaling the identity gives: for upscales, and for a
    side a tool shrank slightly (its aspect off by up to 3%) or more."""
    import importlib

    pdq_module = importlib.import_module("safeset.hashing.pdq")
    for full, small in ((1024, 300), (576, 192), (301, 300), (100, 103), (79, 317), (3, 2), (2, 15)):
        identity = Image.fromarray(np.eye(small, dtype=np.float32)).resize((full, small), Image.Resampling.BICUBIC)
        wanted = pdq_module._axis_matrix(full) @ np.asarray(identity, np.float64).T
        folded = pdq_module._upscaled_matrix(full, small)
        assert np.allclose(folded, wanted, rtol=1e-6, atol=1e-9 * np.abs(wanted).max()), (full, small)
