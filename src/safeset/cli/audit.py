"""`safeset scan` and `safeset decide`: an audit, and a decision taken again from its observations."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from .. import CheckSettings, Policy, ReadOptions
from ..fetch import FetchOptions
from ..policy import flood_limit, preset_names
from ..redact import redact
from . import _err, _out, cli, options

# --fail-on CONDITION: how many rows (or problems) make it hold, from the report.
FAIL_ON = {
    "match": lambda report: sum(b["items_matched"] for b in report["banks"]),
    "remove": lambda report: report["totals"]["remove"],
    "review": lambda report: report["totals"]["review"],
    "unchecked": lambda report: report["totals"]["unchecked"],
    "problems": lambda report: report["problems_total"],
}


def _options(*decorators):
    """Several click options as one decorator, in the order given (for options that more than one
    command takes: each is declared once)."""

    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def _flood_limit(ctx, param, value: str | None) -> int | str | None:
    if value is None:
        return None
    limit = flood_limit(value)
    if limit is None:
        raise click.BadParameter("give a whole number of rows (0: never) or a share of the audit's rows, such as 0.1%")
    return limit


def _match_option(flag: str, kind, inherit: bool, help: str, otherwise: str | None = None):
    """A match setting (`pipeline.check.MATCH_SETTINGS`, whose default it shows), kept in the
    context for `_shared`. `inherit`: a decide round's, whose default is what OUT was last decided
    with; `otherwise`: what a scan's None means."""

    def keep(ctx: click.Context, param: click.Parameter, value):
        ctx.meta.setdefault("match", {})[param.name] = value
        return value

    default = None if inherit else getattr(CheckSettings, flag.lstrip("-").replace("-", "_"))
    shown = "OUT's last" if inherit else otherwise
    return click.option(
        flag,
        type=kind,
        default=default,
        show_default=default is not None,
        expose_value=False,
        callback=keep,
        help=help + (f" [default: {shown}]." if shown else "."),
    )


def _deciding(inherit: bool):
    """What decides, given the observations: banks, policy, match thresholds. `inherit`: a decide
    round, where each defaults to what OUT was last decided with."""
    default = "the banks OUT was last decided with, current versions" if inherit else "every enabled bank"
    return _options(
        click.option("--bank", "banks", multiple=True, help=f"Bank to match (repeatable; default: {default})."),
        click.option(
            "--policy",
            "policy_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Policy TOML file.",
        ),
        click.option(
            "--preset",
            type=click.Choice(preset_names()),
            help="Built-in policy [default: " + ("OUT's last policy" if inherit else "'default'") + "].",
        ),
        _match_option(
            "--pdq-threshold",
            click.IntRange(0, 256),
            inherit,
            "Largest Hamming distance that counts as a PDQ match (a video's frames too)",
        ),
        _match_option(
            "--pdq-variant-threshold",
            click.IntRange(0, 256),
            inherit,
            "Threshold for the flipped, rotated and border-trimmed variants",
            "--pdq-threshold",
        ),
        _match_option(
            "--vpdq-query-percent",
            click.FloatRange(0, 100),
            inherit,
            "Share of a video's frames (quality >= 50, distinct) that must match a listed video's for the video "
            "to match it (vPDQ's rule)",
        ),
        _match_option(
            "--vpdq-compared-percent",
            click.FloatRange(0, 100),
            inherit,
            "Share of the listed video's frames that some frame of the video must match",
        ),
        click.option(
            "--flood-limit",
            callback=_flood_limit,
            help="Rows one listed entry may match in this audit before it is quarantined (its matches held "
            "for review, flood:BANK:TAG), or a share of its rows such as 0.1%; 0 never. Overrides the policy's "
            "[flood] limit [default: the policy's, 1000].",
        ),
    )


def _shared(
    ctx: click.Context,
    banks,
    workers,
    engine,
    ray_address,
    retries,
    quiet,
    as_json,
) -> dict:
    """The arguments `scan` and `decide` take alike, from the option groups the two commands share
    (`_deciding`, `_running`, `_answering`) and the bank store (`--home`)."""
    return {
        "banks": list(banks) or None,
        **ctx.meta["match"],
        "workers": workers,
        "engine": engine,
        "ray_address": ray_address,
        "retries": retries,
        "home": str(ctx.obj["home"]) if ctx.obj["home"] else None,
        "progress": not quiet and not as_json,
    }


def _policy(policy_file: Path | None, preset: str | None, inherit: bool = False) -> Policy | None:
    if policy_file and preset:
        raise click.UsageError("give --policy or --preset, not both")
    if policy_file:
        return Policy.load(policy_file)
    if preset or not inherit:
        return Policy.preset(preset or "default")
    return None


_running = _options(
    click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: all cores]."),
    click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Engine that runs the shard workers: this machine's cores, or a Ray cluster (pip install 'safeset[ray]').",
    ),
    click.option(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join (e.g. 10.0.0.1:6379 or ray://...); default: RAY_ADDRESS, else a new local one.",
    ),
    click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=2,
        show_default=True,
        help="Extra attempts for a shard whose worker failed.",
    ),
)

_answering = _options(
    click.option(
        "--fail-on",
        "fail_on",
        multiple=True,
        type=click.Choice(sorted(FAIL_ON)),
        help="Exit 4 (after writing every output) when this holds: a row matched a bank, was removed, held for "
        "review, left unchecked, or the input had problems. Repeatable; for CI gates.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
)


def _answer(ctx: click.Context, report: dict, out: str, fail_on, as_json: bool, title: str) -> None:
    """Print a run's summary and exit 4 if a `--fail-on` condition holds."""
    held = {condition: FAIL_ON[condition](report) for condition in fail_on}
    if as_json:
        click.echo(json.dumps(summary(report, out, held), indent=2))
    else:
        print_summary(report, out, title)
    failing = {condition: n for condition, n in held.items() if n}
    if failing:
        _err.print("[red]--fail-on:[/] " + ", ".join(f"{c} ({n:,})" for c, n in failing.items()))
        ctx.exit(4)


@cli.command("scan")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--out", required=True, help="Output directory: a local path or a URI (s3://bucket/audit, gs://..., file://...)."
)
@click.option(
    "--pdq-variants",
    type=click.Choice(["all", "dihedral", "trim", "none"]),
    default="all",
    show_default=True,
    help="Query-side variants tried besides the plain PDQ: the 8 flips/quarter turns (dihedral); border "
    "trimming, img2dataset's padding and small images upscaled (trim).",
)
@click.option(
    "--pdq-exact",
    is_flag=True,
    help="Hash every image from its full decode, bit for bit as Meta's reference does, flat images "
    "included (about 4x the time per image at 1500 px). Without it the hash is within a few bits of the "
    "reference wherever it can match.",
)
@options.of(ReadOptions, CheckSettings)
@click.option("--fetch", is_flag=True, help="Download the images of URL-only rows (metadata tables) to check them.")
@click.option(
    "--save-images", is_flag=True, help="With --fetch: write the kept images as webdataset shards under clean/."
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="With --fetch, rerunning into the same OUT: fetch again the rows of done shards whose download "
    "failed for a reason that may pass (timeout, connection, DNS, 429, 5xx, truncated); other rows stay as they are.",
)
@options.of(FetchOptions)
@click.option(
    "--embed-model",
    type=click.Path(exists=True, dir_okay=False),
    help="An ONNX image encoder (e.g. your export of CLIP's): every image's embedding, written in LAION's "
    "layout under OUT/embeddings/ for `safeset expand`. Nothing is downloaded (pip install 'safeset[models]').",
)
@click.option(
    "--score-model",
    "score_models",
    multiple=True,
    metavar="NAME=FILE",
    help="A model (ONNX, or an .npz of dense layers w0, b0, ...) turning each --embed-model embedding into the "
    "signal NAME, for policy rules (e.g. punsafe=laion-safety.npz). Repeatable.",
)
@_deciding(inherit=False)
@_running
@_answering
@click.pass_context
def scan_command(
    ctx,
    inputs,
    out,
    banks,
    policy_file,
    preset,
    workers,
    engine,
    ray_address,
    flood_limit,
    pdq_variants,
    pdq_exact,
    retries,
    fetch,
    save_images,
    retry_failed,
    embed_model,
    score_models,
    fail_on,
    as_json,
    quiet,
    **settings,
) -> None:
    """Audit INPUT... (webdataset tars or folders of them, image parquet, image folders, metadata
    tables) against the banks; write results, a clean release, manifests and a report to OUT.

    INPUT and OUT may be local paths or URIs on object storage (s3://, gs://, hdfs://, file://)."""
    from .. import scan
    from ..signals.models import parse_score_models

    policy = _policy(policy_file, preset)
    if flood_limit is not None:
        policy = replace(policy, flood=flood_limit)
    read = options.build(ReadOptions, settings)
    fetch_options = options.build(FetchOptions, settings, max_bytes=read.max_bytes) if fetch else None
    report = scan(
        list(inputs),
        out,
        policy=policy,
        pdq_dihedral=pdq_variants in ("all", "dihedral"),
        pdq_trim=pdq_variants in ("all", "trim"),
        pdq_exact=pdq_exact,
        read=read,
        fetch=fetch_options,
        save_images=save_images,
        retry_failed=retry_failed,
        embed_model=embed_model,
        score_models=parse_score_models(score_models),
        **options.values(CheckSettings, settings),
        **_shared(ctx, banks, workers, engine, ray_address, retries, quiet, as_json),
    )
    _answer(ctx, report, out, fail_on, as_json, "safeset scan")


@cli.command("decide")
@click.argument("out")
@_deciding(inherit=True)
@_running
@_answering
@click.pass_context
def decide_command(
    ctx,
    out,
    banks,
    policy_file,
    preset,
    flood_limit,
    workers,
    engine,
    ray_address,
    retries,
    fail_on,
    as_json,
    quiet,
) -> None:
    """Match the observations a scan stored in OUT against the banks' current content and decide
    again with the policy, without reading an image again: the clean release, manifests and report
    are rewritten as one round (the old ones stay whole until the new ones are complete), and the
    report's `rounds` records what changed.

    With no option, OUT's last banks (their current versions) and policy are used: run it after a
    bank update. --bank replaces the set of banks."""
    from .. import decide

    report = decide(
        out,
        policy=_policy(policy_file, preset, inherit=True),
        flood_limit=flood_limit,
        **_shared(ctx, banks, workers, engine, ray_address, retries, quiet, as_json),
    )
    if not as_json:
        changes = report["rounds"][-1]["transitions"]
        for change, reasons in changes.items():
            _out.print(f"{escape(change)}: {sum(reasons.values()):,} row(s)")
            for reason, n in reasons.items():
                _out.print(f"  {escape(reason)}: {n:,}")
        if not changes:
            _out.print("no decision changed")
    _answer(ctx, report, out, fail_on, as_json, "safeset decide")


@cli.command("expand")
@click.argument("out")
@click.option(
    "--embeddings",
    "source",
    required=True,
    help="The dataset's image embeddings, a path or URI: LAION's layout (img_emb/*.npy beside metadata/*.parquet), "
    "DataComp's (*.npz beside *.parquet), or parquet with a vector column.",
)
@click.option(
    "--seeds",
    default="removed",
    show_default=True,
    help="Rows to expand from: 'removed' (by a bank match), 'review', 'confirmed' (matched by hashes verification "
    "confirmed: `safeset review import`), or a FILE of row ids, keys or URLs (one a line), or a .npy of vectors a "
    "verifier supplied.",
)
@click.option("--k", type=click.IntRange(min=1), default=100, show_default=True, help="Neighbours per seed.")
@click.option(
    "--min-similarity",
    type=click.FloatRange(-1, 1),
    default=0.85,
    show_default=True,
    help="Cosine similarity at which a neighbour becomes a candidate. Data-dependent: look at the report's "
    "similarity table before trusting it.",
)
@click.option("--embedding-col", help="The .npz array (default l14_img) or parquet column holding the vectors.")
@click.option("--url-col", help="URL column of the embeddings' metadata (default: 'url', any case).")
@_deciding(inherit=True)
@_running
@_answering
@click.pass_context
def expand_command(
    ctx,
    out,
    source,
    seeds,
    k,
    min_similarity,
    embedding_col,
    url_col,
    banks,
    policy_file,
    preset,
    flood_limit,
    workers,
    engine,
    ray_address,
    retries,
    fail_on,
    as_json,
    quiet,
) -> None:
    """Neighbour expansion over the scan in OUT: for each seed row, its k most similar rows in the
    dataset's published CLIP embeddings, found exactly; those at --min-similarity or above become
    candidates (OUT/expansion/round-NNN/candidates.parquet) and a decide round applies the policy
    to them: review by default (the policy's [expand] action), and rules can read the signal
    nn_similarity. Run it again as verification confirms more seeds."""
    from .. import expand

    report = expand(
        out,
        source,
        seeds=seeds,
        k=k,
        min_similarity=min_similarity,
        embedding_col=embedding_col,
        url_col=url_col,
        policy=_policy(policy_file, preset, inherit=True),
        flood_limit=flood_limit,
        **_shared(ctx, banks, workers, engine, ray_address, retries, quiet, as_json),
    )
    if not as_json:
        found = report["expansion"][-1]
        seeded = found["seeds"]
        _out.print(
            f"expansion round {found['round']}: {seeded['searched']:,} seed(s) searched of {seeded['given']:,} "
            f"({seeded['without_embedding']:,} without an embedding), {found['candidates']['rows']:,} candidate row(s)"
        )
    _answer(ctx, report, out, fail_on, as_json, "safeset expand")


def summary(report: dict, out: str, held: dict[str, int]) -> dict:
    """What `scan --json` and `decide --json` print: the totals, the warnings, matches per bank,
    what the last round changed, where the report is."""
    return {
        "totals": report["totals"],
        "round": report["rounds"][-1],
        "warnings": report["warnings"],
        "banks": {b["name"]: b["items_matched"] for b in report["banks"]},
        "unchecked": report["unchecked"],
        "problems": report["problems_total"],
        "conservation": report["conservation"]["holds"],
        "report": f"{redact(str(out).rstrip('/'))}/report.html",
        "fail_on": held,
    }


def print_summary(report: dict, out: str, title: str = "safeset scan") -> None:
    for warning in report["warnings"]:
        _out.print(f"[bold red]warning:[/] {escape(warning)}")
    t = report["totals"]
    table = Table("rows in", "keep", "remove", "review", "unchecked", title=title)
    table.add_row(*(f"{t[k]:,}" for k in ("rows", "keep", "remove", "review", "unchecked")))
    _out.print(table)
    reasons = {r: n for r, n in report["reasons"].items() if r.startswith("match:")}
    for reason, n in reasons.items():
        _out.print(f"  {escape(reason)}: {n:,}")
    if report["problems_total"]:
        _out.print(f"[yellow]{report['problems_total']:,} input problem(s) recorded[/] (see the report)")
    if report["ignored_files_total"]:
        _out.print(f"{report['ignored_files_total']:,} file(s) found beside the data were not read (see the report)")
    _out.print(f"report: {redact(str(out).rstrip('/'))}/report.html")
