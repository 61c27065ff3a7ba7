"""`safeset serve`: the audit's checks behind HTTP, for a platform that must check each upload
as it arrives, with no person viewing anything.

aiohttp's server, not an ASGI stack on uvicorn: aiohttp is already a dependency (the fetcher's
client), its server keeps request bodies in memory (no multipart spooling to temporary files,
which zero view forbids) and caps them (413 beyond), and `--workers N` processes each listen on
the port (SO_REUSEPORT: the kernel spreads connections over them), with no front process in the
way; a worker that dies is replaced.

Each worker holds one `safeset.Auditor` (banks, policy, settings) in a `LiveAuditor`, which looks
at the bank home every `reload_seconds` and, when a bank or the verdict log changed, builds a new
auditor beside the old one and swaps it in: requests in flight finish on the one they started
with. Endpoints: `api.py` (/v1 and /metrics), `admin.py` (an admin token), `hma.py` (HMA's).
"""

from __future__ import annotations

from .app import ServeConfig, make_app, serve

__all__ = ["ServeConfig", "make_app", "serve"]
