"""The HTML report in a real headless browser: it renders the counts, and it never loads anything,
not even the URLs of removed items, which here point at a loopback server that records requests."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import make_shards, run_cli, write_lines
from test_neighbours import laion_layout

from safeset.demo import Sample, jpeg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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


def browse(url: str, profile: Path) -> str:
    assert CHROMIUM, "chromium is missing: `make test` installs it (apt package chromium)"
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=2000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return proc.stdout.decode()


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

    dom = browse(f"{base}/out/report.html", tmp_path / "profile")
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
    dom = browse(f"{base}/out/report.html", tmp_path / "profile")
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
