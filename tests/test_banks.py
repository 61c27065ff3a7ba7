"""Hash-list import (three formats, bad lines by number), the bank store, and `safeset bank`."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, write_lines

from safeset.banks import BankStore, ExactHashIndex, PdqIndex, TextIndex, _mih, parse_list, signal_type
from safeset.banks.index import build_tables, slots_for
from safeset.errors import BadInputError, UsageError

MD5_A = hashlib.md5(b"a").hexdigest()
MD5_B = hashlib.md5(b"b").hexdigest()
MD5_C = hashlib.md5(b"c").hexdigest()
SHA1_A = hashlib.sha1(b"a").hexdigest()
PDQ_A = "2d6b1af3a956c529e79ca3d2526fa834d4196c81cedd04de0a26b855fc99b724"


def test_one_hash_per_line_reports_every_bad_line(tmp_path):
    path = write_lines(
        tmp_path / "list.txt",
        ["# a comment", MD5_A.upper(), "", MD5_A[:-1], "zz" + MD5_A[2:], MD5_B, MD5_B, "a b c"],
    )
    parsed = parse_list(path, "md5")
    assert parsed.values("md5") == {MD5_A, MD5_B}
    assert parsed.accepted == 3  # MD5_B is listed twice
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (4, "wrong length for md5: 31 chars, expected 32"),
        (5, "not hex (md5)"),
        (8, "wrong length for md5: 1 chars, expected 32"),  # read as `<hash>  <file name>`
    ]


def test_bad_line_messages_never_quote_the_value(tmp_path):
    secret = "deadbeef" * 3 + "SECRETXY"
    parsed = parse_list(write_lines(tmp_path / "l.txt", [secret]), "md5")
    assert parsed.errors and all(secret not in str(e) and "SECRET" not in str(e) for e in parsed.errors)


def test_typed_lines_in_threatexchange_format(tmp_path):
    path = write_lines(
        tmp_path / "pytx.txt",
        [
            f"pdq {PDQ_A}",
            f"photo_md5 {MD5_A}",
            f"sha1 {SHA1_A}",
            "pdq " + "0" * 64,
            f"video_md5 {MD5_B}",
            "url https://Example.com/x.jpg",
        ],
    )
    parsed = parse_list(path)
    assert parsed.values("pdq") == {PDQ_A}
    assert parsed.values("sha1") == {SHA1_A}
    assert parsed.values("url") == {"https://example.com/x.jpg"}
    assert [(e.line, e.reason) for e in parsed.errors] == [(4, "all-zero PDQ hash (the hash of a blank image)")]
    assert parsed.values("md5") == {MD5_A, MD5_B}  # pytx's video_md5: the MD5 of a file's bytes


def test_untyped_lines_need_a_type(tmp_path):
    parsed = parse_list(write_lines(tmp_path / "l.txt", [MD5_A]))
    assert parsed.errors[0].line == 1 and "--type" in parsed.errors[0].reason


def test_csv_with_type_column_and_with_typed_columns(tmp_path):
    typed = write_lines(
        tmp_path / "a.csv", ["hash,type,source", f"{MD5_A},md5,iwf", f"{PDQ_A},pdq,c3p", "xyz,md5,x", f"{MD5_B},nope,x"]
    )
    parsed = parse_list(typed)
    assert parsed.values("md5") == {MD5_A} and parsed.values("pdq") == {PDQ_A}
    assert [e.line for e in parsed.errors] == [4, 5]

    columns = write_lines(
        tmp_path / "b.csv", ["URL,md5", f"https://a.example/1.jpg,{MD5_A}", "https://a.example/2.jpg,"]
    )
    parsed = parse_list(columns)
    assert parsed.values("md5") == {MD5_A}
    assert parsed.values("url") == {"https://a.example/1.jpg", "https://a.example/2.jpg"}

    with pytest.raises(BadInputError, match=r"c\.csv, line 1: CSV header names no hash column"):
        parse_list(write_lines(tmp_path / "c.csv", ["foo,bar", "1,2"]))
    with pytest.raises(BadInputError, match="no type column: pass --type"):
        parse_list(write_lines(tmp_path / "d.csv", ["hash,note", f"{MD5_A},x"]))
    ragged = parse_list(write_lines(tmp_path / "e.csv", ["hash,note", f"{MD5_A},x,extra"]), "md5")
    assert ragged.errors[0].line == 2


def test_a_stray_quote_in_a_csv_list_costs_its_line_not_the_rest(tmp_path):
    """A lenient CSV reader takes a stray quote for the start of a field that runs to the end of
    the file, and every entry after it is silently lost: here it is one bad line."""
    lines = ["hash,type,note", f"{MD5_A},md5,ok", f'{PDQ_A},pdq,"an open quote', f"{MD5_B},md5,after it"]
    parsed = parse_list(write_lines(tmp_path / "q.csv", lines))
    assert parsed.values("md5") == {MD5_A, MD5_B}
    assert [e.line for e in parsed.errors] == [3] and "unterminated quote" in parsed.errors[0].reason
    # two stray quotes do not make the lines between them one entry: no entry spans lines
    lines = ["hash,type", f'"{MD5_A},md5', f"{MD5_B},md5", f"{SHA1_A},sha1", f'{MD5_C}",md5']
    parsed = parse_list(write_lines(tmp_path / "q2.csv", lines))
    assert parsed.values("md5") == {MD5_B} and parsed.values("sha1") == {SHA1_A}
    assert [e.line for e in parsed.errors] == [2, 5]


def test_a_url_with_a_comma_is_not_a_csv_header(tmp_path):
    parsed = parse_list(write_lines(tmp_path / "urls.txt", ["https://e.example/a,b.jpg"]), "url")
    assert parsed.values("url") == {"https://e.example/a,b.jpg"} and not parsed.errors


def test_lines_that_are_not_utf8_are_bad_lines_and_a_file_of_nothing_else_is_refused(tmp_path, store):
    path = tmp_path / "bin.txt"
    path.write_bytes(f"{MD5_A}\n".encode() + b"\xff\xfe\n" + f"{MD5_B}\n".encode())
    parsed = parse_list(path, "md5")
    assert parsed.values("md5") == {MD5_A, MD5_B}
    assert [(e.line, e.reason) for e in parsed.errors] == [(2, "not UTF-8 text")]

    binary = tmp_path / "photo.jpg"
    binary.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    with pytest.raises(BadInputError, match=r"photo\.jpg, line 1: .*no line holds a valid value"):
        store.add("x", binary, type_name="md5")
    assert store.names() == []  # no empty bank left behind


def test_checksum_tool_output_and_line_endings(tmp_path):
    """md5sum output (`<hash>  <file>`, `\\<hash>  <escaped file>`, BSD `MD5 (file) = <hash>`), and
    files with CR or CRLF line ends, are read; a hash is never quoted back in a message."""
    sums = tmp_path / "sums.txt"
    sums.write_text(f"{MD5_A}  photo one.jpg\n\\{MD5_B}  new\\nline.jpg\nMD5 (x.jpg) = {MD5_B.upper()}\n")
    parsed = parse_list(sums, "md5")
    assert parsed.values("md5") == {MD5_A, MD5_B} and parsed.errors == []
    untyped = parse_list(sums)  # without --type the hash sits where a type name belongs
    assert [e.line for e in untyped.errors] == [1, 2] and untyped.values("md5") == {MD5_B}
    assert all(MD5_A not in str(e) and MD5_B not in str(e) for e in untyped.errors)
    assert all("--type" in str(e) for e in untyped.errors)

    for ending in ("\r", "\r\n"):
        mixed = tmp_path / f"end{len(ending)}.txt"
        mixed.write_bytes(ending.join([f"pdq {PDQ_A}", f"md5 {MD5_A}", "md5 nothex"]).encode())
        parsed = parse_list(mixed)
        assert parsed.values("pdq") == {PDQ_A} and parsed.values("md5") == {MD5_A}
        assert [(e.line, e.reason) for e in parsed.errors] == [(3, "wrong length for md5: 6 chars, expected 32")]


def test_a_very_long_line_is_rejected_as_it_streams_past(tmp_path):
    path = tmp_path / "long.txt"
    with open(path, "wb") as fh:
        fh.write(f"md5 {MD5_A}\n".encode())
        for _ in range(64):
            fh.write(b"a" * (1 << 20))  # one 64 MiB line
        fh.write(f"\r\nmd5 {MD5_B}\n".encode())
    tracemalloc.start()
    try:
        parsed = parse_list(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parsed.values("md5") == {MD5_A, MD5_B}
    assert [(e.line, e.reason) for e in parsed.errors] == [(2, "line too long (over 64 KiB)")]
    assert peak < 16 * 2**20  # the line was never gathered


def test_readding_the_same_file_changes_nothing(tmp_path, store):
    path = write_lines(tmp_path / "a.txt", [MD5_A, MD5_B])
    first = store.add("iwf", path, type_name="md5")
    again = store.add("iwf", path, type_name="md5")
    assert (again.added, again.bank.version, again.bank.sha256) == (0, 1, first.bank.sha256)
    assert store.get("iwf") == first.bank and len(store.get("iwf").sources) == 1
    subset = store.add("iwf", write_lines(tmp_path / "b.txt", [MD5_A]), type_name="md5")
    assert subset.added == 0 and subset.bank.version == 1  # a new file, recorded; no new content
    assert len(subset.bank.sources) == 2
    assert store.add("iwf", write_lines(tmp_path / "c.txt", [SHA1_A]), type_name="sha1").bank.version == 2


def test_readers_never_see_half_an_update(tmp_path, store):
    """A bank is switched to a new version in one rename: a reader loading it while lists are added
    sees one version whole, its arrays matching its checksums, every time. A scan planned on the
    version before an update still finds that version by its checksum."""
    from safeset.banks.store import _content_sha256

    rng = np.random.default_rng(1)
    batches = [[row.tobytes().hex() for row in rng.integers(0, 256, (5000, 16), dtype=np.uint8)] for _ in range(12)]
    first = store.add("live", write_lines(tmp_path / "0.txt", batches[0]), type_name="md5").bank
    stop = threading.Event()
    seen: list[tuple[int, bool]] = []

    def read() -> None:
        reader = BankStore(store.home)
        while not stop.is_set():
            info = reader.get("live")
            rows = reader.load_rows(info, signal_type("md5"))
            seen.append(
                (
                    info.version,
                    _content_sha256("md5", rows) == info.checksums["md5"] and len(rows) == info.counts["md5"],
                )
            )

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i, batch in enumerate(batches[1:], start=1):
            previous = store.get("live")
            store.add("live", write_lines(tmp_path / f"{i}.txt", batch), type_name="md5")
            assert store.version("live", previous.sha256) == previous  # kept for scans planned on it
    finally:
        stop.set()
        thread.join()
    assert len({v for v, _ in seen}) > 3 and all(whole for _, whole in seen)
    assert store.version("live", first.sha256) is None  # two updates later it is gone
    assert len([p for p in (store.root / "live").iterdir() if p.is_dir()]) == 2  # current and previous


def test_home_made_by_the_user_keeps_its_permissions(tmp_path):
    home = tmp_path / "shared-home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    BankStore(home).add("x", write_lines(tmp_path / "a.txt", [MD5_A]), type_name="md5")
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # the user's directory, untouched
    assert stat.S_IMODE((home / "banks").stat().st_mode) == 0o700  # safeset's own, private


def test_store_lifecycle_versions_and_private_files(tmp_path, store):
    first = store.add("iwf", write_lines(tmp_path / "a.txt", [MD5_A]), type_name="md5", label="test list")
    assert first.bank.version == 1 and first.added == 1 and first.bank.counts == {"md5": 1}
    second = store.add("iwf", write_lines(tmp_path / "b.txt", [MD5_A, MD5_B, f"pdq {PDQ_A}"]), type_name=None)
    # the untyped MD5 lines have no type: they are bad lines, the typed PDQ line is taken
    assert second.bank.version == 2 and second.bank.counts == {"md5": 1, "pdq": 1}
    assert [e.line for e in second.errors] == [1, 2]
    info = store.get("iwf")
    assert info.label == "test list" and [s["file"] for s in info.sources] == ["a.txt", "b.txt"]
    assert info.sources[0]["sha256"] == hashlib.sha256((tmp_path / "a.txt").read_bytes()).hexdigest()

    bank_dir = store.root / "iwf"
    for path in [bank_dir, *bank_dir.iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    assert store.load_rows("iwf", signal_type("md5")).tolist() == [list(bytes.fromhex(MD5_A))]

    store.set_enabled("iwf", False)
    assert store.resolve(None) == []
    with pytest.raises(UsageError, match="disabled"):
        store.resolve(["iwf"])
    store.set_enabled("iwf", True)
    assert [b.name for b in store.resolve(None)] == ["iwf"]
    store.remove("iwf")
    assert store.names() == []
    with pytest.raises(UsageError, match="no bank named 'iwf'"):
        store.get("iwf")


def test_strict_refuses_the_file_and_changes_nothing(tmp_path, store):
    path = write_lines(tmp_path / "l.txt", [MD5_A, "nothex"])
    with pytest.raises(BadInputError, match=r"l\.txt, line 2: wrong length .*--strict refuses"):
        store.add("b", path, type_name="md5", strict=True)
    assert store.names() == []


def test_bank_checksum_depends_on_content_only(tmp_path):
    one = BankStore(tmp_path / "h1")
    two = BankStore(tmp_path / "h2")
    one.add("x", write_lines(tmp_path / "a.txt", [MD5_A, MD5_B]), type_name="md5")
    two.add("x", write_lines(tmp_path / "b.txt", [MD5_B]), type_name="md5")
    two.add("x", write_lines(tmp_path / "c.txt", [MD5_A.upper()]), type_name="md5")
    assert one.get("x").sha256 == two.get("x").sha256


def test_indexes_match_exactly_and_within_radius():
    rng = np.random.default_rng(0)
    entries = rng.integers(0, 256, (500, 16), dtype=np.uint8)
    index = ExactHashIndex.from_rows(entries)
    queries = np.concatenate([entries[[7, 300]], rng.integers(0, 256, (5, 16), dtype=np.uint8)])
    q, e, d = index.search(queries)
    assert q.tolist() == [0, 1] and d.tolist() == [0, 0]
    assert [index.entry(i) for i in e] == [entries[7].tobytes().hex(), entries[300].tobytes().hex()]

    hashes = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    flipped = hashes[[3, 9]].copy()
    flipped[0, :2] ^= 0xFF  # 16 bits away
    flipped[1, :5] ^= 0xFF  # 40 bits away
    pdq_index = PdqIndex(hashes)
    q, e, d = pdq_index.search(flipped, radius=31)
    assert (q.tolist(), e.tolist(), d.tolist()) == ([0], [3], [16])
    # against brute force on random queries at a wide radius
    queries = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    q, e, d = pdq_index.search(queries, radius=110)
    bits = np.unpackbits(queries[:, None, :] ^ hashes[None, :, :], axis=2).sum(axis=2)
    expected = set(zip(*np.nonzero(bits <= 110), strict=True))
    assert set(zip(q.tolist(), e.tolist(), strict=True)) == {(int(a), int(b)) for a, b in expected}
    assert all(bits[a, b] == dist for a, b, dist in zip(q, e, d, strict=True))

    text = TextIndex(["https://a.example/", "https://b.example/"])
    q, e, _ = text.search(["https://b.example/", "https://c.example/"])
    assert q.tolist() == [0] and text.entry(int(e[0])) == "https://b.example/"


def test_bank_cli(tmp_path, home):
    lists = tmp_path / "lists"
    lists.mkdir()
    good = write_lines(lists / "md5.txt", [MD5_A, MD5_B, "bad"])
    result = run_cli("bank", "add", "iwf", good, "--type", "md5", "--label", "IWF test", home=home)
    assert result.exit_code == 0, result.output
    assert "version 1" in result.stdout and "2 new" in result.stdout
    assert "1 bad line(s) skipped" in result.stderr and "md5.txt, line 3: wrong length" in result.stderr

    strict = run_cli("bank", "add", "other", good, "--type", "md5", "--strict", home=home)
    assert strict.exit_code == 3 and "md5.txt, line 3" in strict.stderr

    listing = json.loads(run_cli("bank", "list", "--json", home=home).stdout)
    assert [(b["name"], b["counts"], b["enabled"]) for b in listing] == [("iwf", {"md5": 2}, True)]
    assert "iwf" in run_cli("bank", "list", home=home).stdout

    shown = run_cli("bank", "show", "iwf", home=home)
    assert shown.exit_code == 0 and "IWF test" in shown.stdout and MD5_A not in shown.stdout
    assert json.loads(run_cli("bank", "show", "iwf", "--json", home=home).stdout)["version"] == 1

    assert run_cli("bank", "disable", "iwf", home=home).exit_code == 0
    assert json.loads(run_cli("bank", "show", "iwf", "--json", home=home).stdout)["enabled"] is False
    assert run_cli("bank", "enable", "iwf", home=home).exit_code == 0
    assert run_cli("bank", "rm", "iwf", home=home).exit_code == 0
    missing = run_cli("bank", "show", "iwf", home=home)
    assert missing.exit_code == 2 and "no bank named 'iwf'" in missing.stderr
    bad_name = run_cli("bank", "add", "../evil", good, "--type", "md5", home=home)
    assert bad_name.exit_code == 2


def _near(rng, hashes: np.ndarray, count: int, max_flips: int) -> np.ndarray:
    queries = hashes[rng.integers(0, len(hashes), count)].copy()
    for row in queries:
        for bit in rng.choice(256, rng.integers(0, max_flips), replace=False):
            row[bit // 8] ^= 1 << (bit % 8)
    return queries


@pytest.mark.parametrize("slots", [None, 11, 12, 13, 14, 15, 16], ids=lambda s: f"{s}-slots" if s else "linear-scan")
@pytest.mark.parametrize("radius", [0, 31, 47, 63, 90])
def test_pdq_index_is_exact_against_brute_force(slots, radius):
    """Every slot count the index may cut a list into (and the linear scan of small lists) finds
    exactly the pairs within the radius, each once, with its distance."""
    rng = np.random.default_rng((slots or 0) * 1000 + radius)
    hashes = rng.integers(0, 256, (6000 if slots else 50, 32), dtype=np.uint8)
    queries = _near(rng, hashes, 300, 70)
    index = PdqIndex(hashes, build_tables(hashes, slots) if slots else None)
    assert index._orders is None if slots is None else index._orders.size == slots * len(hashes)
    q, e, d = index.search(queries, radius=radius)
    distances = np.bitwise_count(queries.view("<u8")[:, None, :] ^ hashes.view("<u8")[None, :, :]).sum(axis=2)
    expected = {(int(a), int(b)) for a, b in zip(*np.nonzero(distances <= radius), strict=True)}
    found = list(zip(q.tolist(), e.tolist(), strict=True))
    assert len(found) == len(set(found)), "a pair was reported twice"
    assert set(found) == expected
    assert d.tolist() == [int(distances[a, b]) for a, b in found]


def test_pdq_slot_count_grows_with_the_list():
    """16 slots of 16 bits leave ~150 entries a bucket at 10M hashes, each a random read; the
    index cuts lists of millions into fewer, wider slots, and small ones into 16."""
    assert [slots_for(n) for n in (4096, 1_000_000, 4_000_000, 10_000_000, 100_000_000)] == [16, 16, 12, 11, 11]
    assert [sum(_mih.layout(m)) for m in range(11, 17)] == [256] * 6
    with pytest.raises(ValueError, match="slots must be 11..16"):
        _mih.layout(10)


def test_exact_index_over_every_digest_width():
    rng = np.random.default_rng(7)
    for width in (16, 20, 32):  # md5 / url_md5, sha1 (a padded last word), sha256
        rows = rng.integers(0, 256, (3000, width), dtype=np.uint8)
        rows[100] = rows[200]  # a duplicate
        rows[300, :8] = rows[301, :8]  # same first word, different digest
        index = ExactHashIndex.from_rows(rows)
        assert len(index) == 2999
        queries = np.concatenate([rows[[5, 300, 301, 200]], rng.integers(0, 256, (50, width), dtype=np.uint8)])
        q, e, _ = index.search(queries)
        assert sorted(q.tolist()) == [0, 1, 2, 3]
        assert {index.entry(int(i)) for i in e} == {rows[i].tobytes().hex() for i in (5, 300, 301, 200)}


def test_large_fast_path_import_merges_and_counts(tmp_path, store):
    rng = np.random.default_rng(3)
    digests = [row.tobytes().hex() for row in rng.integers(0, 256, (20000, 16), dtype=np.uint8)]
    lines = digests[:15000] + digests[:10] + ["# comment", "", digests[15000].upper() + "\r", "zz" * 16]
    first = store.add("big", write_lines(tmp_path / "a.txt", lines), type_name="md5")
    assert (first.accepted, first.added, first.duplicates) == (15011, 15001, 10)
    assert [(e.line, e.reason) for e in first.errors] == [(15014, "not hex (md5)")]
    second = store.add("big", write_lines(tmp_path / "b.txt", digests[14000:]), type_name="md5")
    assert second.added == 20000 - 15001 and second.bank.counts == {"md5": 20000}
    index = ExactHashIndex(store.load("big", "md5"), 16)
    q, _, _ = index.search(np.frombuffer(bytes.fromhex("".join(digests)), np.uint8).reshape(-1, 16))
    assert len(q) == 20000


def test_pdq_search_tables_are_kept_in_the_store_and_mapped(tmp_path, store):
    """Large PDQ lists keep their search tables beside the hashes (0600, like them), so workers map
    one copy instead of each building its own; a search through them is the same search."""
    from safeset.banks import Matcher, MatchSettings

    rng = np.random.default_rng(7)
    listed = rng.integers(0, 256, (PdqIndex.MIH_MIN_ENTRIES + 500, 32), dtype=np.uint8)
    write_lines(tmp_path / "pdq.txt", [f"pdq {row.tobytes().hex()}" for row in listed])
    store.add("big", tmp_path / "pdq.txt")
    write_lines(tmp_path / "few.txt", [f"pdq {row.tobytes().hex()}" for row in listed[:10]])
    store.add("few", tmp_path / "few.txt")
    bank = Path(store.get("big").directory)
    for name in ("pdq.s16.orders.npy", "pdq.s16.starts.npy"):
        assert stat.S_IMODE((bank / name).stat().st_mode) == 0o600
    assert store.load_tables("few") is None

    index = Matcher.load(store, [store.get("big")], MatchSettings())._indexes[("big", "pdq")]
    assert isinstance(index._orders, np.memmap) and isinstance(index._starts, np.memmap)
    queries = listed[::97].copy()
    queries[:, :4] ^= 0x0F  # 16 bits away
    built = PdqIndex(np.asarray(store.load("big", "pdq")))
    for mapped_part, built_part in zip(index.search(queries, 31), built.search(queries, 31), strict=True):
        assert np.array_equal(mapped_part, built_part)
    assert len(index.search(queries, 31)[0]) >= len(queries)

    # tables that do not fit the hashes (a store written halfway) are not used
    stale = (np.zeros(16, np.uint32), np.zeros(16, np.uint32))
    assert PdqIndex(np.asarray(store.load("big", "pdq")), stale)._orders.size == 16 * len(listed)

    # a version an older safeset wrote has its tables under the old names, cut into another slot
    # count than the list's size now gets (here 12): new tables are written beside them, once, and
    # searched the same; the old files, which a reader may have mapped, are left as they were
    for name in ("pdq.s16.orders.npy", "pdq.s16.starts.npy"):
        (bank / name).unlink()
    for name, table in zip(("pdq.orders.npy", "pdq.starts.npy"), build_tables(built._hashes, 12), strict=True):
        np.save(bank / name, table)
    old = (bank / "pdq.orders.npy").stat()
    orders, starts = store.load_tables("big")
    assert orders.size == 16 * len(listed) and stat.S_IMODE((bank / "pdq.s16.orders.npy").stat().st_mode) == 0o600
    assert (bank / "pdq.orders.npy").stat().st_ino == old.st_ino and (
        bank / "pdq.orders.npy"
    ).stat().st_mtime == old.st_mtime
    recut = Matcher.load(store, [store.get("big")], MatchSettings())._indexes[("big", "pdq")]
    assert all(np.array_equal(a, b) for a, b in zip(recut.search(queries, 31), built.search(queries, 31), strict=True))

    # a list added to the bank: its version has tables of the new hashes only, none of the old
    # version's (nor a table write a kill left halfway)
    (bank / "pdq.s16.orders.npy.partial").write_bytes(b"cut short")
    more = rng.integers(0, 256, (10, 32), dtype=np.uint8)
    write_lines(tmp_path / "more.txt", [f"pdq {row.tobytes().hex()}" for row in more])
    store.add("big", tmp_path / "more.txt")
    newer = Path(store.get("big").directory)
    assert sorted(p.name for p in newer.glob("pdq*")) == ["pdq.npy", "pdq.s16.orders.npy", "pdq.s16.starts.npy"]
    assert store.load_tables("big")[0].size == 16 * (len(listed) + 10)


def test_hosts_are_normalised_as_a_client_connects_to_them():
    """A dataset URL spelled with full-width letters or ideographic dots reaches the same host as its
    plain spelling, so URL and domain banks must match it (they used to be bypassed)."""
    from safeset.model import ItemResult, Status
    from safeset.sinks import results_table

    domain, url = signal_type("domain"), signal_type("url")
    assert domain.normalise("Bücher.DE.") == domain.normalise("xn--bcher-kva.de") == "xn--bcher-kva.de"
    assert domain.normalise("*.example.org") == "example.org" and domain.normalise("[::1]") == "::1"
    disguised = "https://\uff42\uff41\uff44\u3002example\u3002org/x.jpg"  # ｂａｄ。example。org
    table = results_table([ItemResult(row_id="s:0", shard="s", index=0, key="0", url=disguised, status=Status.OK)])
    suffixes = domain.queries(table, 50).values.to_pylist()
    assert "bad.example.org" in suffixes and "example.org" in suffixes
    assert url.queries(table, 50).values.to_pylist() == [url.normalise("https://BAD.example.org/x.jpg")]


URLS = [
    "https://img.example.org/a/b.jpg?x=1&y=2#frag",
    "HTTP://IMG.Example.ORG",
    "http://example.org.?q",
    "http://example.org/?",
    "https://example.org:443/x",
    "https://example.org:8443/x",
    "https://example.org:99999/x",
    "http://user:pw@example.org/x",
    "http://[::1]/x",
    "http://[bad/x",
    "http://127.0.0.1/x",
    "ftp://example.org/x",
    "example.org/x.jpg",
    "  https://example.org/space  ",
    "https://exa\tmple.org/x",
    "https://example.org/ü/ß.jpg",
    "https://bücher.de/x",
    "https://\uff42\uff41\uff44\u3002example\u3002org/x.jpg",
    "https://a..b.org/x",
    "https://-a.org/x",
    "https://a-.org/x",
    "https://xn--bcher-kva.de/x",
    "https://" + "a" * 70 + ".org/x",
    "https://a_b.example.org/x",
    "https://example.org#only",
    "https://example.org/x?",
    "https://example.org/x?#",
    "",
    None,
    "not a url",
    "https://",
    "https:///x",
    "https://1.2.3.4.example/x",
    "http://EXAMPLE.org.../x",
]


def test_urls_normalised_column_by_column_as_one_by_one():
    """The columnar URL forms (a fast path for plain URLs, `normalise_url` for the rest) are, URL for
    URL, what the one-by-one functions give: the URL and domain banks match the same rows either way."""
    import pyarrow as pa

    from safeset.hashing import domain_suffixes, normalise_url, url_host, url_md5
    from safeset.hashing.columns import host_suffixes, normal_urls, url_digests
    from safeset.hashing.digests import threatexchange_url_md5

    rng = np.random.default_rng(5)
    parts = [
        "http",
        "HTTPS",
        "://",
        "a",
        "B",
        ".",
        "-",
        "/",
        "?",
        "#",
        ":",
        "80",
        "@",
        "%20",
        "ü",
        " ",
        "\t",
        "com",
        "_",
    ]
    generated = ["".join(rng.choice(parts, size=rng.integers(1, 14))) for _ in range(4000)]
    urls = URLS + generated + [f"https://{u}" for u in generated]
    column = pa.array(urls, pa.string())
    assert normal_urls(column).to_pylist() == [normalise_url(u) if u is not None else None for u in urls]
    rows, suffixes = host_suffixes(column)
    expected = [
        (i, suffix)
        for i, u in enumerate(urls)
        if u is not None and (host := url_host(u))
        for suffix in domain_suffixes(host)
    ]
    assert list(zip(rows.tolist(), suffixes.to_pylist(), strict=True)) == expected
    # a host of very many labels costs its length: only suffixes a listed domain could be
    many = pa.array(["http://" + "a." * 50_000 + "example.com/x.jpg"])
    rows, suffixes = host_suffixes(many)
    assert suffixes.to_pylist()[-2:] == ["example.com", "com"] and max(map(len, suffixes.to_pylist())) <= 253
    held, pytx = url_digests(column)
    assert held.to_pylist() == [url_md5(u) if u is not None else None for u in urls]
    wanted = [threatexchange_url_md5(u) if u is not None else None for u in urls]
    assert pytx.to_pylist() == [w if w != h else None for w, h in zip(wanted, held.to_pylist(), strict=True)]


def test_text_queries_dictionary_encoded_are_looked_up_once_each_nulls_matching_nothing():
    import pyarrow as pa

    from safeset.banks.index import TextIndex

    index = TextIndex(["a.com", "com", "b.org"])
    queries = pa.array(["com", None, "a.com", None, "x.net", "com"]).dictionary_encode()
    q, e, _ = index.search(queries)
    assert list(zip(q.tolist(), e.tolist(), strict=True)) == [(0, 1), (2, 0), (5, 1)]
    nothing = pa.DictionaryArray.from_arrays(pa.array([None, None], pa.int32()), pa.array([], pa.string()))
    assert len(index.search(nothing)[0]) == 0
