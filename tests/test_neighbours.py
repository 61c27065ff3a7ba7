"""Exact neighbour search (`safeset.neighbours`) against a brute force over every pair, and the
readers of published embeddings (LAION's, DataComp's, a parquet vector column) on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from safeset.errors import BadInputError
from safeset.neighbours import Search, Seeds, TopK, similarity
from safeset.sources.embeddings import blocks, embedding_files, join_keys, take_rows


def brute_force(rows: np.ndarray, seeds: Seeds, k: int, floor: float) -> TopK:
    """Every row scored against every seed, the seed's own row left out, sorted."""
    top = TopK.empty(len(seeds), k)
    everyone = np.arange(len(rows))
    for j in range(len(seeds)):
        scores = similarity(rows, seeds.vectors[j])
        keep = (scores >= floor) & (everyone != seeds.rows[j])
        top.add(np.full(int(keep.sum()), j), everyone[keep], scores[keep])
    return top


def searched(rows: np.ndarray, seeds: Seeds, k: int, floor: float, block: int) -> Search:
    search = Search(seeds, k, floor)
    for first in range(0, len(rows), block):
        search.add(rows[first : first + block], first)
    return search


def tricky_rows(dtype, d: int, n: int = 2500, seed: int = 0) -> tuple[np.ndarray, Seeds]:
    """Random rows with the hard cases in: copies of a seed (ties, at similarity 1), a row whose
    similarity to a seed is exactly 0.6 (3-4-5), rows with no direction (zero, infinite, NaN)."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, d)).astype(dtype)
    rows[100:110] = rows[5]  # ten copies of seed 0's row: tied with it, and with each other
    rows[200] = 0
    rows[201, 0] = np.inf
    rows[202, -1] = np.nan
    rows[300] = 0
    rows[300, 0] = 1  # seed 1 below: (1, 0, ...)
    rows[301] = 0
    rows[301, :2] = (3, 4)  # cosine with seed 1: exactly 3/5
    rows[302] = rows[301]
    picked = rng.choice(np.arange(400, n), 30, replace=False)
    rows_of_seeds = np.concatenate([[5, 300], picked])
    return rows, Seeds(rows[rows_of_seeds].astype(np.float64), rows_of_seeds)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("d", [768, 17, 2])
def test_the_search_finds_exactly_what_a_brute_force_finds(dtype, d):
    rows, seeds = tricky_rows(dtype, d)
    for k, floor, block in ((1, -1.0, 700), (10, -1.0, 333), (40, 0.0, 2500), (5, 0.6, 64), (3000, -1.0, 1000)):
        found = searched(rows, seeds, k, floor, block)
        expected = brute_force(rows, seeds, k, floor)
        np.testing.assert_array_equal(found.top.rows, expected.rows)
        np.testing.assert_array_equal(found.top.scores, expected.scores)
    # nobody is their own neighbour, and rows with no direction are nobody's
    assert not (found.top.rows == seeds.rows[:, None]).any()
    assert not np.isin(found.top.rows, [200, 201, 202]).any()
    if d >= 2:  # the copies of seed 0 lead its list, tied at 1, lowest row first; then the next
        assert found.top.rows[0, :10].tolist() == list(range(100, 110))
        assert len(set(found.top.scores[0, :10])) == 1 and abs(found.top.scores[0, 0] - 1) < 1e-12


def test_ties_at_the_threshold_are_in_and_the_order_is_the_row_number():
    rows, seeds = tricky_rows(np.float32, 8)
    at = searched(rows, seeds, 3000, 0.6, 100)
    # seed 1 is (1, 0, ...): rows 301 and 302 are at 0.6 exactly, and the floor keeps them
    listed = at.top.rows[1][at.top.rows[1] >= 0].tolist()
    assert 301 in listed and 302 in listed
    assert listed.index(301) + 1 == listed.index(302)
    assert at.top.scores[1][listed.index(301)] == 0.6
    above = searched(rows, seeds, 3000, np.nextafter(0.6, 1), 100)
    assert not np.isin(above.top.rows[1], [301, 302]).any()


def test_the_similarity_is_plain_float64_cosine():
    rng = np.random.default_rng(3)
    rows, seed = rng.normal(size=(50, 33)).astype(np.float16), rng.normal(size=33)
    plain = (rows.astype(np.float64) @ seed) / (np.linalg.norm(rows.astype(np.float64), axis=1) * np.linalg.norm(seed))
    np.testing.assert_allclose(similarity(rows, seed), plain, rtol=1e-13)
    # a row's value does not depend on which other rows are with it
    assert similarity(rows[7:8], seed)[0] == similarity(rows, seed)[7]


def test_little_is_scored_in_floating_point():
    """The integer pass prunes: of 200k x 20 pairs, a few thousand reach float64."""
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(200_000, 64)).astype(np.float16)
    seeds = Seeds(rng.normal(size=(20, 64)))
    search = searched(rows, seeds, 10, -1.0, 16384)
    assert search.pairs_scored < 0.01 * rows.shape[0] * len(seeds)
    probe = np.arange(0, 200_000, 97)  # and the answer is still the brute force's, on a sample
    sample = brute_force(rows[probe], seeds, 3, -1.0)
    assert (search.top.scores[:, 0] >= sample.scores[:, 0]).all()


@pytest.mark.parametrize("path", ["avx2", "none"])
def test_every_path_of_the_kernel_finds_the_same(tmp_path, path):
    """SAFESET_SIMD=avx2 / =none run the kernel's AVX2 and portable C paths (what a CPU without
    AVX-512 VNNI, or without AVX2, gets): the same neighbours, to the bit."""
    rows, seeds = tricky_rows(np.float16, 96, n=3000, seed=9)
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "seeds.npy", seeds.vectors)
    np.save(tmp_path / "seed_rows.npy", seeds.rows)
    script = (
        "import numpy as np, sys, json\n"
        "from safeset.neighbours import Search, Seeds, simd\n"
        "d = sys.argv[1]\n"
        "rows = np.load(d + '/rows.npy')\n"
        "s = Search(Seeds(np.load(d + '/seeds.npy'), np.load(d + '/seed_rows.npy')), 25, -1.0)\n"
        "for a in range(0, len(rows), 500): s.add(rows[a:a + 500], a)\n"
        "np.save(d + '/plain.npy', s.top.rows); np.save(d + '/plain_scores.npy', s.top.scores)\n"
        "print(json.dumps(simd()))\n"
    )
    env = {**os.environ, "SAFESET_SIMD": path}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == path
    here = searched(rows, seeds, 25, -1.0, 500)
    np.testing.assert_array_equal(np.load(tmp_path / "plain.npy"), here.top.rows)
    np.testing.assert_array_equal(np.load(tmp_path / "plain_scores.npy"), here.top.scores)


def test_bad_seeds_and_blocks_are_refused():
    with pytest.raises(ValueError, match="no direction"):
        Seeds(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-empty"):
        Seeds(np.zeros((0, 4)))
    search = Search(Seeds(np.ones((1, 4))), 3)
    with pytest.raises(ValueError, match="dimension 4"):
        search.add(np.ones((5, 3), np.float32), 0)


# -- published layouts --------------------------------------------------------------------------


def laion_layout(root, vectors: list[np.ndarray], urls: list[list[str]], keys=True):
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    for i, (block, names) in enumerate(zip(vectors, urls, strict=True)):
        np.save(root / "img_emb" / f"img_emb_{i:04d}.npy", block)
        columns = {"URL": names, "TEXT": ["a caption"] * len(names)}
        if keys:
            columns["key"] = [f"{i:04d}{j:05d}" for j in range(len(names))]
        pq.write_table(pa.table(columns), root / "metadata" / f"metadata_{i:04d}.parquet")
    return root


def test_laion_layout_is_read_in_blocks_numbered_across_files(tmp_path):
    rng = np.random.default_rng(5)
    parts = [rng.normal(size=(n, 12)).astype(np.float16) for n in (40, 25)]
    urls = [[f"https://example.org/{i}-{j}.jpg" for j in range(len(p))] for i, p in enumerate(parts)]
    files = embedding_files(str(laion_layout(tmp_path / "emb", parts, urls)))
    assert [(f.first, f.rows, f.dim, f.url_col, f.key_col) for f in files] == [
        (0, 40, 12, "URL", "key"),
        (40, 25, 12, "URL", "key"),
    ]
    got = np.concatenate([block.copy() for f in files for _, block in blocks(f, rows=7)])
    np.testing.assert_array_equal(got, np.concatenate(parts))
    assert [first for _, first in [(b, f) for f in files for f, b in blocks(f, rows=16)]] == [0, 16, 32, 40, 56]
    import hashlib

    assert join_keys(files[1], "url")[3].as_py() == hashlib.md5(urls[1][3].encode()).hexdigest()
    np.testing.assert_array_equal(take_rows(files[1], np.array([44, 41])), parts[1][[4, 1]].astype(np.float64))


def test_datacomp_npz_and_a_parquet_vector_column_are_read(tmp_path):
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(30, 8)).astype(np.float16)
    folder = tmp_path / "datacomp"
    folder.mkdir()
    np.savez(folder / "0000.npz", l14_img=vectors, b32_img=vectors[:, :4])
    pq.write_table(
        pa.table({"uid": [f"u{i}" for i in range(30)], "url": ["https://x.org/"] * 30}), folder / "0000.parquet"
    )
    [file] = embedding_files(str(folder))
    assert (file.kind, file.member, file.rows, file.dim) == ("npz", "l14_img", 30, 8)
    np.testing.assert_array_equal(np.concatenate([b.copy() for _, b in blocks(file, 11)]), vectors)
    [small] = embedding_files(str(folder), column="b32_img")
    assert small.dim == 4

    table = tmp_path / "hf.parquet"
    pq.write_table(
        pa.table({"url": [f"https://y.org/{i}" for i in range(30)], "embedding": list(vectors.astype(np.float32))}),
        table,
    )
    [listed] = embedding_files(str(table))
    assert (listed.kind, listed.member, listed.dim) == ("list", "embedding", 8)
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks(listed, 8)]), vectors.astype(np.float32))


def test_broken_embeddings_are_named(tmp_path):
    rng = np.random.default_rng(7)
    good = [rng.normal(size=(10, 4)).astype(np.float32)]
    root = laion_layout(tmp_path / "a", good, [[f"u{i}" for i in range(10)]])
    pq.write_table(pa.table({"URL": ["u"] * 9}), root / "metadata" / "metadata_0000.parquet")
    with pytest.raises(BadInputError, match="metadata_0000.parquet 9 rows") as caught:
        embedding_files(str(root))
    assert "img_emb_0000.npy" in str(caught.value)

    root = laion_layout(tmp_path / "b", good, [[f"u{i}" for i in range(10)]])
    np.save(root / "img_emb" / "img_emb_0000.npy", np.zeros((10, 4), np.int64))
    with pytest.raises(BadInputError, match="int64 array .* float16 or float32"):
        embedding_files(str(root))

    root = laion_layout(tmp_path / "c", good, [[f"u{i}" for i in range(10)]])
    npy = root / "img_emb" / "img_emb_0000.npy"
    npy.write_bytes(npy.read_bytes()[:-50])  # cut short: found when the rows are read
    [file] = embedding_files(str(root))
    with pytest.raises(BadInputError, match="truncated") as caught:
        list(blocks(file, 4))
    assert "img_emb_0000.npy" in str(caught.value)

    root = laion_layout(tmp_path / "d", good, [[f"u{i}" for i in range(10)]])
    (root / "metadata" / "metadata_0001.parquet").write_bytes(
        (root / "metadata" / "metadata_0000.parquet").read_bytes()
    )
    with pytest.raises(BadInputError, match="no partner"):
        embedding_files(str(root))

    folder = tmp_path / "e"
    folder.mkdir()
    with zipfile.ZipFile(folder / "0.npz", "w") as archive:
        archive.writestr("other.npy", b"junk")
    pq.write_table(pa.table({"uid": ["a"]}), folder / "0.parquet")
    with pytest.raises(BadInputError, match="no array 'l14_img'"):
        embedding_files(str(folder))
    with pytest.raises(BadInputError, match="no such file"):
        embedding_files(str(tmp_path / "nowhere"))


def test_rows_of_tiny_or_huge_float32_values_are_searched_exactly():
    """A row whose largest value is tiny (1e-37, or subnormal) or near float32's largest is
    quantised without overflow: such a row, the seed's own direction, must not be lost, nor may
    its bound push out the seed's true neighbours (review of issue 13)."""
    rng = np.random.default_rng(11)
    rows = rng.normal(size=(400, 24)).astype(np.float32)
    rows[50] = rows[0] * np.float32(1e-37)
    rows[51] = rows[0] * np.float32(1e-41)  # subnormal
    rows[52] = rows[0] / np.abs(rows[0]).max() * np.float32(3e38)
    rows[60] = rows[1] * np.float32(1e-36)
    seeds = Seeds(rows[[0, 1, 2]].astype(np.float64), np.array([0, 1, 2]))
    for k in (1, 3, 40):
        found, expected = searched(rows, seeds, k, -1.0, 128), brute_force(rows, seeds, k, -1.0)
        np.testing.assert_array_equal(found.top.rows, expected.rows)
        np.testing.assert_array_equal(found.top.scores, expected.scores)
    assert set(found.top.rows[0, :3]) == {50, 51, 52}


def test_sets_of_a_layout_pair_their_own_files_and_a_lonely_file_is_refused(tmp_path):
    rng = np.random.default_rng(12)
    for name, n in (("laion2B-en", 5), ("laion2B-multi", 6)):
        laion_layout(
            tmp_path / "two" / name, [rng.normal(size=(n, 4)).astype(np.float16)], [[f"{name}/{i}" for i in range(n)]]
        )
    files = embedding_files(str(tmp_path / "two"))
    assert [(f.rows, f.first) for f in files] == [(5, 0), (6, 5)]
    assert join_keys(files[1], "key").to_pylist()[0] == "000000000"
    stray = tmp_path / "two" / "laion2B-xx" / "img_emb"
    stray.mkdir(parents=True)
    np.save(stray / "img_emb_0.npy", np.ones((3, 4), np.float16))
    with pytest.raises(BadInputError, match="no partner") as caught:
        embedding_files(str(tmp_path / "two"))
    assert "laion2B-xx" in str(caught.value)
    np.save(tmp_path / "two" / "laion2B-en" / "img_emb" / "img_emb_00.npy", np.ones((5, 4), np.float16))
    stray.joinpath("img_emb_0.npy").unlink()
    with pytest.raises(BadInputError, match="have one number"):
        embedding_files(str(tmp_path / "two"))


def test_vector_columns_with_holes_or_other_types_are_refused_by_row(tmp_path):
    table = tmp_path / "holes.parquet"
    pq.write_table(pa.table({"url": ["a", "b"], "embedding": [[1.0, 2.0], [1.0, None]]}), table)
    [file] = embedding_files(str(table))
    with pytest.raises(BadInputError, match="row 1"):
        list(blocks(file))
    pq.write_table(pa.table({"url": ["a"], "embedding": [["1", "2"]]}), table)
    with pytest.raises(BadInputError, match="not a list of floats"):
        embedding_files(str(table))
    pq.write_table(pa.table({"url": ["a", "b"], "embedding": [[1.0, 2.0], [1e39, 1.0]]}), table)
    [file] = embedding_files(str(table))
    with pytest.raises(BadInputError, match="row 1: .* beyond float32"):
        list(blocks(file))
    np.save(tmp_path / "empty.npy", np.zeros((3, 0), np.float16))
    layout = laion_layout(tmp_path / "zero", [np.zeros((3, 0), np.float16)], [["a", "b", "c"]])
    with pytest.raises(BadInputError, match=r"shape \(3, 0\)"):
        embedding_files(str(layout))
