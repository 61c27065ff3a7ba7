"""`safeset serve`: the audit's checks behind HTTP, for a platform that must check each upload
as it arrives, with no person viewing anything.

aiohttp's server, not an ASGI stack on uvicorn: aiohttp is already a dependency (the fetcher's
client), its server keeps request bodies in memory (no multipart spooling to temporary files,
which zero view forbids) and caps them (`client_max_size`, 413 beyond), and its workers share a
port with SO_REUSEPORT, so `--workers N` is N processes with no front process in the way.

Each worker holds one `safeset.Auditor` (banks, policy, settings) in a `LiveAuditor`, which looks
at the bank home every `reload_seconds` and, when a bank or the verdict log changed, builds a new
auditor beside the old one and swaps it in: requests in flight finish on the one they started
with. Endpoints (`api.py`): `POST /v1/check`, `POST /v1/lookup`, `GET /v1/banks`, `GET /v1/health`,
`GET /metrics`, `GET /openapi.json`.
"""

from __future__ import annotations

from .app import ServeConfig, make_app, serve

__all__ = ["ServeConfig", "make_app", "serve"]
