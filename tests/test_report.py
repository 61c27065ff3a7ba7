"""The HTML report in a real headless browser: it renders the counts and its charts at a desktop's
and a phone's width, and it never loads anything, not even the URLs of removed items, which here
point at a loopback server that records requests."""

from __future__ import annotations

import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import Browser
from helpers import make_shards, run_cli, write_lines
from test_neighbours import laion_layout

import safeset
from safeset.demo import Sample, jpeg


class _Recorder(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    _Recorder.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Recorder, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", _Recorder.requests
    httpd.shutdown()
    httpd.server_close()


def page_dom(url: str, profile: Path) -> str:
    with Browser(profile) as browser:
        browser.load(url, 1280)
        return browser.evaluate("document.documentElement.outerHTML")


def test_report_renders_in_a_browser_and_loads_nothing(tiles, tmp_path, home, server):
    www, base, requests = server
    listed = jpeg(tiles[7][1])
    samples = [Sample(f"{base}/images/{name}.jpg", name, jpeg(image)) for name, image in tiles[30:40]]
    samples.append(Sample(f"{base}/images/listed.jpg", "<b>caption</b>", listed))
    make_shards(tmp_path / "shards", [samples])
    write_lines(tmp_path / "md5.txt", [hashlib.md5(listed).hexdigest()])
    assert run_cli("bank", "add", "test-list", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    out = www / "out"
    assert run_cli("scan", tmp_path / "shards", "--out", out, "-q", home=home).exit_code == 0

    dom = page_dom(f"{base}/out/report.html", tmp_path / "profile")
    assert "safeset audit report" in dom
    assert '<table id="totals">' in dom
    assert '<td class="n">11</td><td class="n">10</td><td class="n">1</td>' in dom  # rows, keep, remove
    assert "Conservation holds" in dom
    assert "test-list" in dom and "<img" not in dom
    # The browser asked for the report (and perhaps its favicon), never for an image URL.
    assert requests and requests[0] == "/out/report.html"
    assert not [r for r in requests if r.startswith("/images/")]

    # an expansion round's table: what it searched and found, counts only
    urls = [r["url"] for r in pq.read_table(out / "results", columns=["url"]).to_pylist()]
    vectors = np.random.default_rng(0).normal(size=(len(urls), 8)).astype(np.float32)
    listed_row = urls.index(f"{base}/images/listed.jpg")
    vectors[(listed_row + 1) % len(urls)] = vectors[listed_row] * 2  # a neighbour at similarity 1
    emb = laion_layout(tmp_path / "emb", [vectors], [urls])
    assert run_cli("expand", out, "--embeddings", emb, "-q", home=home).exit_code == 0
    dom = page_dom(f"{base}/out/report.html", tmp_path / "profile")
    assert '<table id="expansion">' in dom and '<table id="expansion-similarity">' in dom
    assert not [r for r in requests if r.startswith("/images/")]

    # `safeset report` re-renders the same page from report.json
    before = (out / "report.html").read_text()
    (out / "report.html").unlink()
    assert run_cli("report", out).exit_code == 0
    assert (out / "report.html").read_text() == before


def test_page_lists_the_first_thousand_shards_and_the_json_all(tmp_path, home):
    """A LAION-sized scan has hundreds of thousands of shards, more rows than a browser lays out:
    the page lists the first 1,000 and says how many there are; report.json keeps every one."""
    write_lines(tmp_path / "meta.csv", ["url", *(f"https://img{i}.example.org/{i}.jpg" for i in range(1003))])
    out = tmp_path / "out"
    done = run_cli("scan", tmp_path / "meta.csv", "--out", out, "--table-rows", "1", "--workers", "2", "-q", home=home)
    assert done.exit_code == 0, done.output
    report = json.loads((out / "report.json").read_text())
    assert len(report["shards"]) == 1003 and report["totals"]["rows"] == 1003

    page = (out / "report.html").read_text()
    shards = page[page.index('<table id="shards">') :]
    shards = shards[: shards.index("</table>")]
    assert shards.count("<tr>") == 1 + 1000  # the header, then the first 1,000
    assert "meta.csv/part-00999.csv" in shards and "part-01000" not in shards
    assert "The first 1,000 of 1,003 shards; report.json lists them all." in page
    inputs = page[page.index('<table id="inputs">') :]
    assert inputs[: inputs.index("</table>")].count("<tr>") == 1 + 1  # one file, read in 1,003 parts


def _chart_regions(browser: Browser) -> dict[str, dict]:
    """Where each chart's drawing is on the page, by its figure's id."""
    return browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('figure.chart')].map(f => {"
        " const r = f.querySelector('svg').getBoundingClientRect();"
        " return [f.id, {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}]; }))"
    )


def _inked(image) -> float:
    """The share of an image's pixels that are not the page's white."""
    grey = np.asarray(image.convert("L"))
    return float((grey < 235).mean())


@pytest.fixture
def full_audit(tiles, tmp_path, home, server):
    """An audit with something in every section: fetched from loopback (three URLs missing), a
    score column and a rule on it, a listed MD5, one PDQ entry that floods, a verdict round and an
    expansion round."""
    www, base, requests = server
    (www / "images").mkdir()
    urls, punsafe = [], []
    for i, (_, image) in enumerate(tiles[40:52]):
        (www / "images" / f"{i}.jpg").write_bytes(jpeg(image))
        urls.append(f"{base}/images/{i}.jpg")
        punsafe.append(i / 12 + 0.04)
    placeholder = jpeg(tiles[52][1])  # one CDN placeholder at three URLs, which a PDQ list names
    for i in range(3):
        (www / "images" / f"placeholder{i}.jpg").write_bytes(placeholder)
        urls.append(f"{base}/images/placeholder{i}.jpg")
        punsafe.append(0.1)
    urls += [f"{base}/images/missing{i}.jpg" for i in range(3)]
    punsafe += [None] * 3
    pq.write_table(pa.table({"url": urls, "punsafe": pa.array(punsafe, pa.float32())}), tmp_path / "meta.parquet")
    listed = (www / "images" / "7.jpg").read_bytes()
    store = safeset.BankStore(home)
    store.add("hotline", write_lines(tmp_path / "md5.txt", [f"md5 {hashlib.md5(listed).hexdigest()}"]))
    store.add("cdn-list", write_lines(tmp_path / "pdq.txt", [f"pdq {safeset.pdq(tiles[52][1])}"]))
    policy = write_lines(
        tmp_path / "p.toml", ["[[rules]]", 'name = "unsafe"', 'action = "remove"', 'all = ["punsafe >= 0.9"]']
    )
    out = www / "out"
    scan = ["scan", tmp_path / "meta.parquet", "--out", out, "--fetch", "--allow-network", "127.0.0.0/8"]
    result = run_cli(*scan, "--policy", policy, "--flood-limit", "2", "-q", home=home)
    assert result.exit_code == 0, result.output
    verdict = write_lines(tmp_path / "v.csv", ["url,verdict", f"{urls[7]},false_positive"])
    assert run_cli("review", "import", verdict, "--out", out, home=home).exit_code == 0
    assert run_cli("decide", out, "--policy", policy, "--flood-limit", "2", "-q", home=home).exit_code == 0
    vectors = np.random.default_rng(1).normal(size=(len(urls), 8)).astype(np.float32)
    vectors[0] = vectors[12] * 3  # a placeholder's neighbour: the first tile
    emb = laion_layout(tmp_path / "emb", [vectors], [urls])
    assert run_cli("expand", out, "--embeddings", emb, "--seeds", "review", "-q", home=home).exit_code == 0
    fetched = len(requests)
    return out, fetched


def test_report_charts_at_desktop_and_phone_widths(full_audit, tmp_path, server):
    """Every chart drawn (not blank), at a desktop's and a phone's width, the page no wider than
    the window, nothing requested but the page itself, and each chart beside its table."""
    out, fetched = full_audit
    _, base, requests = server
    report = json.loads((out / "report.json").read_text())
    assert report["quarantined"] and report["fetch"] and report["expansion"] and report["signals"]
    decided = next(r for r in report["rounds"] if r["kind"] == "decide")
    assert decided["verdicts"]["in_log"] == {"false_positive": 1}
    assert decided["transitions"] == {"remove->keep": {"match:hotline:md5": 1}}
    assert len(report["signals"]["punsafe"]["keep"]["histogram"]) == 20
    charts = {
        "chart-decisions": "totals", "chart-coverage": "totals", "chart-banks": "banks", "chart-reasons": "reasons",
        "chart-rules": "rules", "chart-signal-0": "signals", "chart-unchecked": "unchecked", "chart-fetch": "fetch",
        "chart-fetch-failing": "fetch-domains", "chart-expansion-1": "expansion-similarity",
        "chart-quarantined": "quarantined", "chart-transitions": "transitions",
    }  # fmt: skip
    page = f"{base}/out/report.html"
    with Browser(tmp_path / "profile") as browser:
        for width in (1280, 390):
            browser.load(page, width)
            assert browser.requests() == [page]
            layout = browser.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            assert layout == [width, width], f"the page overflows at {width} px: {layout}"
            regions = _chart_regions(browser)
            assert set(charts) <= set(regions), set(charts) - set(regions)
            for chart, table in charts.items():
                region = regions[chart]
                assert 0 <= region["x"] and region["x"] + region["width"] <= width + 0.5, (chart, region)
                assert _inked(browser.screenshot(region)) > 0.02, f"{chart} is blank at {width} px"
                assert browser.evaluate(f"!!document.getElementById('{table}')"), table
            window = browser.screenshot()
            window.save(tmp_path / f"report-{width}.png")
            assert window.width == width and _inked(window) > 0.02
    assert len(requests) == fetched + 2  # the page, once per width: no image, no favicon from the page


def test_a_laion_sized_report_stays_small_and_fast(tmp_path, home):
    """A 550,000-shard report.json (LAION-5B's parquet files, as img2dataset writes them): the page
    summarises and lists the first 1,000, stays under 3 MB and loads in well under 2 s."""
    write_lines(tmp_path / "meta.csv", ["url", *(f"https://img{i}.example.org/{i}.jpg" for i in range(20))])
    out = tmp_path / "out"
    assert run_cli("scan", tmp_path / "meta.csv", "--out", out, "--table-rows", "10", "-q", home=home).exit_code == 0
    report = json.loads((out / "report.json").read_text())
    shard, source = report["shards"][0], report["inputs"][0]
    report["shards"] = [{**shard, "part": i, "shard": f"laion2B-en/{i:06d}.parquet"} for i in range(550_000)]
    report["inputs"] = [{**source, "path": f"s3://laion/laion2B-en/{i:06d}.parquet"} for i in range(550_000)]
    (out / "report.json").write_text(json.dumps(report))
    (out / "report.html").unlink()
    assert run_cli("report", out).exit_code == 0
    html = (out / "report.html").read_text()
    assert len(html.encode()) < 3_000_000
    assert "550,000 shard(s)" in html and "The first 1,000 of 550,000 shards" in html
    with Browser(tmp_path / "profile") as browser:
        browser.load((out / "report.html").as_uri(), 1280)
        loaded = browser.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        assert browser.evaluate("document.querySelectorAll('#shards tbody tr').length") == 1000
        assert browser.evaluate("document.documentElement.scrollWidth") == 1280
    assert loaded < 2000, f"the page took {loaded:.0f} ms to load"


def test_a_hostile_report_json_is_drawn_as_text_and_stays_in_the_page(full_audit, tmp_path, server):
    """report.json is input like any other: names that are markup, a lone surrogate, a direction
    control, a name of 300 letters and counts that are negative or not numbers are shown as
    text or left out of the charts; the page still loads nothing and fits a phone."""
    out, _ = full_audit
    _, base, requests = server
    report = json.loads((out / "report.json").read_text())
    trap = f'1"><meta http-equiv="refresh" content="0;url={base}/leak"><a id="x'
    report["expansion"][0]["round"] = trap
    long_name = "clip_vit_h_14_laion2b_aesthetic_" + "W" * 300
    signals = report["signals"]
    signals["bad\udcff"] = signals[long_name] = signals["rtl\u202eevil"] = signals["punsafe"]
    report["banks"][0]["name"] = "<script>alert(1)</script>" + "M" * 60
    report["reasons"] = {"fine": 5, "negative": -40, "not a number": "7", "nan": float("nan"), "huge": 1e308}
    report["quarantined"][0]["rows"] = -3
    (out / "report.json").write_text(json.dumps(report))
    assert run_cli("report", out).exit_code == 0
    html = (out / "report.html").read_text()
    assert '<meta http-equiv="refresh"' not in html and "<script>" not in html
    assert "bad\\udcff" in html and "\\u202e" in html and "\u202e" not in html

    page = f"{base}/out/report.html"
    with Browser(tmp_path / "hostile-profile") as browser:
        for width in (390, 1280):
            browser.load(page, width)
            assert browser.requests() == [page]
            assert browser.evaluate("[document.documentElement.scrollWidth, innerWidth]") == [width, width]
            assert browser.evaluate("document.querySelectorAll('meta[http-equiv=refresh]').length") == 0
            regions = _chart_regions(browser)
            assert "chart-reasons" in regions and "chart-quarantined" not in regions  # nothing drawable left
            for region in regions.values():
                assert region["x"] + region["width"] <= width + 0.5
    assert not [r for r in requests if "leak" in r]
