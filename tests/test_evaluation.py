"""The robustness benchmark (`safeset bench hashers`) on a small folder of benign photo tiles."""

from __future__ import annotations

import io
import json

import pytest
from helpers import run_cli
from PIL import Image

import safeset
from safeset.evaluation import TRANSFORMS, apply, evaluate


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiles):
    root = tmp_path_factory.mktemp("photos")
    chosen = [t for t in tiles if safeset.pdq(t[1]).quality >= 80][::6][:14]
    for name, image in chosen:
        image.save(root / f"{name}.jpg", quality=92)
    return root


def test_every_transform_makes_a_decodable_jpeg_deterministically(coffee):
    for name in TRANSFORMS:
        data = apply(name, coffee, seed=3)
        assert data == apply(name, coffee, seed=3)
        assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert Image.open(io.BytesIO(apply("rotate_90", coffee, 0))).size == (coffee.height, coffee.width)


def test_variants_recover_flips_and_padding(folder):
    images = [(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]
    result = evaluate(images, max_fpr=0.001, workers=2)
    schemes = result["schemes"]
    assert set(schemes) == {"reference", "pdq", "gated", "dihedral", "trim"}
    assert result["listed"] == len(images)
    for s in schemes.values():
        assert 0 <= s["threshold"] <= 128 and s["fpr_at_threshold"] <= 0.001
        assert s["recall"]["jpeg_q50"] == 1.0  # recompression never defeats PDQ
    assert schemes["pdq"]["recall_at_31"]["flip"] == 0.0
    for edit in ("flip", "rotate_90"):  # small 192 px tiles: most, not all, within 31
        assert schemes["dihedral"]["recall_at_31"][edit] >= 0.8 and schemes["dihedral"]["recall"][edit] == 1.0
    assert schemes["dihedral"]["recall_at_31"]["pad_10"] < schemes["trim"]["recall_at_31"]["pad_10"] == 1.0
    assert schemes["trim"]["mean_recall"] > schemes["pdq"]["mean_recall"]
    # safeset's PDQ on reduced decodes matches as well as the reference at the scan's threshold
    assert abs(schemes["pdq"]["mean_recall_at_31"] - schemes["reference"]["mean_recall_at_31"]) <= 0.02


def test_bench_hashers_command(folder):
    result = run_cli("bench", "hashers", folder, "--workers", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["listed"] == 14 and data["transforms"] == list(TRANSFORMS)
    table = run_cli("bench", "hashers", folder, "--workers", "2")
    assert "mean recall" in table.stdout and "--pdq-variant-threshold" in table.stdout
