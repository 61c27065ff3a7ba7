"""`safeset serve`: the checks behind HTTP (see `safeset.serve`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from ..pipeline.check import CheckSettings
from . import cli, options
from .audit import _policy


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless you say).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free one).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option(
    "--bank", "banks", multiple=True, help="Bank to match against (repeatable) [default: every enabled bank]."
)
@click.option(
    "--policy", "policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Policy TOML."
)
@click.option("--preset", help="A built-in policy instead of --policy.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Bearer tokens for /v1/* and /metrics, one a line (mode 600). Needed to listen beyond loopback.",
)
@click.option(
    "--admin-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Bearer tokens for the admin routes (/v1/banks/NAME/entries|enable|disable, /v1/verdicts), one a line "
    "(mode 600); without it there is no admin access.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=32 * 1024 * 1024,
    show_default=True,
    help="Largest upload in bytes; a larger one is refused with 413 before it is read whole.",
)
@click.option(
    "--reload-seconds",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="How often each worker looks for changed banks or verdicts (taken in without dropping a request).",
)
@click.option(
    "--body-seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Time for a request's body to arrive; past it, 408 (a body trickled in holds no worker).",
)
@click.option(
    "--uploads",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Bodies a worker holds at once (more wait): its memory for uploads is at most this x --max-body.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Requests a second per token (per client address without tokens), beyond which 429 with Retry-After; "
    "0: no limit.",
)
@options.of(CheckSettings)
@click.pass_context
def serve_command(
    ctx,
    host: str,
    port: int,
    workers: int,
    banks: tuple[str, ...],
    policy_file: Path | None,
    preset: str | None,
    token_file: Path | None,
    admin_token_file: Path | None,
    max_body: int,
    reload_seconds: float,
    body_seconds: float,
    uploads: int,
    rate_limit: float,
    **settings,
) -> None:
    """Serve checks over HTTP until SIGTERM or Ctrl-C: POST /v1/check (an image or a video: hashes,
    matches, decision; the --max-video-* limits bound what one video costs), POST /v1/lookup
    (hashes: matches), GET /v1/banks, /v1/health, /metrics and /openapi.json; with an admin token,
    POST /v1/banks/NAME/entries, /v1/verdicts and /v1/banks/NAME/enable|disable; HMA's /h/hash,
    /m/lookup, /m/raw_lookup, /c/banks, /status. Uploads stay in memory and are never logged;
    answers name listed entries by tag, never by value. A bank added or verdicts imported are taken
    in within --reload-seconds."""
    from ..serve import ServeConfig, serve
    from ..serve.app import describe, read_tokens

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServeConfig(
        home=ctx.obj["home"],
        host=host,
        port=port,
        workers=workers,
        policy=_policy(policy_file, preset),
        banks=banks or None,
        tokens=read_tokens(token_file) if token_file else frozenset(),
        admin_tokens=read_tokens(admin_token_file) if admin_token_file else frozenset(),
        max_body=max_body,
        reload_seconds=reload_seconds,
        rate_limit=rate_limit,
        body_seconds=body_seconds,
        uploads=uploads,
        settings=CheckSettings(**options.values(CheckSettings, settings)),
    )

    def ready(bound_host: str, bound_port: int) -> None:
        click.echo(json.dumps({"serving": describe(config, bound_host, bound_port)}))  # a client waits for this line

    serve(config, ready)
