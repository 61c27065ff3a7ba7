"""The CLI's own behaviour: `safeset hash`, usage errors and their exit codes."""

from __future__ import annotations

import hashlib
import json

from helpers import encode, run_cli

import safeset


def test_hash_prints_one_json_object_per_file(coffee, tmp_path):
    photo = tmp_path / "coffee.png"
    photo.write_bytes(encode(coffee, "PNG"))
    page = tmp_path / "page.jpg"
    page.write_bytes(b"<html>nope</html>")
    result = run_cli("hash", photo, page, "--json")
    assert result.exit_code == 0
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first == {
        "path": str(photo),
        "status": "ok",
        "md5": hashlib.md5(photo.read_bytes()).hexdigest(),
        "sha1": hashlib.sha1(photo.read_bytes()).hexdigest(),
        "sha256": hashlib.sha256(photo.read_bytes()).hexdigest(),
        "pdq": str(safeset.pdq(coffee)),
        "pdq_quality": 100,
        "error": None,
    }
    assert second["status"] == "unsupported_media" and second["error"] == "html" and second["pdq"] is None
    table = run_cli("hash", photo)
    assert table.exit_code == 0 and str(safeset.pdq(coffee))[:16] in table.stdout


def test_usage_errors_exit_2(tmp_path, home):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "a").mkdir(parents=True)
    policy = tmp_path / "p.toml"
    policy.write_text("")
    both = run_cli("scan", tmp_path / "a", "--out", tmp_path / "o", "--policy", policy, "--preset", "strict", home=home)
    assert both.exit_code == 2 and "not both" in both.stderr
    same_name = run_cli("scan", tmp_path / "a", tmp_path / "b" / "a", "--out", tmp_path / "o", home=home)
    assert same_name.exit_code == 2 and "same name 'a'" in same_name.stderr
    unknown_bank = run_cli("scan", tmp_path / "a", "--out", tmp_path / "o", "--bank", "nope", home=home)
    assert unknown_bank.exit_code == 2 and "no bank named 'nope'" in unknown_bank.stderr
    engine = run_cli("scan", tmp_path / "a", "--out", tmp_path / "o", "--engine", "warp", home=home)
    assert engine.exit_code == 2 and "'warp' is not one of 'local', 'ray'" in engine.stderr
    address = run_cli("scan", tmp_path / "a", "--out", tmp_path / "o", "--ray-address", "10.0.0.1:6379", home=home)
    assert address.exit_code == 2 and "--ray-address is for --engine ray" in address.stderr
    missing = run_cli("scan", tmp_path / "missing", "--out", tmp_path / "o", home=home)
    assert missing.exit_code == 2
    for flag in ("--save-images", "--retry-failed"):
        alone = run_cli("scan", tmp_path / "a", "--out", tmp_path / "o", flag, home=home)
        assert alone.exit_code == 2 and "it needs --fetch" in alone.stderr
    no_report = run_cli("report", tmp_path / "a")
    assert no_report.exit_code == 2 and "no report.json" in no_report.stderr


def test_a_scan_that_checked_nothing_says_so_first(tmp_path, home):
    """No enabled bank, or every row unchecked: the summary and the report say it at the top, and
    --fail-on lets a CI job fail on it (exit 4) once every output is written."""
    meta = tmp_path / "meta.csv"
    meta.write_text("url\nhttps://a.example/1.jpg\nhttps://a.example/2.jpg\n")
    result = run_cli("scan", meta, "--out", tmp_path / "out", "-q", home=home)
    assert result.exit_code == 0
    first = result.stdout.splitlines()[:2]
    assert first[0].startswith("warning: No bank was used") and first[1].startswith(
        "warning: Every row (2) is unchecked"
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["warnings"]) == 2
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.index("No bank was used") < html.index("<h2>Summary</h2>")

    gated = run_cli("scan", meta, "--out", tmp_path / "out2", "--fail-on", "unchecked", "--json", "-q", home=home)
    assert gated.exit_code == 4 and "--fail-on: unchecked (2)" in gated.stderr
    printed = json.loads(gated.stdout)
    assert printed["totals"]["rows"] == 2 and printed["fail_on"] == {"unchecked": 2} and len(printed["warnings"]) == 2
    assert (tmp_path / "out2" / "report.json").is_file()  # the outputs are all there
    clean = run_cli("scan", meta, "--out", tmp_path / "out3", "--fail-on", "remove", "--fail-on", "match", home=home)
    assert clean.exit_code == 0


def test_scan_options_are_the_settings_fields_they_set():
    """`scan`'s read and fetch options are derived from the fields of ReadOptions and FetchOptions
    (`safeset.options`): their defaults are the fields' own, and what is given reaches the field,
    under its flag (`--fetch-retries` sets `retries`; `--ignore-optout` clears `respect_optout`)."""
    from safeset import ReadOptions
    from safeset.cli.audit import scan_command
    from safeset.cli.options import build
    from safeset.fetch import FetchOptions

    parsed = scan_command.make_context("scan", ["data", "--out", "out"]).params
    assert build(ReadOptions, parsed) == ReadOptions()
    assert build(FetchOptions, parsed) == FetchOptions()
    given = [
        *("data", "--out", "out", "--ignore-optout", "--fetch-retries", "0", "--timeout", "2.5"),
        *("--allow-network", "10.0.0.0/8", "--allow-network", "fd00::/8", "--max-bytes", "5", "--url-col", "link"),
    ]
    parsed = scan_command.make_context("scan", given).params
    read = build(ReadOptions, parsed)
    fetch = build(FetchOptions, parsed, max_bytes=read.max_bytes)
    assert (read.max_bytes, read.url_col, read.table_rows) == (5, "link", ReadOptions().table_rows)
    assert (fetch.respect_optout, fetch.retries, fetch.total_timeout, fetch.max_bytes) == (False, 0, 2.5, 5)
    assert fetch.allowed_networks == ("10.0.0.0/8", "fd00::/8")
