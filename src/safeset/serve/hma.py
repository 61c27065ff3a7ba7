"""Routes shaped as Meta's Hasher-Matcher-Actioner (HMA) answers them, for clients written against
HMA: `GET /status`, `GET|POST /h/hash`, `GET|POST /m/lookup`, `GET /m/raw_lookup`, `GET /c/banks`.
Their shapes are those HMA 1.1.7 itself gave (run from its source by benchmarks/hma.sh):

- `POST /h/hash` (multipart, the image in the field `photo`) -> `{"pdq": "<hex>"}`
- `GET /m/lookup?signal_type=pdq&signal=<hex>[&banks=A,B]` -> `{"BANK": [{"bank_content_id": ID,
  "distance": "N"}]}`, `{}` without a match; 400 `{"message": "No such SignalType 'x'"}` or
  `{"message": "invalid signal: ..."}`
- `POST /m/lookup` (multipart `photo`) -> `{"pdq": {"BANK": [...]}}`
- `GET /m/raw_lookup?signal_type=&signal=[&include_distance=true]` -> `{"matches": [ID, ...]}` or
  `{"matches": [{"bank_content_id": ID, "distance": "N"}]}`
- `GET /c/banks` -> `[{"name": "BANK", "matching_enabled_ratio": 1.0}]`; `GET /status` -> `I-AM-ALIVE`

Differences, by design: a `bank_content_id` is the entry's tag (the 12 hex digits the report names
entries by) read as a number, not a database row; fetching by URL (`GET /h/hash?url=`,
`GET /m/lookup?url=`) is refused (501), since safeset fetches nothing at run time but a dataset's
own URLs under `scan --fetch`; there is no coinflip (`matching_enabled_ratio` is 1.0 for an enabled
bank, 0.0 for a disabled one); the same bearer tokens as /v1 are needed (HMA's API key).
"""

from __future__ import annotations

import json

from aiohttp import web

from ..banks import BankStore
from ..banks.verdicts import entry_tag
from ..errors import SafesetError
from ..pipeline.check import Auditor
from .api import _body, form_parts, hash_query, on_thread

routes = web.RouteTableDef()
SIGNAL_TYPES = ("pdq", "md5")  # HMA's photo and video_md5 types; md5 is safeset's own besides


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _content(match: dict) -> dict:
    """A match as HMA names it: its bank content id (here the entry's tag as a number; HMA's clients
    read an integer) and the distance, as text."""
    return {"bank_content_id": int(entry_tag(match["entry"]), 16), "distance": str(match["distance"])}


def _by_bank(matches: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for m in matches:
        found.setdefault(m["bank"], []).append(_content(m))
    return found


async def _photo(request: web.Request) -> bytes | None:
    if not request.content_type.startswith("multipart/"):
        return None
    limit = request.app["config"].max_body
    return (await _body(request, lambda: form_parts(request, {"photo": limit}))).get("photo") or None


async def _checked(request: web.Request) -> dict | None:
    """The check of the multipart field `photo`, within the bound on bodies held at once."""
    async with request.app["uploads"]:
        data = await _photo(request)
        return None if data is None else await on_thread(request, "images", Auditor.check_bytes, data)


_NO_FETCH = "safeset fetches nothing at run time: POST the bytes as the multipart field photo"


async def _lookup_signal(request: web.Request) -> dict | web.Response:
    if "url" in request.query:
        return _error(501, _NO_FETCH)
    kind, signal = request.query.get("signal_type", "").lower(), request.query.get("signal", "")
    if kind not in SIGNAL_TYPES:
        named = kind.isidentifier() and len(kind) <= 32  # a request is quoted back only when it is a name
        return _error(400, f"No such SignalType {kind!r}" if named else "give signal_type (pdq or md5) and signal")
    try:
        row = await on_thread(request, "hashes", lambda auditor: auditor.check_hashes(**hash_query(kind, signal)))
    except SafesetError:
        return _error(400, f"invalid signal: invalid {'PDQ' if kind == 'pdq' else kind.upper()} hash")
    return row


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    return web.Response(text="I-AM-ALIVE\n")


@routes.get("/h/hash")
async def hash_url(request: web.Request) -> web.Response:
    return _error(501, _NO_FETCH)


@routes.post("/h/hash")
async def hash_bytes(request: web.Request) -> web.Response:
    row = await _checked(request)
    if row is None:
        return _error(400, "send the image as the multipart field photo")
    return web.json_response({"pdq": row["pdq"]} if row["pdq"] else {})


@routes.get("/m/lookup")
async def lookup(request: web.Request) -> web.Response:
    row = await _lookup_signal(request)
    if isinstance(row, web.Response):
        return row
    banks = {b for b in request.query.get("banks", "").split(",") if b}  # HMA's filter: only these
    return web.json_response(_by_bank([m for m in row["matches"] if not banks or m["bank"] in banks]))


@routes.post("/m/lookup")
async def hash_and_lookup(request: web.Request) -> web.Response:
    row = await _checked(request)
    if row is None:
        return _error(400, "send the image as the multipart field photo")
    pdq = _by_bank([m for m in row["matches"] if m["signal_type"] == "pdq"])
    return web.json_response({"pdq": pdq} if row["pdq"] else {})


@routes.get("/m/raw_lookup")
async def raw_lookup(request: web.Request) -> web.Response:
    row = await _lookup_signal(request)
    if isinstance(row, web.Response):
        return row
    with_distance = request.query.get("include_distance", "").lower() == "true"
    found = [_content(m) if with_distance else _content(m)["bank_content_id"] for m in row["matches"]]
    unique = list({json.dumps(item, sort_keys=True): item for item in found}.values())  # an entry in two banks
    return web.json_response({"matches": unique})


@routes.get("/c/banks")
async def banks(request: web.Request) -> web.Response:
    store = BankStore(request.app["config"].home)
    return web.json_response(
        [{"name": b.name, "matching_enabled_ratio": 1.0 if b.enabled else 0.0} for b in store.list()]
    )
