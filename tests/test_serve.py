"""`safeset serve`: a real server process on loopback, real HTTP requests (urllib, and raw sockets
where a client would refuse to send what a hostile one sends), benign stand-ins on the lists."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from helpers import bomb_png, write_lines
from PIL import Image

import safeset
from safeset.banks.verdicts import entry_tag
from safeset.demo import jpeg

TOKEN = "test-token-" + "x" * 16
ADMIN = "admin-token-" + "y" * 16


class Server:
    """`safeset serve` in its own process; its address from the line it prints when ready."""

    def __init__(self, home: Path, tmp: Path, *args: str):
        tokens, admins = tmp / "tokens", tmp / "admin-tokens"
        tokens.write_text(f"# check and lookup\n{TOKEN}\n")
        admins.write_text(f"{ADMIN}\n")
        for path in (tokens, admins):
            path.chmod(0o600)
        self.log = open(tmp / f"serve-{uuid.uuid4().hex[:6]}.log", "w+")  # noqa: SIM115
        argv = [sys.executable, "-m", "safeset", "--home", str(home), "serve", "--port", "0"]
        argv += ["--token-file", str(tokens), "--admin-token-file", str(admins), *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert line, f"the server did not start: {Path(self.log.name).read_text()[-3000:]}"
        self.url = json.loads(line)["serving"]["url"]

    def request(self, path: str, data: bytes | None = None, token: str | None = TOKEN, **headers) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"text": body.decode(errors="replace")}

    def check(self, image: bytes, query: str = "", **headers) -> tuple[int, dict]:
        return self.request(f"/v1/check{query}", image, **{"Content-Type": "image/jpeg", **headers})

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        self.log.close()
        return code


@pytest.fixture
def listed(tmp_path, home, tiles):
    """A bank home whose lists hold tile 0's MD5, tile 1's PDQ and a URL."""
    store = safeset.BankStore(home)
    md5 = hashlib.md5(jpeg(tiles[0][1])).hexdigest()
    store.add("hotline", write_lines(tmp_path / "md5.txt", [f"md5 {md5}"]))
    store.add("perceptual", write_lines(tmp_path / "pdq.txt", [f"pdq {safeset.pdq(tiles[1][1])}"]))
    store.add("urls", write_lines(tmp_path / "urls.txt", ["https://listed.example.org/x.jpg"]), type_name="url")
    return md5


@pytest.fixture
def server(listed, home, tmp_path):
    running = Server(home, tmp_path)
    yield running
    running.stop()


def test_check_and_lookup_answer_with_hashes_and_tags_never_listed_values(server, listed, tiles):
    image = jpeg(tiles[0][1])
    status, found = server.check(image)
    assert status == 200 and found["decision"] == "remove" and found["md5"] == hashlib.md5(image).hexdigest()
    assert [(m["bank"], m["signal_type"], m["entry"]) for m in found["matches"]] == [
        ("hotline", "md5", entry_tag(listed))
    ]
    assert listed not in json.dumps(found["matches"]) and found["reasons"] == ["match:hotline:md5"]

    small = tiles[1][1].resize((tiles[1][1].width // 2, tiles[1][1].height // 2), Image.Resampling.LANCZOS)
    boundary = "b0undary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="url"\r\n\r\nhttps://elsewhere.example.org/y.jpg\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="y.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg(small, 80)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, copy = server.request("/v1/check", form, **{"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and copy["decision"] == "remove"
    assert [m["bank"] for m in copy["matches"]] == ["perceptual"] and copy["matches"][0]["distance"] > 0
    assert str(safeset.pdq(tiles[1][1])) not in json.dumps(copy)  # the listed PDQ, by tag only
    status, by_url = server.check(jpeg(tiles[5][1]), "?url=https%3A%2F%2Flisted.example.org%2Fx.jpg")
    assert status == 200 and by_url["reasons"] == ["match:urls:url"]
    status, benign = server.check(jpeg(tiles[6][1]))
    assert status == 200 and benign["decision"] == "keep" and benign["matches"] == []

    body = {"hashes": [{"type": "md5", "value": listed.upper()}, {"type": "pdq", "value": copy["pdq"]},
                       {"type": "url", "value": "https://listed.example.org/x.jpg"}, {"type": "md5", "value": "0" * 32},
                       {"type": "pdq", "value": "zz"}]}  # fmt: skip
    status, looked = server.request("/v1/lookup", json.dumps(body).encode(), **{"Content-Type": "application/json"})
    assert status == 200
    results = looked["results"]
    assert [bool(r.get("matches")) for r in results] == [True, True, True, False, False]
    assert "error" in results[4] and results[3]["decision"] == "keep"
    status, same = server.request("/v1/lookup", json.dumps({"md5": [listed]}).encode())
    assert status == 200 and same["results"][0]["matches"][0]["bank"] == "hotline"

    status, banks = server.request("/v1/banks")
    assert status == 200 and {b["name"] for b in banks["banks"] if b["in_use"]} == {"hotline", "perceptual", "urls"}
    status, health = server.request("/v1/health", token=None)
    assert status == 200 and health["status"] == "ok"
    status, spec = server.request("/openapi.json", token=None)
    assert status == 200 and {"/v1/check", "/v1/lookup", "/metrics", "/v1/verdicts", "/m/lookup"} <= set(spec["paths"])
    from openapi_spec_validator import validate

    validate(spec)  # a valid OpenAPI 3 document
    status, metrics = server.request("/metrics")
    text = metrics["text"]
    assert 'safeset_matches_total{bank="hotline"' in text
    assert 'safeset_requests_total{route="/v1/check",status="200"} 4' in text
    assert "safeset_request_seconds_bucket" in text


def _counted(server: Server, name: str) -> int:
    text = server.request("/metrics")[1]["text"]
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_metrics_count_every_worker_and_survive_a_worker_killed(listed, home, tmp_path, tiles):
    """A scrape reaches one worker, yet counts the whole server's requests; a worker that dies is
    replaced from its totals, so no counter goes back (Prometheus would read a drop as a reset)."""
    before = set(Path("/dev/shm").glob("safeset-serve-*"))
    server = Server(home, tmp_path, "--workers", "2")
    checks = 'safeset_requests_total{route="/v1/check",status="200"}'
    try:
        for i in range(12):  # a connection each: the kernel spreads them over both workers
            assert server.check(jpeg(tiles[i % 8][1]))[0] == 200
        time.sleep(1.5)  # each worker saves its totals every second
        assert [_counted(server, checks) for _ in range(8)] == [12] * 8

        # one client on a kept-alive connection loads one worker only; scrapes, on new connections,
        # reach both: the count they show never goes back (Prometheus would read a reset)
        import http.client

        stop = threading.Event()

        def pinned():
            connection = http.client.HTTPConnection(server.url.split("//")[1])
            while not stop.is_set():
                connection.request("GET", "/v1/health")
                connection.getresponse().read()
            connection.close()

        client = threading.Thread(target=pinned)
        client.start()
        try:
            health = 'safeset_requests_total{route="/v1/health",status="200"}'
            seen = [_counted(server, health) for _ in range(40)]
        finally:
            stop.set()
            client.join()
        assert seen == sorted(seen) and seen[-1] > seen[0], seen
        assert _counted(server, "safeset_matches_total") >= 2  # tiles 0 and 1, listed, each checked twice
        workers = _workers(server)
        os.kill(int(workers[0]), signal.SIGKILL)
        assert _wait_for(lambda: len(now := _workers(server)) == 2 and workers[0] not in now, 30)  # replaced
        assert server.check(jpeg(tiles[3][1]))[0] == 200
        time.sleep(1.5)
        assert min(_counted(server, checks) for _ in range(8)) >= 12  # what the killed one saved, kept
    finally:
        assert server.stop() == 0
    assert set(Path("/dev/shm").glob("safeset-serve-*")) == before  # the workers' totals go with the server


def _workers(server: Server) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()


def test_tokens_limits_and_hostile_uploads(listed, home, tmp_path, tiles):
    server = Server(home, tmp_path, "--max-body", "200000")
    try:
        image = jpeg(tiles[0][1])
        assert server.check(image, token=None)[0] == 401
        assert server.check(image, token="wrong-" + TOKEN)[0] == 401
        assert server.request("/v1/banks/x/entries", b"md5 " + b"0" * 32, token=TOKEN)[0] == 401  # no admin token
        status, _ = server.check(b"\xff\xd8" + os.urandom(300_000))
        assert status == 413
        form = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + os.urandom(300_000) + b"\r\n--b--\r\n"
        multipart = {"Content-Type": "multipart/form-data; boundary=b"}
        assert server.request("/v1/check", form, **multipart)[0] == 413  # a form's part is capped too
        assert server.request("/h/hash", form.replace(b'name="image"', b'name="photo"'), **multipart)[0] == 413
        started = time.monotonic()
        status, bomb = server.check(bomb_png(), **{"Content-Type": "image/png"})
        assert status == 422 and bomb["status"] == "decode_failed" and bomb["error"] and bomb["md5"]
        assert time.monotonic() - started < 30  # bounded work: refused from its header, never decoded
        wide = Image.new("RGB", (40_000, 8), "white")
        status, too_wide = server.check(jpeg(wide), **{"Content-Type": "image/jpeg"})
        assert status == 422 and too_wide["status"] == "decode_failed"
        status, text = server.check(b"plain text, no image at all", **{"Content-Type": "text/plain"})
        assert status == 422 and text["status"] == "unsupported_media"
        assert server.check(b"")[0] == 400
        secret = b'{"hashes": [{"type": "md5", "value": "SECRET-VALUE' + bytes([0xFF])
        status, answer = server.request("/v1/lookup", secret, **{"Content-Type": "application/json"})
        assert status == 400 and "SECRET" not in json.dumps(answer)
        status, answer = server.request("/v1/lookup", json.dumps({"sha512": ["ab"]}).encode())
        assert status == 400 and "sha512" in answer["error"]
    finally:
        assert server.stop() == 0

    # beyond loopback only with tokens: refused before anything listens
    tokens_free = subprocess.run(
        [sys.executable, "-m", "safeset", "--home", str(home), "serve", "--host", "192.0.2.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tokens_free.returncode == 2 and "--token-file" in tokens_free.stderr
    loose = tmp_path / "loose"
    loose.write_text(TOKEN + "\n")
    loose.chmod(0o644)
    refused = subprocess.run(
        [sys.executable, "-m", "safeset", "--home", str(home), "serve", "--token-file", str(loose)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "chmod 600" in refused.stderr


def test_a_bank_added_while_serving_takes_effect_with_no_request_dropped(listed, home, tmp_path, tiles):
    """Two workers under steady requests; a list is added: within 10 s every worker removes the
    newly listed image, and not one request failed meanwhile."""
    server = Server(home, tmp_path, "--workers", "2", "--reload-seconds", "0.5")
    image = jpeg(tiles[7][1])
    outcomes: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            status, found = server.check(image)
            outcomes.append((time.monotonic(), status, found.get("decision", "")))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        write_lines(tmp_path / "new.txt", [f"md5 {hashlib.md5(image).hexdigest()}"])
        added = time.monotonic()
        safeset.BankStore(home).add("late", tmp_path / "new.txt")
        time.sleep(6)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert server.stop() == 0
    assert outcomes and all(status == 200 for _, status, _ in outcomes)
    before = [d for t, _, d in outcomes if t < added]
    assert before and set(before) == {"keep"}
    last_keep = max((t for t, _, d in outcomes if d == "keep"), default=added)
    assert last_keep - added < 10
    assert [d for t, _, d in outcomes if t > added + 5] and {d for t, _, d in outcomes if t > added + 5} == {"remove"}


def test_uploads_leave_no_trace_and_shutdown_finishes_what_is_in_flight(listed, home, tmp_path, tiles):
    """An upload's bytes are in no file the server writes and in no log line; SIGTERM lets the
    requests in flight finish before the server exits."""
    server = Server(home, tmp_path, "--workers", "2")
    image = jpeg(tiles[0][1])
    large = jpeg(Image.new("RGB", (3000, 2000), "white").resize((3000, 2000)), 95)  # some work to be in flight
    answers: list[int | str] = []

    def upload(data):
        try:
            answers.append(server.check(data)[0])
        except urllib.error.URLError as exc:  # sent after the server stopped listening
            answers.append(type(exc.reason).__name__)

    threads = [threading.Thread(target=upload, args=(d,)) for d in [image, *[large] * 7]]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert server.stop() == 0
    for thread in threads:
        thread.join(timeout=60)
    # what was being answered was answered; nothing was cut off half way
    assert 200 in answers and set(answers) <= {200, "ConnectionRefusedError"}, answers
    marker = image[len(image) // 2 : len(image) // 2 + 48]
    for path in [*home.rglob("*"), *tmp_path.glob("serve-*.log")]:
        if path.is_file():
            assert marker not in path.read_bytes(), path


def _wait_for(probe, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while not (found := probe()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_admin_adds_hashes_disables_banks_and_imports_verdicts(listed, home, tmp_path, tiles):
    """With the admin token: hashes added to a bank, a bank disabled, a false positive imported;
    each taken in by the workers within the reload interval. Without it: 401, nothing changed."""
    server = Server(home, tmp_path, "--reload-seconds", "0.3")
    try:
        image = jpeg(tiles[9][1])
        digest = hashlib.md5(image).hexdigest()
        assert server.request("/v1/banks/fresh/entries", f"md5 {digest}\n".encode())[0] == 401
        assert "fresh" not in safeset.BankStore(home).names()
        status, added = server.request(
            "/v1/banks/fresh/entries?label=from+the+api", f"md5 {digest}\nmd5 nope\n".encode(), token=ADMIN
        )
        assert status == 200 and added["added"] == 1 and [b["line"] for b in added["bad_lines"]] == [2]
        assert "nope" not in json.dumps(added)
        assert _wait_for(lambda: server.check(image)[1]["decision"] == "remove")

        status, switched = server.request("/v1/banks/fresh/disable", b"", token=ADMIN)
        assert status == 200 and switched["enabled"] is False
        assert _wait_for(lambda: server.check(image)[1]["decision"] == "keep")
        assert server.request("/v1/banks/nosuch/enable", b"", token=ADMIN)[0] == 404

        listed_image = jpeg(tiles[0][1])
        verdict = f"md5,verdict\n{hashlib.md5(listed_image).hexdigest()},false_positive\n".encode()
        status, taken = server.request(
            "/v1/verdicts?verifier=hotline", verdict, token=ADMIN, **{"Content-Type": "text/csv"}
        )
        assert status == 200 and taken["verdicts"] == {"false_positive": 1}
        assert _wait_for(lambda: server.check(listed_image)[1]["reasons"] == ["verdict:false_positive"])
        status, bad = server.request("/v1/verdicts", b"md5,verdict\nzz,maybe\n", token=ADMIN)
        assert status == 400 and "line 2" in bad["error"] and "maybe" not in bad["error"]
        assert not list((home / ".incoming").iterdir())  # bodies passed through, none kept
    finally:
        assert server.stop() == 0


# HMA's own answers, as HMA 1.1.7 (ThreatExchange baefb4ed, run from its source with Postgres 15 by
# benchmarks/hma.sh) gave them to the same requests: the shapes and value types ours must have.
HMA_ANSWERS = {
    "/h/hash": {"pdq": "ce8554e8786d8d84b949e386176cb854aa8fdbb1ce2f51eabe1c28ec06b27153"},
    "/m/lookup GET": {"KNOWN_BANK": [{"bank_content_id": 1003, "distance": "2"}]},
    "/m/lookup miss": {},
    "/m/raw_lookup": {"matches": [1003]},
    "/m/raw_lookup include_distance": {"matches": [{"bank_content_id": 1003, "distance": "2"}]},
    "/m/raw_lookup miss": {"matches": []},
    "/c/banks": [{"matching_enabled_ratio": 1.0, "name": "KNOWN_BANK"}],
    "bad signal": {"message": "invalid signal: invalid PDQ hash"},
    "bad type": {"message": "No such SignalType 'nope'"},
}


_HMA_FIELDS = {"pdq", "matches", "bank_content_id", "distance", "name", "matching_enabled_ratio", "message"}


def _shape(value):
    """A JSON value with every leaf replaced by its type, and banks' names (as keys) by "BANK"."""
    if isinstance(value, dict):
        return {(k if k in _HMA_FIELDS else "BANK"): _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


def test_hma_routes_answer_as_hma_itself_does(server, listed, tiles, tmp_path):
    """The requests HMA's clients send, answered in the shapes HMA itself gave (`HMA_ANSWERS`)."""
    import socket

    listed_pdq = str(safeset.pdq(tiles[1][1]))
    tag = int(entry_tag(listed_pdq), 16)
    status, alive = server.request("/status", token=None)
    assert status == 200 and alive == {"text": "I-AM-ALIVE\n"}
    boundary = "hma"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="example.png"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg(tiles[1][1])
        + f"\r\n--{boundary}--\r\n".encode()
    )
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, hashed = server.request("/h/hash", form, **multipart)
    assert status == 200 and _shape(hashed) == _shape(HMA_ANSWERS["/h/hash"]) and len(hashed["pdq"]) == 64
    status, found = server.request(f"/m/lookup?signal_type=pdq&signal={listed_pdq}")
    assert status == 200 and found == {"perceptual": [{"bank_content_id": tag, "distance": "0"}]}
    assert _shape(found) == _shape(HMA_ANSWERS["/m/lookup GET"])
    assert server.request(f"/m/lookup?signal_type=pdq&signal={listed_pdq}&banks=hotline,urls") == (200, {})
    assert server.request(f"/m/lookup?signal_type=pdq&signal={listed_pdq}&banks=perceptual")[1] == found
    unlisted = hashlib.sha256(b"no listed image").hexdigest()
    assert server.request(f"/m/lookup?signal_type=pdq&signal={unlisted}") == (200, HMA_ANSWERS["/m/lookup miss"])
    status, both = server.request("/m/lookup", form, **multipart)
    assert status == 200 and list(both) == ["pdq"] and both["pdq"]["perceptual"][0]["bank_content_id"] == tag
    status, raw = server.request(f"/m/raw_lookup?signal_type=pdq&signal={listed_pdq}")
    assert status == 200 and raw == {"matches": [tag]} and _shape(raw) == _shape(HMA_ANSWERS["/m/raw_lookup"])
    status, near = server.request(f"/m/raw_lookup?signal_type=pdq&signal={listed_pdq}&include_distance=true")
    assert near == {"matches": [{"bank_content_id": tag, "distance": "0"}]}
    assert _shape(near) == _shape(HMA_ANSWERS["/m/raw_lookup include_distance"])
    assert server.request(f"/m/raw_lookup?signal_type=pdq&signal={unlisted}")[1] == HMA_ANSWERS["/m/raw_lookup miss"]
    assert server.request("/m/lookup?signal_type=pdq&signal=zz") == (400, HMA_ANSWERS["bad signal"])
    assert server.request(f"/m/lookup?signal_type=nope&signal={listed_pdq}") == (400, HMA_ANSWERS["bad type"])
    status, banks = server.request("/c/banks")
    assert status == 200 and {"name": "hotline", "matching_enabled_ratio": 1.0} in banks
    assert _shape(banks) == _shape(HMA_ANSWERS["/c/banks"])

    # hashing by URL would fetch: refused, and nothing is asked of the URL's server
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(1.0)
    port = listener.getsockname()[1]
    for route in ("/h/hash", "/m/lookup"):
        status, refused = server.request(f"{route}?url=http%3A%2F%2F127.0.0.1%3A{port}%2Fx.png")
        assert status == 501 and "fetches nothing" in refused["message"]
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()


def test_a_token_past_its_rate_gets_429_with_retry_after(listed, home, tmp_path, tiles):
    server = Server(home, tmp_path, "--rate-limit", "2")
    try:
        request = urllib.request.Request(server.url + "/v1/banks", headers={"Authorization": f"Bearer {TOKEN}"})
        codes, retry = [], None
        for _ in range(8):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    codes.append(response.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
                retry = exc.headers.get("Retry-After")
        assert codes[:2] == [200, 200] and 429 in codes and int(retry) >= 1
        assert server.request("/v1/health", token=None)[0] == 200  # never limited
        time.sleep(1.2)
        assert server.request("/v1/banks")[0] == 200  # the bucket fills again
    finally:
        assert server.stop() == 0


def _raw(server: Server, request: bytes, wait: float = 10.0) -> bytes:
    """What the server answers to bytes sent as they are, for what no HTTP client would send."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(server.url)
    with socket.create_connection((where.hostname, where.port), timeout=wait) as conn:
        conn.sendall(request)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


def test_what_a_parser_refuses_is_not_quoted_back_or_logged(listed, home, tmp_path, tiles):
    """A chunked body whose sizes lie, a Content-Length shorter than the body, an Authorization
    header that is not UTF-8, a form that is no form: each refused in our own words, and the
    upload's bytes in neither the answer nor the log."""
    server = Server(home, tmp_path, "--body-seconds", "2")
    image = jpeg(tiles[0][1])
    marker = image[len(image) // 2 : len(image) // 2 + 48]
    head = (
        f"POST /v1/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: image/jpeg\r\n"
    )
    try:
        lying = _raw(server, (head + "Transfer-Encoding: chunked\r\n\r\n3e8\r\n").encode() + image)
        short = _raw(server, (head + "Content-Length: 10\r\n\r\n").encode() + image)
        odd = _raw(server, b"POST /v1/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Authorization: Bearer \xff\xfe\r\nContent-Length: 3\r\n\r\nabc")  # fmt: skip
        form = b"--b\r\nContent-Disposition: form-data; name=image\r\n" + image  # no blank line, no end
        broken = _raw(server, (head.replace("image/jpeg", "multipart/form-data; boundary=b")
                               + f"Content-Length: {len(form)}\r\n\r\n").encode() + form)  # fmt: skip
        trickled = _raw(server, (head + f"Content-Length: {len(image)}\r\n\r\n").encode() + image[:100])
    finally:
        assert server.stop() == 0
    for answer in (lying, short, odd, broken, trickled):
        assert answer and marker not in answer and b"\\x" not in answer, answer[:300]
    assert (
        odd.startswith(b"HTTP/1.1 401") and broken.startswith(b"HTTP/1.1 400") and trickled.startswith(b"HTTP/1.1 408")
    )
    assert lying.split(b"\r\n")[0].endswith(b"400 Bad Request")
    log = Path(server.log.name).read_bytes()
    assert marker not in log and b"\\x" not in log and b"Traceback" not in log


def test_made_up_tokens_share_their_address_bucket_and_a_killed_parent_takes_its_workers(listed, home, tmp_path):
    server = Server(home, tmp_path, "--rate-limit", "2", "--workers", "2")
    codes = [server.request("/v1/banks", token=f"made-up-{i}-" + "z" * 16)[0] for i in range(8)]
    assert codes[0] == 401 and 429 in codes  # a new made-up token is no new caller
    port = server.url.rsplit(":", 1)[1]
    second = subprocess.run(
        [sys.executable, "-m", "safeset", "--home", str(home), "serve", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2 and "cannot listen" in second.stderr  # not a second server sharing the port
    workers = _workers(server)
    assert len(workers) == 2
    left = list(Path("/dev/shm").glob(f"safeset-serve-{server.proc.pid}-*"))
    assert len(left) == 1  # the workers' metrics
    server.proc.kill()
    server.proc.wait(timeout=30)
    assert _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 15)
    server.stop()
    assert left[0].exists()  # a parent killed -9 cannot remove it: the next server does
    Server(home, tmp_path).stop()
    assert not left[0].exists()
