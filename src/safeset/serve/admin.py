"""Admin routes of `safeset serve` (an admin token, `--admin-token-file`): add hashes to a bank,
import verification verdicts, enable or disable a bank. Each goes through the bank store as the
command line does (`bank add`, `review import`, `bank enable|disable`), so every worker takes it
in at its next look at the bank home, and the provenance is the same.

A body is handed to the store as a file of mode 0600 in a private folder of the bank home (the
store imports files), removed as soon as the import is done; hash lists are the store's to keep.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..banks import BankStore
from ..errors import SafesetError
from .app import BadRequest, json_error

routes = web.RouteTableDef()


def admin(handler: Callable) -> Callable:
    """Marks a route as needing an admin token (see `app._guard`)."""
    handler.admin = True
    return handler


def _staged(home: Path, body: bytes, suffix: str) -> Path:
    """The body as a private file in the bank home, for the store to import."""
    folder = home / ".incoming"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, suffix=suffix)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, body)
    finally:
        os.close(fd)
    return Path(name)


async def _in_store(request: web.Request, suffix: str, work: Callable[[BankStore, Path], Any]) -> web.Response:
    body = await request.read()
    if not body:
        raise BadRequest("the body is empty")
    store = BankStore(request.app["config"].home)
    path = _staged(store.home, body, suffix)
    try:
        done = await asyncio.get_running_loop().run_in_executor(None, work, store, path)
    except SafesetError as exc:  # named as the body, not as the file it passed through
        message = str(exc).replace(str(path), "the body")
        raise BadRequest(message) from None
    finally:
        path.unlink(missing_ok=True)
    return web.json_response({**done, "request_id": request["id"]})


@routes.post("/v1/banks/{name}/entries")
@admin
async def add_entries(request: web.Request) -> web.Response:
    """Hashes for bank NAME (made if new): python-threatexchange's `<type> <hash>` lines, or bare
    hashes with ?type=md5; ?label= for a new bank. Bad lines are reported by number."""
    name, kind, label = request.match_info["name"], request.query.get("type"), request.query.get("label")

    def add(store: BankStore, path: Path) -> dict[str, Any]:
        result = store.add(name, path, type_name=kind, label=label)
        return {
            "bank": result.bank.name, "version": result.bank.version, "added": result.added,
            "accepted": result.accepted, "duplicates": result.duplicates,
            "bad_lines": [{"line": e.line, "reason": e.reason} for e in result.errors],
        }  # fmt: skip

    return await _in_store(request, ".txt", add)


@routes.post("/v1/verdicts")
@admin
async def verdicts(request: web.Request) -> web.Response:
    """A verifier's verdicts, as `safeset review import` takes them: CSV, or JSON lines with
    Content-Type application/x-ndjson (or ?format=jsonl); ?verifier=, ?reference=, ?entry=1 for
    verdicts on listed entries, ?skip_bad=1."""
    from ..pipeline.review import import_verdicts

    query = request.query
    jsonl = query.get("format") == "jsonl" or request.content_type in ("application/x-ndjson", "application/jsonl")
    flag = {"1", "true", "yes"}

    def take(store: BankStore, path: Path) -> dict[str, Any]:
        done = import_verdicts(
            path, store.home, None, query.get("verifier", ""), query.get("reference", ""),
            query.get("skip_bad", "").lower() in flag, query.get("entry", "").lower() in flag,
        )  # fmt: skip
        return {k: v for k, v in done.items() if k != "file"}

    return await _in_store(request, ".jsonl" if jsonl else ".csv", take)


@routes.post("/v1/banks/{name}/{switch:enable|disable}")
@admin
async def switch(request: web.Request) -> web.Response:
    store = BankStore(request.app["config"].home)
    name, on = request.match_info["name"], request.match_info["switch"] == "enable"
    try:
        info = await asyncio.get_running_loop().run_in_executor(None, store.set_enabled, name, on)
    except SafesetError:  # its message names the bank home's folder
        return json_error(404, f"no bank {name}", request["id"])
    return web.json_response({"bank": info.name, "enabled": info.enabled, "request_id": request["id"]})
