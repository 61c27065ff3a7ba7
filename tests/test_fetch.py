"""`safeset scan --fetch` against a real HTTP server on loopback that misbehaves in every usual way."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

import pyarrow.parquet as pq
import pytest
from helpers import read_json, run_cli, write_lines
from http_server import HOSTS, FaultyServer
from multidict import CIMultiDict

from safeset.demo import jpeg
from safeset.fetch import AddressPolicy, Blocked, Fetcher, FetchOptions, check_url, optout_reason, retry_after_seconds
from safeset.fetch.guard import guarded_socket_factory
from safeset.model import Item, Status

LOOPBACK = ("--allow-network", "127.0.0.0/8", "--allow-network", "::1/128")


@pytest.fixture(scope="module")
def images(tiles):
    return {f"{name}.jpg": jpeg(image) for name, image in tiles[:40]}


@pytest.fixture
def server(images):
    with FaultyServer(images) as running:
        yield running


def write_meta(path, urls: list[str]) -> None:
    write_lines(path, ["URL,TEXT", *(f"{u},caption {i}" for i, u in enumerate(urls))])


def results_by_url(out) -> dict[str, dict]:
    return {r["url"]: r for r in pq.read_table(out / "results").to_pylist()}


# ---- the guard, alone -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address, public",
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("240.0.0.1", False),  # reserved
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("ff02::1", False),
        ("::127.0.0.1", False),  # IPv4-compatible loopback
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::a9fe:a9fe", False),  # local-use NAT64 of 169.254.169.254
        ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34: a public address behind it
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", False),  # 6to4 of 192.168.1.1
        ("2002:5db8:d822::1", True),  # 6to4 of a public address
        ("fec0::1", False),  # site-local
    ],
)
def test_only_public_addresses_are_allowed_by_default(address, public):
    assert AddressPolicy().permits(ipaddress.ip_address(address)) is public


def test_allowing_networks():
    narrow = AddressPolicy(allowed=["127.0.0.0/8"])
    assert narrow.permits(ipaddress.ip_address("127.0.0.9"))
    assert not narrow.permits(ipaddress.ip_address("169.254.169.254"))
    broad = AddressPolicy(allow_private=True)
    assert broad.permits(ipaddress.ip_address("10.0.0.1")) and not broad.permits(ipaddress.ip_address("224.0.0.1"))


@pytest.mark.parametrize(
    "url, reason",
    [
        ("file:///etc/passwd", "bad_scheme"),
        ("ftp://example.org/a.jpg", "bad_scheme"),
        ("http:///nohost", "bad_url"),
        ("http://example.org:99999/a.jpg", "bad_url"),
        ("http://127.0.0.1/a.jpg", "ssrf_blocked"),
        ("http://[::1]/a.jpg", "ssrf_blocked"),
        ("http://169.254.169.254/latest/meta-data/", "ssrf_blocked"),
        # hosts that IDNA normalisation turns into IP literals: the client would connect to them
        ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/a.jpg", "ssrf_blocked"),  # full-width digits
        ("http://127\u30020\u30020\u30021/a.jpg", "ssrf_blocked"),  # ideographic full stops
        ("http://\u2460\u2461\u2466.0.0.1/a.jpg", "ssrf_blocked"),  # circled digits
        ("http://\uff11\uff10.0.0.1/a.jpg", "ssrf_blocked"),  # 10.0.0.1
        ("http://[64:ff9b::7f00:1]/a.jpg", "ssrf_blocked"),
        ("http://[2002:a9fe:a9fe::1]/latest/", "ssrf_blocked"),
    ],
)
def test_url_checks(url, reason):
    with pytest.raises(Blocked) as info:
        check_url(url, AddressPolicy())
    assert info.value.reason == reason
    checked = check_url("https://Example.org/a.jpg", AddressPolicy())
    assert (checked.scheme, checked.host) == ("https", "example.org")


def test_the_socket_factory_refuses_before_connecting():
    """The last gate: whatever path an address took, no socket is opened to a refused one."""
    factory = guarded_socket_factory(AddressPolicy(allowed=["127.0.0.2/32"]))
    with pytest.raises(Blocked):
        factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    with pytest.raises(Blocked):
        factory((socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:127.0.0.1", 80, 0, 0)))
    opened = factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 80)))
    assert opened.fileno() >= 0  # a socket, not yet connected anywhere
    opened.close()


def test_a_bad_allowed_network_is_a_usage_error(tmp_path, home):
    meta = tmp_path / "meta.csv"
    write_meta(meta, ["http://127.0.0.1:9/a.jpg"])
    out = tmp_path / "out"
    result = run_cli("scan", meta, "--out", out, "--fetch", "--allow-network", "10.0.0/33", "-q", home=home)
    assert result.exit_code == 2 and "--allow-network '10.0.0/33' is not a network" in result.stderr
    assert not (tmp_path / "out").exists()


def test_optout_and_retry_after_parsing():
    assert optout_reason(CIMultiDict({"X-Robots-Tag": "noindex, NoAI"})) == "x-robots-tag: noai"
    assert optout_reason(CIMultiDict({"X-Robots-Tag": "otherbot: noimageai"})) == "x-robots-tag: noimageai"
    assert optout_reason(CIMultiDict({"tdm-reservation": "1"})) == "tdm-reservation"
    assert optout_reason(CIMultiDict({"X-Robots-Tag": "noindex", "tdm-reservation": "0"})) is None
    assert retry_after_seconds("7") == 7.0
    assert 50 < retry_after_seconds(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) <= 60
    assert retry_after_seconds("soon") is None


# ---- end to end --------------------------------------------------------------------------------
def test_fetch_statuses_for_every_fault(server, images, tmp_path, home):
    names = sorted(images)
    listed = names[0]
    cases = {
        server.url(f"/img/{listed}"): ("ok", None),
        server.url(f"/slow/{names[1]}"): ("ok", None),
        server.url(f"/octet/{names[2]}"): ("ok", None),
        server.url(f"/redirect/3/{names[3]}"): ("ok", None),
        server.url(f"/img/{names[4]}", host="::1"): ("ok", None),  # an IPv6 literal
        f"http://localhost:{server.port}/img/{names[5]}": ("ok", None),  # a name, checked when resolved
        server.url(f"/flaky/a/{names[6]}"): ("ok", None),  # 503, then fine
        server.url(f"/busy/b/{names[7]}"): ("ok", None),  # 429 with Retry-After: 1, then fine
        server.url("/stall"): ("fetch_failed", "timeout"),
        server.url("/status/404"): ("fetch_failed", "http_404"),
        server.url("/status/500"): ("fetch_failed", "http_500"),
        server.url("/truncated"): ("fetch_failed", "truncated"),
        server.url("/html"): ("fetch_failed", "not_image"),
        server.url(f"/as-text/{listed}"): ("ok", None),  # an image whatever its header says
        server.url("/mislabelled"): ("unsupported_media", "html"),
        server.url("/loop"): ("fetch_failed", "too_many_redirects"),
        server.url("/to-metadata"): ("fetch_failed", "ssrf_blocked"),
        server.url("/huge"): ("fetch_failed", "too_large"),
        server.url("/gzip-bomb"): ("fetch_failed", "too_large"),
        server.url(f"/optout/noai/{names[8]}"): ("skipped_optout", "x-robots-tag: noai"),
        server.url(f"/optout/otherbot:%20noimageai/{names[9]}"): ("skipped_optout", "x-robots-tag: noimageai"),
        server.url(f"/tdm/{names[10]}"): ("skipped_optout", "tdm-reservation"),
        "file:///etc/passwd": ("fetch_failed", "bad_scheme"),
        "http://10.255.255.1/a.jpg": ("fetch_failed", "ssrf_blocked"),
    }
    meta = tmp_path / "meta.csv"
    write_meta(meta, list(cases))
    write_lines(tmp_path / "md5.txt", [hashlib.md5(images[listed]).hexdigest()])
    assert run_cli("bank", "add", "md5", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    out = tmp_path / "out"
    result = run_cli(
        "scan",
        meta,
        "--out",
        out,
        "--fetch",
        *LOOPBACK,
        "--timeout",
        "2",
        "--fetch-retries",
        "1",
        "--max-bytes",
        str(2**20),
        "--workers",
        "1",
        "-q",
        home=home,
    )
    assert result.exit_code == 0, result.output
    found = results_by_url(out)
    assert {url: (r["status"], r["error"]) for url, r in found.items()} == cases
    assert found[server.url(f"/img/{listed}")]["decision"] == "remove"
    assert found[server.url(f"/as-text/{listed}")]["decision"] == "remove"
    assert found[server.url("/html")]["md5"] is not None  # the page was read and hashed too
    assert found[server.url("/to-metadata")]["decision"] == "keep"  # unchecked, counted as such
    # 503 and 429 were retried once; Retry-After was waited out
    busy = [t for _, path, t in server.log.requests if path.startswith("/busy/")]
    assert len(busy) == 2 and busy[1] - busy[0] >= 0.9
    assert server.log.hits[f"/flaky/a/{names[6]}"] == 2 and server.log.hits["/status/404"] == 1
    # the report's fetch section
    report = read_json(out / "report.json")
    fetch = report["fetch"]
    assert fetch["requests"] >= len(cases) - 2 and fetch["retries"] >= 4
    # 8 images, one sent as text/plain, and a page sent as image/jpeg
    assert fetch["outcomes"]["ok"] == 10 and fetch["outcomes"]["ssrf_blocked"] == 2
    assert fetch["optouts"] == 3 and 0 < fetch["success_rate"] < 1
    assert any(d["domain"] == "127.0.0.1" for d in fetch["domains"])
    # the per-domain table adds up to the outcomes: every fetched row is counted once in each
    assert sum(d["ok"] + d["failed"] + d["optout"] for d in fetch["domains"]) == sum(fetch["outcomes"].values())
    html = (out / "report.html").read_text()
    assert '<table id="fetch-domains">' in html and "too_many_redirects" in html
    # the clean table drops the listed row (and keeps the others, unchecked ones included)
    kept = (out / "clean" / "meta.csv").read_text().splitlines()
    # header; minus the match, the 3 opt-outs and the page that is no image (held for review)
    assert len(kept) == 1 + len(cases) - 2 - 3 - 1


def test_private_addresses_are_refused_unless_allowed(server, images, tmp_path, home):
    name = sorted(images)[0]
    meta = tmp_path / "meta.csv"
    write_meta(meta, [server.url(f"/img/{name}"), f"http://localhost:{server.port}/img/{name}"])
    out = tmp_path / "out"
    assert run_cli("scan", meta, "--out", out, "--fetch", "-q", home=home).exit_code == 0
    assert {r["error"] for r in results_by_url(out).values()} == {"ssrf_blocked"}
    assert server.log.requests == []  # nothing was even requested
    out2 = tmp_path / "out2"
    allowed = run_cli("scan", meta, "--out", out2, "--fetch", "--allow-private-networks", "-q", home=home)
    assert allowed.exit_code == 0, allowed.output
    assert {r["status"] for r in results_by_url(out2).values()} == {"ok"}


def test_hosts_normalised_into_refused_addresses_are_never_requested(server, images, tmp_path, home):
    """Spellings of loopback that the URL library turns into the IP literal 127.0.0.1 (IDNA), in
    rows and behind redirects: refused, and the server, which counts every request, sees none of
    them. 127.0.0.1 itself is allowed here, so only the redirects' first hops are requested."""
    name = sorted(images)[0]
    port = server.port
    disguised = [
        f"http://\uff11\uff12\uff17.\uff10.\uff10.\uff12:{port}/img/{name}",  # full-width 127.0.0.2
        f"http://127\u30020\u30020\u30023:{port}/img/{name}",  # ideographic dots
        f"http://\u2460\u2461\u2466.0.0.4:{port}/img/{name}",  # circled digits
        f"http://[::ffff:127.0.0.2]:{port}/img/{name}",
        f"http://[64:ff9b::7f00:2]:{port}/img/{name}",  # NAT64: refused before any connection
    ]
    redirected = [server.url("/goto?u=" + quote(url, safe="")) for url in disguised[:3]]
    meta = tmp_path / "meta.csv"
    write_meta(meta, disguised + redirected)
    out = tmp_path / "out"
    result = run_cli("scan", meta, "--out", out, "--fetch", "--allow-network", "127.0.0.1/32", "-q", home=home)
    assert result.exit_code == 0, result.output
    found = results_by_url(out)
    assert {url: (r["status"], r["error"]) for url, r in found.items()} == {
        url: ("fetch_failed", "ssrf_blocked") for url in disguised + redirected
    }
    assert sorted(path for _, path, _ in server.log.requests) == sorted(urlsplit(u).path for u in redirected)
    assert {host for host, _, _ in server.log.requests} == {"127.0.0.1"}


def test_a_redirect_to_an_opted_out_domain_is_not_followed(server, images, tmp_path, home):
    """A `domain` bank is an opt-out list: its hosts are never requested, whichever hop leads there."""
    name = sorted(images)[0]
    target = server.url(f"/img/{name}", host="127.0.0.2")
    listed = f"http://\uff11\uff12\uff17.0.0.2:{server.port}/img/{name}"  # the same host, full-width
    urls = [server.url("/goto?u=" + quote(u, safe="")) for u in (target, listed)]
    meta = tmp_path / "meta.csv"
    write_meta(meta, urls)
    write_lines(tmp_path / "domains.txt", ["127.0.0.2"])
    assert run_cli("bank", "add", "optout", tmp_path / "domains.txt", "--type", "domain", home=home).exit_code == 0
    out = tmp_path / "out"
    assert run_cli("scan", meta, "--out", out, "--fetch", *LOOPBACK, "-q", home=home).exit_code == 0
    found = results_by_url(out)
    assert [(found[u]["status"], found[u]["error"], found[u]["decision"]) for u in urls] == [
        ("skipped_optout", "listed domain (optout)", "remove")
    ] * 2
    assert server.log.times("127.0.0.2") == [] and len(server.log.times("127.0.0.1")) == 2


def test_a_fetch_that_raises_ends_its_row_instead_of_hanging_the_shard(server, images, monkeypatch):
    """A bug in the HTTP client (here: one injected for one URL) is the row's failure, `internal`;
    before, its task died with the row still counted in flight, and the shard never ended."""
    from safeset.fetch import scheduler

    real = scheduler.fetch_one

    async def buggy(session, url, *args):
        if url.endswith("?bug"):
            raise AssertionError("a bug in the client")
        return await real(session, url, *args)

    monkeypatch.setattr(scheduler, "fetch_one", buggy)
    url = server.url(f"/img/{sorted(images)[0]}")
    items = [Item(row_id=f"s:{i}", shard="s", index=i, key=str(i), url=u) for i, u in enumerate([url, url + "?bug"])]
    fetcher = Fetcher(FetchOptions(allow_private=True), "test")
    fetched = {item.url: item for item in fetcher.fetch(iter(items))}
    assert fetched[url].data == images[sorted(images)[0]]
    assert (fetched[url + "?bug"].status, fetched[url + "?bug"].error) == (Status.FETCH_FAILED, "internal")
    assert fetcher.stats.bugs == {"AssertionError": 1}  # the shard's problems name it: see pipeline.worker


def test_politeness_per_domain_and_breadth_across_domains(server, images, tmp_path, home):
    names = sorted(images)
    urls = [server.url(f"/slow/{names[i]}", host=HOSTS[i % 4]) for i in range(24)]  # 6 per domain
    meta = tmp_path / "meta.csv"
    write_meta(meta, urls)
    started = time.monotonic()
    result = run_cli(
        "scan",
        meta,
        "--out",
        tmp_path / "out",
        "--fetch",
        *LOOPBACK,
        "--per-domain-rate",
        "4",
        "--per-domain-concurrency",
        "2",
        "--workers",
        "1",
        "-q",
        home=home,
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    for host in HOSTS:
        times = sorted(server.log.times(host))
        assert len(times) == 6
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.2  # <= 4 requests/s
        assert server.log.most_active[host] <= 2
    # 6 requests a domain at 4/s is ~1.3 s; the 4 domains went in parallel, not one after another
    assert elapsed < 1.3 * 4


def test_first_requests_of_many_workers_to_one_domain_are_spread_over_its_interval(server, images):
    """A cluster's workers start their first shards together and meet the big domains at once.
    24 workers, each pacing one domain at 1 request/s (its share of 24/s): their first requests
    spread over that second instead of arriving in the same instant."""
    url = server.url(f"/img/{sorted(images)[0]}")
    options = FetchOptions(per_domain_rate=1.0, allow_private=True)

    def first_shard(worker: int) -> list[Item]:
        item = Item(row_id=f"s:{worker}", shard="s", index=worker, key=str(worker), url=f"{url}?worker={worker}")
        return list(Fetcher(options, "test", stagger=True).fetch(iter([item])))

    with ThreadPoolExecutor(24) as pool:
        fetched = [item for items in pool.map(first_shard, range(24)) for item in items]
    assert len(fetched) == 24 and all(item.data == images[sorted(images)[0]] for item in fetched)
    times = sorted(t for _, _, t in server.log.requests)
    assert 0.5 <= times[-1] - times[0] <= 1.5  # all together would be a few ms


def test_a_domain_met_again_later_in_a_shard_keeps_its_pace(server, images):
    """A domain whose queue ran dry is forgotten, but not its pace: a row of it read later in the
    shard waits for its turn (here 1 request/s) instead of going at once."""
    url = server.url(f"/img/{sorted(images)[0]}")

    def rows():
        yield Item(row_id="s:0", shard="s", index=0, key="0", url=url)
        for index in range(1, 512):  # rows with nothing to fetch, read slowly: the first request ends
            if index == 256:
                time.sleep(0.3)
            yield Item(row_id=f"s:{index}", shard="s", index=index, key=str(index), status=Status.NO_IMAGE)
        yield Item(row_id="s:512", shard="s", index=512, key="512", url=url + "?again")

    fetcher = Fetcher(FetchOptions(per_domain_rate=1.0, allow_private=True), "test")
    assert len(list(fetcher.fetch(rows()))) == 513
    first, second = sorted(t for _, _, t in server.log.requests)
    assert second - first >= 0.95


def test_domain_banks_are_optouts_before_any_request(server, images, tmp_path, home):
    name = sorted(images)[0]
    meta = tmp_path / "meta.csv"
    write_meta(meta, [server.url(f"/img/{name}", host="127.0.0.2"), server.url(f"/img/{name}")])
    write_lines(tmp_path / "domains.txt", ["127.0.0.2"])
    assert run_cli("bank", "add", "optout", tmp_path / "domains.txt", "--type", "domain", home=home).exit_code == 0
    out = tmp_path / "out"
    assert run_cli("scan", meta, "--out", out, "--fetch", *LOOPBACK, "-q", home=home).exit_code == 0
    found = results_by_url(out)
    blocked = found[server.url(f"/img/{name}", host="127.0.0.2")]
    assert (blocked["status"], blocked["error"], blocked["decision"]) == (
        "skipped_optout",
        "listed domain (optout)",
        "remove",
    )
    assert server.log.times("127.0.0.2") == [] and len(server.log.times("127.0.0.1")) == 1


def test_a_rerun_fetches_nothing_again(server, images, tmp_path, home):
    names = sorted(images)
    meta = tmp_path / "meta.csv"
    write_meta(meta, [server.url(f"/img/{n}") for n in names[:5]])
    args = ("scan", meta, "--out", tmp_path / "out", "--fetch", *LOOPBACK, "-q")
    assert run_cli(*args, home=home).exit_code == 0
    requests = len(server.log.requests)
    assert requests == 5
    assert run_cli(*args, home=home).exit_code == 0
    assert len(server.log.requests) == requests


def test_save_images_writes_kept_images_only_and_nothing_flagged_anywhere(server, images, tmp_path, home):
    names = sorted(images)[:8]
    listed = names[3]
    meta = tmp_path / "meta.csv"
    write_meta(meta, [server.url(f"/img/{n}") for n in names] + [server.url("/status/404")])
    write_lines(tmp_path / "md5.txt", [hashlib.md5(images[listed]).hexdigest()])
    assert run_cli("bank", "add", "md5", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "SAFESET_HOME": str(home), "TMPDIR": str(scratch)}
    argv = [sys.executable, "-m", "safeset", "scan", str(meta), "--out", str(out), "--fetch", "--save-images"]
    proc = subprocess.run([*argv, *LOOPBACK, "--workers", "1"], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"fetched" in proc.stderr and b"ok 89%" in proc.stderr  # the progress bar's fetch line

    with tarfile.open(out / "clean" / "meta.csv.images" / "00000.tar") as tar:
        saved = [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]
    assert sorted(saved) == sorted(images[n] for n in names if n != listed)
    rows = pq.read_table(out / "clean" / "meta.csv.images" / "00000.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["success"] * 7 + ["failed_to_download"]  # the 404, kept
    assert rows[-1]["error_message"] == "fetch_failed: http_404"

    data = images[listed]  # the whole file, and windows of its entropy-coded data (headers are shared)
    needles = [data] + [data[i : i + 64] for i in (len(data) // 3, len(data) // 2, len(data) - 80)]
    written = [p for p in [*out.rglob("*"), *scratch.rglob("*")] if p.is_file()]
    assert len(written) > 10
    for needle in needles:
        assert not [p for p in written if needle in p.read_bytes()]
        assert needle not in proc.stdout + proc.stderr


def test_a_decide_round_keeps_saved_images_of_kept_rows_only_and_fetches_nothing(server, images, tmp_path, home):
    """--save-images, then a round with another list: an image removed now leaves the saved shard;
    one kept now that was removed when fetched has no image (never downloaded again), and says so."""
    names = sorted(images)[:6]
    meta = tmp_path / "meta.csv"
    write_meta(meta, [server.url(f"/img/{n}") for n in names])
    for bank, name in (("first", names[1]), ("second", names[4])):
        write_lines(tmp_path / f"{bank}.txt", [hashlib.md5(images[name]).hexdigest()])
        assert run_cli("bank", "add", bank, tmp_path / f"{bank}.txt", "--type", "md5", home=home).exit_code == 0
    out = tmp_path / "out"
    args = ("--fetch", "--save-images", *LOOPBACK, "-q")
    assert run_cli("scan", meta, "--out", out, "--bank", "first", *args, home=home).exit_code == 0
    requests = len(server.log.requests)

    result = run_cli("decide", out, "--bank", "second", "-q", home=home)
    assert result.exit_code == 0, result.output
    assert len(server.log.requests) == requests  # nothing fetched again
    with tarfile.open(out / "clean" / "meta.csv.images" / "00000.tar") as tar:
        saved = [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]
    assert sorted(saved) == sorted(images[n] for n in names if n not in (names[1], names[4]))
    rows = {
        r["url"].rsplit("/", 1)[1]: r
        for r in pq.read_table(out / "clean" / "meta.csv.images" / "00000.parquet").to_pylist()
    }
    assert rows.keys() == set(names) - {names[4]}
    assert rows[names[1]]["status"] == "failed_to_download" and "not saved" in rows[names[1]]["error_message"]
    assert read_json(out / "report.json")["rounds"][-1]["transitions"] == {
        "keep->remove": {"match:second:md5": 1},
        "remove->keep": {"match:first:md5": 1},
    }


def test_retry_failed_with_another_list_decides_the_carried_rows_again(server, images, tmp_path, home):
    """`--retry-failed` carries over the rows that did not fail; run with a list added since,
    they are matched against it too (they used to keep their old decisions)."""
    names = sorted(images)[:4]
    urls = [server.url(f"/img/{names[0]}"), server.url(f"/flaky/x/{names[1]}"), server.url(f"/img/{names[2]}")]
    meta = tmp_path / "meta.csv"
    write_meta(meta, urls)
    write_lines(tmp_path / "none.txt", ["0" * 32])
    write_lines(tmp_path / "later.txt", [hashlib.md5(images[names[2]]).hexdigest()])
    for bank in ("none", "later"):
        assert run_cli("bank", "add", bank, tmp_path / f"{bank}.txt", "--type", "md5", home=home).exit_code == 0
    out = tmp_path / "out"
    args = ("scan", meta, "--out", out, "--fetch", *LOOPBACK, "--fetch-retries", "0", "-q")
    assert run_cli(*args, "--bank", "none", home=home).exit_code == 0
    assert results_by_url(out)[urls[1]]["error"] == "http_503"
    again = run_cli(*args, "--retry-failed", "--bank", "none", "--bank", "later", home=home)
    assert again.exit_code == 0, again.output
    found = results_by_url(out)
    assert found[urls[1]]["status"] == "ok"  # fetched again
    assert found[urls[2]]["decision"] == "remove"  # carried over, and decided with the new list
    assert [m["bank"] for m in found[urls[2]]["matches"]] == ["later"]


def test_many_rows_all_come_back(server, images, tmp_path, home):
    """More rows than the hand-over queues hold: every one still ends in the results, once."""
    names = sorted(images)
    urls = [server.url(f"/img/{names[i % len(names)]}?n={i}", host=HOSTS[i % 4]) for i in range(1500)]
    meta = tmp_path / "meta.csv"
    write_meta(meta, urls)
    result = run_cli(
        "scan",
        meta,
        "--out",
        tmp_path / "out",
        "--fetch",
        *LOOPBACK,
        "--per-domain-rate",
        "1000",
        "--per-domain-concurrency",
        "16",
        "--workers",
        "1",
        "-q",
        home=home,
    )
    assert result.exit_code == 0, result.output
    found = results_by_url(tmp_path / "out")
    assert len(found) == 1500 and {r["status"] for r in found.values()} == {"ok"}


@pytest.mark.parametrize("remote_out", [False, True], ids=["local-out", "uri-out"])
def test_retry_failed_fetches_again_only_the_failures_that_may_pass(server, images, tmp_path, home, remote_out):
    """img2dataset users re-download whole datasets to fill in what failed; `--retry-failed`
    fetches only the rows that failed for a passing reason (here a 503), carries every other
    row over, and ends where an uninterrupted run with no failures would have."""
    names = sorted(images)[:10]
    listed = names[7]

    def img(i: int) -> str:
        return server.url(f"/img/{names[i]}")

    def flaky(key: str, i: int) -> str:  # a 503 on the first request, then the image
        return server.url(f"/flaky/{key}/{names[i]}")

    urls = [img(0), flaky("a", 1), img(2), server.url("/status/404")]  # shard 0
    urls += [img(4), img(5), img(6), img(3)]  # shard 1: nothing that may pass failed
    urls += [flaky("b", 8), flaky("c", 7), img(9)]  # shard 2: the listed image behind a 503
    meta = tmp_path / "meta.csv"
    write_meta(meta, urls)
    write_lines(tmp_path / "md5.txt", [hashlib.md5(images[listed]).hexdigest()])
    assert run_cli("bank", "add", "md5", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    out = tmp_path / "out"
    target = f"file://{out}" if remote_out else out
    args = ("scan", meta, "--fetch", "--save-images", *LOOPBACK, "--fetch-retries", "0", "--table-rows", "4", "-q")

    assert run_cli(*args, "--out", target, home=home).exit_code == 0
    first = results_by_url(out)
    assert [first[urls[i]]["error"] for i in (1, 3, 8, 9)] == ["http_503", "http_404", "http_503", "http_503"]

    before = len(server.log.requests)
    again = run_cli(*args, "--out", target, "--retry-failed", home=home)
    assert again.exit_code == 0, again.output
    asked = sorted(path for _, path, _ in server.log.requests[before:])
    assert asked == sorted(urlsplit(urls[i]).path for i in (1, 8, 9))
    retried = results_by_url(out)
    assert retried[urls[1]]["status"] == "ok" and retried[urls[8]]["decision"] == "keep"
    assert retried[urls[9]]["decision"] == "remove" and retried[urls[9]]["matches"][0]["bank"] == "md5"
    assert retried[urls[3]]["error"] == "http_404"  # not a failure that passes: not asked again
    assert {u: r for u, r in retried.items() if u not in (urls[1], urls[8], urls[9])} == {
        u: r for u, r in first.items() if u not in (urls[1], urls[8], urls[9])
    }
    report = read_json(out / "report.json")
    assert report["timings"]["shards_resumed"] == 1 and report["timings"]["rows_refetched"] == 3
    # img2dataset's keys: the part's number, then the row's place in the part, at fixed widths
    keys = pq.read_table(out / "clean" / "meta.csv.images" / "00001.parquet")["key"].to_pylist()
    assert keys == [f"00001{i:04d}" for i in range(4)]

    # the same as a run that met no 503 at all (the flaky paths now answer at once)
    fresh = tmp_path / "fresh"
    assert run_cli(*args, "--out", fresh, home=home).exit_code == 0
    for part in sorted((fresh / "results").iterdir()):
        assert (out / "results" / part.name).read_bytes() == part.read_bytes(), part.name
    for table in sorted(p for p in (fresh / "clean").rglob("*.csv") if p.is_file()):
        assert (out / table.relative_to(fresh)).read_bytes() == table.read_bytes()
    for tar in sorted((fresh / "clean").rglob("*.tar")):
        assert saved_images(out / tar.relative_to(fresh)) == saved_images(tar)
    fresh_report = read_json(fresh / "report.json")
    assert report["totals"] == fresh_report["totals"] and report["reasons"] == fresh_report["reasons"]
    assert report["fetch"]["outcomes"] == fresh_report["fetch"]["outcomes"] == {"ok": 10, "http_404": 1}
    assert report["fetch"]["requests"] == 14  # 11, then the three 503s fetched again

    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if images[listed] in p.read_bytes()]  # zero view
    before = len(server.log.requests)
    assert run_cli(*args, "--out", target, "--retry-failed", home=home).exit_code == 0
    assert len(server.log.requests) == before  # a 404 is not asked again


def saved_images(tar_path) -> dict[str, bytes]:
    """url -> image bytes of an img2dataset shard (KEY.jpg beside KEY.json)."""
    with tarfile.open(tar_path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    keys = [name.removesuffix(".json") for name in members if name.endswith(".json")]
    return {json.loads(members[f"{key}.json"])["url"]: members[f"{key}.jpg"] for key in keys}


def test_saved_images_are_an_img2dataset_shard_as_img2dataset_writes_it(server, images, tiles, tmp_path, home):
    """--save-images: only images that decoded are saved (a page served as image/jpeg is not, an
    image served as text/plain is); the
    parquet keeps the input's own columns and the images' real sizes; keys are img2dataset's,
    fixed-width; two tables of one stem keep their own shards; rows come in input order whatever
    order the downloads finished in, so two runs write the same bytes."""
    names = sorted(images)[:6]
    slow_first = [server.url(f"/slow/{names[0]}", host="127.0.0.2")] + [server.url(f"/img/{n}") for n in names[1:]]
    rows = slow_first + [server.url("/mislabelled"), server.url(f"/as-text/{names[1]}"), server.url("/html")]
    header = "URL,TEXT,punsafe,WIDTH"
    lines = [f"{u},caption {i},0.0{i},640" for i, u in enumerate(rows)]
    write_lines(tmp_path / "x.csv", [header, *lines])
    (tmp_path / "x.jsonl").write_text(json.dumps({"URL": rows[1], "TEXT": "again"}) + "\n")
    policy = tmp_path / "keep.toml"
    policy.write_text('[unchecked]\nunsupported_media = "keep"\n')  # keep the page: its row, not its bytes
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = ["scan", tmp_path / "x.csv", tmp_path / "x.jsonl", "--out", out, "--fetch", "--save-images", *LOOPBACK]
        assert run_cli(*args, "--policy", policy, "-q", home=home).exit_code == 0
        outs.append(out)
    shard = outs[0] / "clean" / "x.csv.images"
    saved = pq.read_table(shard / "00000.parquet").to_pylist()
    assert [r["key"] for r in saved] == [f"00000{i:05d}" for i in range(9)]  # 100,000 rows a part: 5 digits
    assert [r["status"] for r in saved] == ["success"] * 6 + ["failed_to_download", "success", "failed_to_download"]
    assert [saved[i]["error_message"] for i in (6, 8)] == ["unsupported_media: html", "fetch_failed: not_image"]
    assert [(r["URL"], r["punsafe"], r["WIDTH"], r["caption"]) for r in saved[:2]] == [
        (rows[0], "0.00", "640", "caption 0"),  # as a CSV holds them: text
        (rows[1], "0.01", "640", "caption 1"),
    ]
    assert (saved[0]["width"], saved[0]["height"]) == tiles[0][1].size
    with tarfile.open(shard / "00000.tar") as tar:
        members = tar.getnames()
    assert members[:3] == ["0000000000.jpg", "0000000000.txt", "0000000000.json"] and len(members) == 21
    assert (outs[0] / "clean" / "x.jsonl.images" / "00000.tar").is_file()
    for name in ("x.csv.images/00000.tar", "x.csv.images/00000.parquet", "x.jsonl.images/00000.tar"):
        assert (outs[0] / "clean" / name).read_bytes() == (outs[1] / "clean" / name).read_bytes(), name


def test_fetch_and_save_images_leave_a_webdataset_input_as_it_is(tiles, tmp_path, home):
    """--fetch --save-images over tars (which hold their images) crashed; the clean release keeps
    img2dataset's stats file beside each shard."""
    from helpers import make_shards, samples_from

    shards = make_shards(tmp_path / "shards", [samples_from(tiles[:4])])
    out = tmp_path / "out"
    assert run_cli("scan", shards, "--out", out, "--fetch", "--save-images", "-q", home=home).exit_code == 0
    clean = out / "clean" / "shards"
    assert sorted(p.name for p in clean.iterdir()) == ["00000.parquet", "00000.tar", "00000_stats.json"]
    assert read_json(clean / "00000_stats.json") == read_json(shards / "00000_stats.json")  # written again
    assert read_json(out / "report.json")["fetch"]["requests"] == 0  # nothing was downloaded
