"""The HTTP endpoints of `safeset serve`, and their OpenAPI document.

Zero view: an upload's bytes live in the request's memory until its hashes are taken and are
never written, logged or sent back; answers carry hashes, the banks and tags of the listed
entries that matched (a tag, never the listed value: lists are sensitive), decisions and reasons.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import BodyPartReader, ClientError, web
from aiohttp.http_exceptions import HttpProcessingError

from ..banks import BankStore
from ..banks.verdicts import entry_tag
from ..banks.vpdq import signal_of
from ..model import Status, read_frames
from ..pipeline.check import Auditor
from .app import BadRequest

log = logging.getLogger("safeset.serve")
routes = web.RouteTableDef()

FIELDS = ("md5", "sha1", "sha256", "pdq", "pdq_quality", "status", "error", "decision", "reasons", "signals")
# statuses of an upload that is no image safeset decodes, or one past the decode limits (a video
# not wholly hashed too): 422
_UNPROCESSABLE = {str(Status.DECODE_FAILED), str(Status.UNSUPPORTED_MEDIA), str(Status.VIDEO_INCOMPLETE)}
LOOKUP_TYPES = ("md5", "sha1", "sha256", "pdq", "url")
MAX_LOOKUP = 10_000  # hashes in one lookup request


def _answer(row: dict[str, Any], request: web.Request) -> dict[str, Any]:
    """What a check or lookup answers of a result row: no listed value, tags instead."""
    matches = [
        {
            "bank": m["bank"],
            "signal_type": m["signal_type"],
            "entry": entry_tag(m["entry"]),
            "distance": m["distance"],
            "variant": m["variant"],
            **({k: m[k] for k in ("query_percent", "compared_percent")} if m["signal_type"] == "vpdq" else {}),
        }
        for m in row["matches"]
    ]
    metrics = request.app["metrics"]
    for match in matches:
        metrics.count("safeset_matches_total", bank=match["bank"], signal_type=match["signal_type"])
    answer = {**{k: row.get(k) for k in FIELDS}, "matches": matches, "request_id": request["id"]}
    if row.get("frames") is not None:  # a video: its frames as python-threatexchange's vPDQ signal
        answer["vpdq"] = signal_of(read_frames(row["frames"]))
    return answer


_TEXT_PART = 64 * 1024  # a form's url or caption
MAX_PARTS = 16  # a form's parts: an image and a few fields, not thousands to parse


async def read_part(part, limit: int) -> bytes:
    """A multipart part's bytes, at most `limit` of them (413 beyond): aiohttp's body cap covers
    `read()` of a whole body, not a multipart reader's parts."""
    data = bytearray()
    while chunk := await part.read_chunk(1 << 16):
        data += chunk
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    return bytes(data)


async def form_parts(request: web.Request, wanted: dict[str, int]) -> dict[str, bytes]:
    """The parts of a multipart form named in `wanted` (name: most bytes), the others passed
    over; a form that is not one, is nested or has too many parts is a `BadRequest`."""
    found: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        for _ in range(MAX_PARTS + 1):
            part = await reader.next()
            if part is None:
                return found
            if not isinstance(part, BodyPartReader):
                raise BadRequest("a nested multipart form")
            if part.name in wanted:
                found[part.name] = await read_part(part, wanted[part.name])
    except (ValueError, AssertionError, ClientError, HttpProcessingError, RuntimeError) as exc:  # they quote the form
        raise BadRequest(f"not a multipart form that can be read ({type(exc).__name__})") from None
    raise BadRequest(f"more than {MAX_PARTS} parts in the form")


async def _body(request: web.Request, read) -> Any:
    """`read()` of the request's body within the server's time for a body (408 past it)."""
    try:
        async with asyncio.timeout(request.app["config"].body_seconds):
            return await read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason="the body did not arrive in time") from None


async def _upload(request: web.Request) -> tuple[bytes, str | None, str | None]:
    """The image of a check: the raw body (any content type but a form), or the part named
    `image` of a multipart form, with `url` and `caption` from the form or the query. Read into
    memory only, at most --max-body of it (413 beyond)."""
    url, caption = request.query.get("url"), request.query.get("caption")
    if request.content_type.startswith("multipart/"):
        limit = request.app["config"].max_body
        parts = await _body(
            request, lambda: form_parts(request, {"image": limit, "url": _TEXT_PART, "caption": _TEXT_PART})
        )
        text = {k: parts[k].decode("utf-8", "replace") for k in ("url", "caption") if k in parts}
        data, url, caption = parts.get("image"), text.get("url", url), text.get("caption", caption)
    elif request.content_type == "application/x-www-form-urlencoded":
        raise web.HTTPUnsupportedMediaType(reason="send the image as the body, or as the part named image of a form")
    else:
        data = await _body(request, request.read)
    if not data:
        raise BadRequest("no image: send it as the body, or as the part named image of a multipart form")
    return data, url, caption


def hash_query(kind: str, value: str, quality: int | None = None) -> dict[str, Any]:
    """`check_hashes`' arguments for one looked-up hash: a PDQ sent without its quality is matched
    as given (the quality gate is then the sender's hasher's)."""
    return {kind: value, **({"pdq_quality": 100 if quality is None else quality} if kind == "pdq" else {})}


async def on_thread(request: web.Request, kind: str, work, *args: Any) -> Any:
    """`work(auditor, *args)` on the worker's thread for `kind` of work ("images" to hash, or
    "hashes" to match: a large image in hashing does not hold up lookups), with the auditor current
    now: one auditor for the whole request, whatever reloads meanwhile."""
    auditor = request.app["live"].current
    return await asyncio.get_running_loop().run_in_executor(request.app["threads"][kind], work, auditor, *args)


@routes.post("/v1/check")
async def check(request: web.Request) -> web.Response:
    """Hash, match and decide one upload under the server's policy."""
    async with request.app["uploads"]:  # bodies held at once: bounded, as the memory they take
        data, url, caption = await _upload(request)
        row = await on_thread(request, "images", Auditor.check_bytes, data, url, caption)
        del data
    answer = _answer(row, request)
    status = 422 if answer["status"] in _UNPROCESSABLE else 200
    if status == 422:
        request.app["metrics"].count("safeset_decode_failures_total", status=answer["status"])
    log.info("check %s: %s %s md5=%s", request["id"], answer["status"], answer["decision"], answer["md5"])
    return web.json_response(answer, status=status)


def _lookups(body: Any) -> list[tuple[str, str, int | None]]:
    """(type, value, PDQ quality) of a lookup's body: {"hashes": [{"type": "pdq", "value": "...",
    "quality": 80}, ...]} or {"pdq": ["...", ...], "md5": [...]}. A PDQ without a quality is
    matched as given: the quality gate is then the sender's hasher's."""
    pairs = []
    if isinstance(body, dict) and "hashes" in body and len(body) > 1:
        raise ValueError('give {"hashes": [...]} or lists by type ({"pdq": [...], ...}), not both')
    if isinstance(body, dict) and isinstance(body.get("hashes"), list):
        for item in body["hashes"]:
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                raise ValueError('each of hashes is {"type": ..., "value": "..."}')
            quality = item.get("quality")
            if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int)):
                raise ValueError("a PDQ's quality is a whole number in 0..100")
            pairs.append((str(item.get("type", "")).lower(), item["value"], quality))
    elif isinstance(body, dict) and body and all(isinstance(v, list) for v in body.values()):
        for kind, values in body.items():
            if not all(isinstance(v, str) for v in values):
                raise ValueError(f"{kind}: a list of text")
            pairs += [(str(kind).lower(), v, None) for v in values]
    else:
        raise ValueError('send {"hashes": [{"type": "pdq", "value": "..."}]} or {"pdq": ["..."], "md5": [...]}')
    unknown = sorted({kind for kind, _, _ in pairs} - set(LOOKUP_TYPES))
    if unknown:
        raise ValueError(f"unknown hash type(s) {', '.join(unknown)}; known: {', '.join(LOOKUP_TYPES)}")
    if len(pairs) > MAX_LOOKUP:
        raise ValueError(f"{len(pairs):,} hashes: at most {MAX_LOOKUP:,} a request")
    return pairs


@routes.post("/v1/lookup")
async def lookup(request: web.Request) -> web.Response:
    """Match hashes (many a request) against the banks: each one's matches and decision."""
    try:
        body = await _body(request, request.json)
    except (ValueError, LookupError, RecursionError):  # not JSON, an unknown charset, nested past reason
        raise BadRequest("the body is not JSON (UTF-8, nested less deep than Python's limit)") from None
    try:
        pairs = _lookups(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None

    def match_all(auditor: Auditor) -> list[dict]:
        queries = [hash_query(kind, value, quality) for kind, value, quality in pairs]
        found = []
        for (kind, value, _), row in zip(pairs, auditor.check_hashes_many(queries), strict=True):
            if "invalid" in row:
                found.append({"type": kind, "value": value, "error": row["invalid"]})
                continue
            answer = _answer(row, request)
            matched = [r for r in answer["reasons"] if not r.startswith("unchecked:")]  # a hash is no image to check
            found.append({"type": kind, "value": value, "matches": answer["matches"], "decision": answer["decision"],
                          "reasons": matched})  # fmt: skip
        return found

    results = await on_thread(request, "hashes", match_all)
    log.info(
        "lookup %s: %d hash(es), %d matched", request["id"], len(results), sum(bool(r.get("matches")) for r in results)
    )
    return web.json_response({"results": results, "request_id": request["id"]})


@routes.get("/v1/banks")
async def banks(request: web.Request) -> web.Response:
    live = request.app["live"]
    store = BankStore(request.app["config"].home)
    used = set(live.current.banks)
    listed = [
        {
            "name": b.name, "label": b.label, "version": b.version, "enabled": b.enabled, "in_use": b.name in used,
            "counts": b.counts, "sha256": b.sha256, "updated": b.updated,
        }
        for b in store.list()
    ]  # fmt: skip
    return web.json_response({"banks": listed, "loaded_at": live.loaded})


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    live = request.app["live"]
    return web.json_response({"status": "ok", "banks": live.current.banks, "loaded_at": live.loaded})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app["metrics"].render(), content_type="text/plain", charset="utf-8")


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


_MATCH = {
    "type": "object",
    "properties": {
        "bank": {"type": "string"},
        "signal_type": {"type": "string", "enum": ["md5", "sha1", "sha256", "pdq", "vpdq", "url", "url_md5", "domain"]},
        "entry": {"type": "string", "description": "a tag of the listed entry (12 hex digits), never the entry"},
        "distance": {"type": "integer", "description": "Hamming distance for PDQ; 0 for exact signals"},
        "variant": {
            "type": "string",
            "description": "the PDQ variant that matched: '' plain, flip_h, rot90, trim, ...; a video's frame "
            "N: video_frame:N",
        },
        "query_percent": {"type": "number", "description": "vpdq: the share of the video's frames that match"},
        "compared_percent": {"type": "number", "description": "vpdq: the share of the listed video's frames matched"},
    },
}
_CHECKED = {
    "type": "object",
    "properties": {
        "md5": {"type": "string"}, "sha1": {"type": "string"}, "sha256": {"type": "string"},
        "pdq": {"type": "string", "nullable": True}, "pdq_quality": {"type": "integer", "nullable": True},
        "status": {"type": "string", "enum": [str(s) for s in Status]}, "error": {"type": "string", "nullable": True},
        "matches": {"type": "array", "items": _MATCH},
        "decision": {"type": "string", "enum": ["keep", "remove", "review"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "signals": {"type": "object", "additionalProperties": {"type": "number"}},
        "vpdq": {"type": "string", "description": "a video's frame hashes (python-threatexchange's vPDQ signal)"},
        "request_id": {"type": "string"},
    },
}  # fmt: skip
_ERROR = _json({"type": "object", "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}}})
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "safeset serve",
        "version": "1",
        "description": "Hash, match and decide uploads against hash lists, with no person viewing anything. "
        "Bearer tokens: one of --token-file for /v1/* and /metrics; /v1/health and /openapi.json are open.",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                       "admin": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/v1/check": {
            "post": {
                "summary": "Hash, match and decide one image or video",
                "parameters": [
                    {"name": "url", "in": "query", "schema": {"type": "string"}, "description": "where it came from"},
                    {"name": "caption", "in": "query", "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        "image/*": {"schema": {"type": "string", "format": "binary"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "image": {"type": "string", "format": "binary"},
                                    "url": {"type": "string"},
                                    "caption": {"type": "string"},
                                },
                                "required": ["image"],
                            }
                        },
                    },
                },
                "responses": {
                    "200": {"description": "checked", **_json(_CHECKED)},
                    "422": {"description": "not an image safeset decodes, or past the decode limits (its "
                            "digests are still taken and matched)", **_json(_CHECKED)},
                    "400": {"description": "no image", **_ERROR},
                    "401": {"description": "no or a wrong bearer token", **_ERROR},
                    "413": {"description": "larger than the server's maximum body", **_ERROR},
                },
            }
        },
        "/v1/lookup": {
            "post": {
                "summary": "Match hashes against the banks",
                "requestBody": {
                    "required": True,
                    **_json({
                        "oneOf": [
                            {"type": "object", "properties": {"hashes": {"type": "array", "items": {
                                "type": "object", "properties": {"type": {"type": "string", "enum": list(LOOKUP_TYPES)},
                                                                 "value": {"type": "string"}}}}}},
                            {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                        ]
                    }),
                },
                "responses": {
                    "200": {"description": "each hash's matches", **_json({"type": "object", "properties": {
                        "results": {"type": "array", "items": {"type": "object", "properties": {
                            "type": {"type": "string"}, "value": {"type": "string"},
                            "matches": {"type": "array", "items": _MATCH}, "decision": {"type": "string"},
                            "reasons": {"type": "array", "items": {"type": "string"}},
                            "error": {"type": "string"}}}}}})},
                    "400": {"description": "not a lookup", **_ERROR},
                    "401": {"description": "no or a wrong bearer token", **_ERROR},
                },
            }
        },
        "/v1/banks": {"get": {"summary": "The banks of the server's bank home, and which are in use",
                              "responses": {"200": {"description": "banks"}}}},
        "/v1/health": {"get": {"summary": "Liveness, and the banks loaded", "security": [],
                               "responses": {"200": {"description": "serving"}}}},
        "/metrics": {"get": {"summary": "Prometheus text: requests, latencies, matches per bank, decode failures",
                             "responses": {"200": {"description": "metrics",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3"}}}},
        "/v1/banks/{name}/entries": {"post": {
            "summary": "Admin: hashes into bank NAME (python-threatexchange '<type> <hash>' lines; ?type= for bare "
                       "hashes, ?label= for a new bank)", "security": [{"admin": []}],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}},
            "responses": {"200": {"description": "added, and bad lines by number"},
                          "400": {"description": "bad lines or body", **_ERROR},
                          "401": {"description": "no admin token", **_ERROR}}}},
        "/v1/banks/{name}/{switch}": {"post": {
            "summary": "Admin: enable or disable bank NAME", "security": [{"admin": []}],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "switch", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": ["enable", "disable"]}}],
            "responses": {"200": {"description": "switched"}, "404": {"description": "no such bank", **_ERROR}}}},
        "/v1/verdicts": {"post": {
            "summary": "Admin: verification verdicts, as `safeset review import` takes them (CSV, or JSON lines "
                       "with application/x-ndjson); ?verifier=&reference=&entry=1&skip_bad=1",
            "security": [{"admin": []}],
            "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}},
                                                          "application/x-ndjson": {"schema": {"type": "string"}}}},
            "responses": {"200": {"description": "imported"}, "400": {"description": "bad lines or body", **_ERROR}}}},
        "/status": {"get": {"summary": "HMA: liveness, 'I-AM-ALIVE'", "security": [],
                            "responses": {"200": {"description": "alive"}}}},
        "/h/hash": {"post": {"summary": "HMA: the PDQ of the multipart field photo",
                             "responses": {"200": {"description": "{\"pdq\": hex}"}}}},
        "/m/lookup": {
            "get": {"summary": "HMA: matches of ?signal_type=pdq|md5&signal=HEX, by bank",
                    "responses": {"200": {"description": "{BANK: [{bank_content_id (the entry's tag), distance}]}"}}},
            "post": {"summary": "HMA: hash the multipart field photo and match it",
                     "responses": {"200": {"description": "{\"pdq\": {BANK: [...]}}"}}}},
        "/m/raw_lookup": {"get": {"summary": "HMA: the tags of the entries ?signal matches",
                                  "responses": {"200": {"description": "{\"matches\": [tag, ...]}"}}}},
        "/c/banks": {"get": {"summary": "HMA: banks and whether they match",
                             "responses": {"200": {"description": "[{name, matching_enabled_ratio}]"}}}},
    },
}  # fmt: skip
# every route but the open ones may answer 429 past --rate-limit
for _path, _methods in OPENAPI["paths"].items():
    for _operation in _methods.values():
        if _path not in ("/v1/health", "/openapi.json", "/status", "/metrics"):
            _operation["responses"]["429"] = {"description": "past --rate-limit; see Retry-After", **_ERROR}
