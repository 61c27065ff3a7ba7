"""Models the user supplies (`--embed-model`, `--score-model`): a tiny ONNX image encoder and
score models built here (nothing downloaded), run by ONNX Runtime inside real scans."""

from __future__ import annotations

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
from helpers import make_shards, read_json, run_cli, samples_from, write_lines
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import safeset
from safeset.demo import Sample, jpeg
from safeset.errors import BadInputError
from safeset.signals.models import Encoder, Scorer

DIM = 16


def encoder_file(path, side: int = 32) -> str:
    """(N, 3, side, side) -> 8x8 average pools -> flattened -> a fixed random projection to DIM."""
    cells = 3 * (side // 8) ** 2
    weights = np.random.default_rng(0).normal(size=(cells, DIM)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        "tiny-encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", DIM])],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return str(path)


def onnx_scorer_file(path) -> str:
    """(N, DIM) -> sigmoid(x @ w): one score per embedding."""
    weights = np.random.default_rng(1).normal(size=(DIM, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["score"])],
        "tiny-scorer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return str(path)


def dense_scorer_file(path) -> tuple[str, dict]:
    rng = np.random.default_rng(2)
    layers = {"w0": rng.normal(size=(DIM, 8)), "b0": rng.normal(size=8), "w1": rng.normal(size=(8, 1)), "b1": [0.1]}
    np.savez(path, **{k: np.asarray(v, np.float32) for k, v in layers.items()})
    return str(path), layers


def test_the_encoder_and_score_models_compute_what_they_say(tmp_path, tiles):
    encoder = Encoder(encoder_file(tmp_path / "enc.onnx"))
    assert encoder.size == (32, 32)
    images = [np.asarray(image.convert("RGB").resize((32, 32)), np.uint8) for _, image in tiles[:5]]
    vectors = encoder.embed(images)
    assert vectors.shape == (5, DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)

    path, layers = dense_scorer_file(tmp_path / "dense.npz")
    hidden = np.maximum(vectors @ layers["w0"] + layers["b0"], 0)
    expected = 1 / (1 + np.exp(-(hidden @ layers["w1"] + layers["b1"])[:, 0]))
    np.testing.assert_allclose(Scorer("punsafe", path).scores(vectors), expected, rtol=1e-5)
    scores = Scorer("p", onnx_scorer_file(tmp_path / "s.onnx")).scores(vectors)
    assert scores.shape == (5,) and ((scores > 0) & (scores < 1)).all()

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(BadInputError, match="junk.onnx"):
        Encoder(str(tmp_path / "junk.onnx"))
    with pytest.raises(BadInputError, match="takes input of shape"):
        Encoder(onnx_scorer_file(tmp_path / "scorer-as-encoder.onnx"))
    np.savez(tmp_path / "bad.npz", w0=np.zeros((DIM, 2)), b0=np.zeros(3))
    with pytest.raises(BadInputError, match="bad.npz"):
        Scorer("x", str(tmp_path / "bad.npz"))


def test_a_scan_writes_embeddings_and_scores_and_expand_reads_them(tmp_path, home, tiles):
    """A re-encoded copy of a listed image is one a hash list misses (its bytes differ) and a
    near neighbour finds; its thumbnail is also a PDQ copy. Embeddings from the scan, in LAION's
    layout, feed `safeset expand` directly."""
    listed = tiles[0][1]
    original = Sample("https://listed.example.org/a.jpg", "a", jpeg(listed), size=listed.size)
    tinted = Image.blend(listed.convert("RGB"), Image.new("RGB", listed.size, (255, 255, 255)), 0.03)
    variant = Sample("https://other.example.org/b.jpg", "b", jpeg(tinted, 70), size=listed.size)
    failed = Sample("https://gone.example.org/c.jpg", "c", None)
    data = make_shards(
        tmp_path / "shards", [[original, failed, *samples_from(tiles[1:8])], [variant, *samples_from(tiles[8:14])]]
    )
    safeset.BankStore(home).add("hotline", write_lines(tmp_path / "urls.txt", [original.url]), type_name="url")
    encoder = encoder_file(tmp_path / "enc.onnx")
    scorer, _ = dense_scorer_file(tmp_path / "dense.npz")
    policy = tmp_path / "p.toml"
    policy.write_text(
        'name = "p"\n[copies]\naction = "keep"\n[[rules]]\nname = "scored"\naction = "review"\nall = ["punsafe > 2"]\n'
    )
    out = tmp_path / "out"
    result = run_cli(
        "scan", str(data), "--out", str(out), "--embed-model", encoder, "--score-model", f"punsafe={scorer}",
        "--policy", str(policy), "--workers", "2", "-q", home=home,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr

    rows = pq.read_table(out / "results").to_pylist()
    scored = [r for r in rows if r["status"] == "ok"]
    assert scored and all(0 < dict(r["signals"])["punsafe"] < 1 for r in scored)
    assert all("punsafe" not in dict(r["signals"] or []) for r in rows if r["status"] != "ok")
    emb = out / "embeddings"
    for part in (0, 1):
        vectors = np.load(emb / "img_emb" / f"img_emb_{part:05d}.npy")
        meta = pq.read_table(emb / "metadata" / f"metadata_{part:05d}.parquet").to_pylist()
        assert vectors.dtype == np.float16 and vectors.shape == (len(meta), DIM)
        for vector, row in zip(vectors, meta, strict=True):
            assert (np.abs(vector).sum() > 0) == (row["url"] != failed.url)

    report = safeset.expand(out, emb, k=3, min_similarity=0.98, home=str(home), workers=1)
    assert report["expansion"][0]["join"] == "row_id"
    found = pq.read_table(out / "expansion" / "round-001" / "candidates.parquet").to_pylist()
    assert "https://other.example.org/b.jpg" in {c["url"] for c in found}
    assert read_json(out / "report.json")["totals"]["review"] >= 1


def test_model_options_are_checked_before_anything_runs(tmp_path, home, tiles):
    data = make_shards(tmp_path / "shards", [samples_from(tiles[:2])])
    scorer, _ = dense_scorer_file(tmp_path / "dense.npz")
    result = run_cli("scan", str(data), "--out", str(tmp_path / "o1"), "--score-model", f"x={scorer}", "-q", home=home)
    assert result.exit_code == 2 and "--embed-model" in result.stderr
    result = run_cli("scan", str(data), "--out", str(tmp_path / "o2"), "--score-model", "nonsense", "-q", home=home)
    assert result.exit_code == 2 and "NAME=FILE" in result.stderr
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    result = run_cli(
        "scan", str(data), "--out", str(tmp_path / "o3"), "--embed-model", str(tmp_path / "junk.onnx"), "-q", home=home
    )
    assert result.exit_code == 3 and "junk.onnx" in result.stderr
    assert not (tmp_path / "o3" / "results").exists()
