"""The `safeset` command: a thin layer over the library.

Each command parses its options, calls one library function, and prints. Errors are mapped to exit
codes in one place (`_Group.invoke`): 2 usage, 3 bad input (the message names the file and line or
row), 1 internal error.
"""

from __future__ import annotations

import errno
import json
import sys
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import BankStore, Policy, __version__
from .errors import SafesetError
from .model import DEFAULT_MAX_BYTES
from .policy import preset_names
from .redact import redact

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SafesetError as exc:
            _err.print(f"[red]error:[/] {escape(str(exc))}")
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            _err.print("[yellow]interrupted:[/] shards that finished are done; a rerun resumes from them")
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                where = f": {redact(str(exc.filename))}" if exc.filename else ""
                _err.print(
                    f"[red]error:[/] cannot write{escape(where)} ({exc.strerror}). Shards that finished are done: "
                    "free space and run the same command again to resume."
                )
            else:  # a bug: its traceback, with any URI's credentials masked
                _err.print(escape(redact(traceback.format_exc())), highlight=False)
                _err.print("[red]internal error[/] (a bug in safeset: please report it with the above)")
            ctx.exit(1)


def _store(ctx: click.Context) -> BankStore:
    return BankStore(ctx.obj["home"])


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SAFESET_HOME",
    default=None,
    help="Bank store directory [env SAFESET_HOME; default ~/.local/share/safeset].",
)
@click.version_option(__version__, prog_name="safeset")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """Find and remove known illegal and unwanted images from image-text datasets, without anyone
    viewing them, and write a cleaned release with an audit report."""
    ctx.obj = {"home": home}


# ---- banks --------------------------------------------------------------------------------------
@cli.group(cls=_Group)
def bank() -> None:
    """Manage the local hash lists (banks) that scans match against."""


@bank.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--type",
    "type_name",
    type=click.Choice(["md5", "sha1", "sha256", "pdq", "url", "url_md5", "domain"]),
    help="Signal type of one-value-per-line files (and of CSVs without a type column).",
)
@click.option("--label", help="Free text kept with the bank (where the list came from).")
@click.option("--strict", is_flag=True, help="Refuse the whole file if any line is bad.")
@click.pass_context
def bank_add(ctx, name: str, file: Path, type_name: str | None, label: str | None, strict: bool) -> None:
    """Import hash list FILE into bank NAME (created, or merged into and versioned).

    FILE holds one hash per line (with --type), '<type> <hash>' per line (python-threatexchange),
    or CSV with a header naming a hash column. Bad lines are reported by number and skipped.
    """
    result = _store(ctx).add(name, file, type_name=type_name, label=label, strict=strict)
    counts = ", ".join(f"{t} {n:,}" for t, n in result.bank.counts.items()) or "empty"
    _out.print(
        f"bank [bold]{escape(name)}[/] version {result.bank.version}: {result.added:,} new of "
        f"{result.accepted:,} valid value(s) from {result.lines:,} line(s); now holds {counts}"
    )
    if result.duplicates:
        _out.print(f"{result.duplicates:,} duplicate line(s) ignored")
    if result.errors:
        _err.print(f"[yellow]{len(result.errors):,} bad line(s) skipped[/] (--strict would refuse the file):")
        for error in result.errors[:20]:
            _err.print(f"  {escape(str(file))}, {error}")
        if len(result.errors) > 20:
            _err.print(f"  ... and {len(result.errors) - 20:,} more")


@bank.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def bank_list(ctx, as_json: bool) -> None:
    """List the banks in the store."""
    banks = _store(ctx).list()
    if as_json:
        click.echo(json.dumps([b.to_dict() for b in banks], indent=2))
        return
    table = Table("name", "enabled", "version", "entries", "label", "updated")
    for b in banks:
        counts = ", ".join(f"{t} {n:,}" for t, n in b.counts.items())
        table.add_row(b.name, "yes" if b.enabled else "no", str(b.version), counts, b.label, b.updated)
    _out.print(table if banks else "no banks yet: add one with `safeset bank add NAME FILE`")


@bank.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def bank_show(ctx, name: str, as_json: bool) -> None:
    """Show one bank's metadata and sources (never its entries)."""
    info = _store(ctx).get(name)
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
        return
    for key in ("name", "label", "enabled", "version", "created", "updated", "sha256"):
        _out.print(f"{key:>8}: {escape(str(getattr(info, key)))}")
    _out.print(f"{'entries':>8}: " + ", ".join(f"{t} {n:,}" for t, n in info.counts.items()))
    table = Table("file", "sha256", "added", "lines", "accepted", "rejected", title="sources")
    for s in info.sources:
        table.add_row(s["file"], s["sha256"], s["added"], str(s["lines"]), str(s["accepted"]), str(s["rejected"]))
    _out.print(table)


def _toggle(enabled: bool):
    @click.argument("name")
    @click.pass_context
    def command(ctx, name: str) -> None:
        _store(ctx).set_enabled(name, enabled)
        _out.print(f"bank {escape(name)} {'enabled' if enabled else 'disabled'}")

    return command


bank.command("enable", help="Use bank NAME in scans that name no bank.")(_toggle(True))
bank.command("disable", help="Leave bank NAME out of scans unless it is named with --bank.")(_toggle(False))


@bank.command("rm")
@click.argument("name")
@click.pass_context
def bank_rm(ctx, name: str) -> None:
    """Delete bank NAME and its stored lists."""
    _store(ctx).remove(name)
    _out.print(f"bank {escape(name)} removed")


# ---- scan -----------------------------------------------------------------------------------------
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
        click.option(
            "--pdq-threshold",
            type=click.IntRange(0, 256),
            default=None if inherit else 31,
            show_default=not inherit,
            help="Largest Hamming distance that counts as a PDQ match"
            + (" [default: OUT's last]." if inherit else "."),
        ),
        click.option(
            "--pdq-variant-threshold",
            type=click.IntRange(0, 256),
            help="Threshold for the flipped, rotated and border-trimmed variants [default: "
            + ("OUT's last" if inherit else "--pdq-threshold")
            + "].",
        ),
    )


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
@click.option(
    "--input-kind",
    type=click.Choice(["webdataset", "image_parquet", "table", "folder"]),
    help="Read every INPUT as this kind instead of detecting it: for a folder that mixes kinds, what does "
    "not belong to it is listed in the report; 'folder' hashes every file as a file, whatever it is.",
)
@click.option("--url-col", help="URL column of metadata tables (default: 'url', any case).")
@click.option("--caption-col", help="Caption column (default: 'caption' or 'text', any case).")
@click.option("--image-col", help="Image-bytes column of parquet inputs (default: 'image' and kin).")
@click.option(
    "--table-rows",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Rows per shard of a large metadata table (the unit of resume and parallelism).",
)
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
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Downloads in flight over all domains, per worker.",
)
@click.option(
    "--per-domain-concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Downloads in flight to one domain, shared by all workers.",
)
@click.option(
    "--per-domain-rate",
    type=click.FloatRange(min=0.01),
    default=8.0,
    show_default=True,
    help="Requests per second to one domain, shared by all workers.",
)
@click.option(
    "--fetch-retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Retries after a timeout, a connection failure, 429 or 5xx (exponential backoff, Retry-After).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds one download may take in all (connect 10 s and 20 s between reads at most).",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BYTES,
    show_default=True,
    help="Largest payload held in memory and decoded. A larger download fails (too_large, counted while it "
    "streams, after decompression); a larger tar member, file or cell gets its exact digests only, computed as "
    "it streams past (decode_failed: too_large).",
)
@click.option("--contact", default="", help="How to reach you (URL or e-mail), sent in the user agent.")
@click.option(
    "--allow-private-networks",
    is_flag=True,
    help="Allow URLs on loopback, private and link-local addresses (tests, internal mirrors).",
)
@click.option(
    "--allow-network",
    "allowed_networks",
    multiple=True,
    metavar="CIDR",
    help="Allow one network (e.g. 10.1.0.0/16) that is otherwise refused (repeatable).",
)
@click.option(
    "--ignore-optout", is_flag=True, help="Fetch even where X-Robots-Tag says noai/noimageai or tdm-reservation is 1."
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
    pdq_threshold,
    pdq_variant_threshold,
    pdq_variants,
    pdq_exact,
    input_kind,
    url_col,
    caption_col,
    image_col,
    table_rows,
    retries,
    fetch,
    save_images,
    retry_failed,
    concurrency,
    per_domain_concurrency,
    per_domain_rate,
    fetch_retries,
    timeout,
    max_bytes,
    contact,
    allow_private_networks,
    allowed_networks,
    ignore_optout,
    fail_on,
    as_json,
    quiet,
) -> None:
    """Audit INPUT... (webdataset tars or folders of them, image parquet, image folders, metadata
    tables) against the banks; write results, a clean release, manifests and a report to OUT.

    INPUT and OUT may be local paths or URIs on object storage (s3://, gs://, hdfs://, file://)."""
    from . import ReadOptions, scan

    policy = _policy(policy_file, preset)
    fetch_options = None
    if fetch:
        from .fetch import FetchOptions

        fetch_options = FetchOptions(
            concurrency=concurrency,
            per_domain_concurrency=per_domain_concurrency,
            per_domain_rate=per_domain_rate,
            retries=fetch_retries,
            total_timeout=timeout,
            max_bytes=max_bytes,
            contact=contact,
            allow_private=allow_private_networks,
            allowed_networks=tuple(allowed_networks),
            respect_optout=not ignore_optout,
        )
    report = scan(
        list(inputs),
        out,
        banks=list(banks) or None,
        policy=policy,
        workers=workers,
        engine=engine,
        ray_address=ray_address,
        retries=retries,
        pdq_threshold=pdq_threshold,
        pdq_variant_threshold=pdq_variant_threshold,
        pdq_dihedral=pdq_variants in ("all", "dihedral"),
        pdq_trim=pdq_variants in ("all", "trim"),
        pdq_exact=pdq_exact,
        read=ReadOptions(
            url_col=url_col,
            caption_col=caption_col,
            image_col=image_col,
            table_rows=table_rows,
            max_bytes=max_bytes,
            input_kind=input_kind,
        ),
        home=str(ctx.obj["home"]) if ctx.obj["home"] else None,
        fetch=fetch_options,
        save_images=save_images,
        retry_failed=retry_failed,
        progress=not quiet and not as_json,
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
    pdq_threshold,
    pdq_variant_threshold,
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
    from . import decide

    report = decide(
        out,
        banks=list(banks) or None,
        policy=_policy(policy_file, preset, inherit=True),
        workers=workers,
        engine=engine,
        ray_address=ray_address,
        retries=retries,
        pdq_threshold=pdq_threshold,
        pdq_variant_threshold=pdq_variant_threshold,
        home=str(ctx.obj["home"]) if ctx.obj["home"] else None,
        progress=not quiet and not as_json,
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


# ---- hash, report, demo ------------------------------------------------------------------------
@cli.command("hash")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def hash_command(files, as_json: bool) -> None:
    """Print md5, sha1, sha256, PDQ and PDQ quality of each FILE."""
    from . import hash_file

    table = Table("path", "md5", "pdq", "quality", "status")
    for path in files:
        record = hash_file(path)
        if as_json:
            click.echo(json.dumps(record))
        else:
            table.add_row(
                str(path),
                record["md5"] or "-",
                record["pdq"] or "-",
                str(record["pdq_quality"] or "-"),
                record["status"] + (f" ({record['error']})" if record["error"] else ""),
            )
    if not as_json:
        _out.print(table)


@cli.command("report")
@click.argument("out")
def report_command(out: str) -> None:
    """(Re)render OUT/report.html from OUT/report.json (OUT: a folder, or a URI such as s3://...)."""
    from .report import render_report

    _out.print(f"report: {render_report(out)}")


@cli.group(cls=_Group)
def bench() -> None:
    """Measure matching on your own images, to choose thresholds for your lists."""


@bench.command("hashers")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--max-fpr",
    type=click.FloatRange(0, 1),
    default=0.001,
    show_default=True,
    help="Image-level false-positive rate the thresholds must stay within.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: all cores].")
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON.")
def bench_hashers(directory: Path, max_fpr: float, workers: int | None, as_json: bool) -> None:
    """Put each distinct image of DIRECTORY on a PDQ list, edit it 15 ways (recompression, resizing,
    crops, flips, rotations, overlays, ...), and report per matching scheme the thresholds that keep
    false positives within --max-fpr, and the recall per edit there and at the default 31."""
    from .engines import default_workers
    from .evaluation import evaluate
    from .sources.base import walk_files

    images = [(str(p), p.read_bytes()) for p in walk_files(directory)]
    with _err.status(f"hashing {len(images)} images and their edited copies"):
        try:
            result = evaluate(images, max_fpr=max_fpr, workers=workers or default_workers())
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    schemes = result["schemes"]
    table = Table(
        "edit", *schemes, title=f"recall at <= {max_fpr:.2%} false positives ({result['listed']} listed images)"
    )
    for transform in result["transforms"]:
        table.add_row(transform, *(f"{s['recall'][transform]:.3f}" for s in schemes.values()))
    table.add_section()
    table.add_row("mean recall", *(f"[bold]{s['mean_recall']:.3f}[/]" for s in schemes.values()))
    table.add_row(
        "threshold (plain/variants)",
        *(
            f"{s['threshold']}" + (f"/{s['variant_threshold']}" if s["variant_threshold"] is not None else "")
            for s in schemes.values()
        ),
    )
    table.add_row("mean recall at 31", *(f"{s['mean_recall_at_31']:.3f}" for s in schemes.values()))
    table.add_row("false positives at 31", *(f"{s['fpr_at_31']:.2%}" for s in schemes.values()))
    _out.print(table)
    fpr = Table("threshold", *schemes, title="false-positive rate per threshold (one threshold for all hashes)")
    for t in list(next(iter(schemes.values()))["fpr_by_threshold"])[::2]:
        fpr.add_row(str(t), *(f"{s['fpr_by_threshold'][t]:.2%}" for s in schemes.values()))
    _out.print(fpr)
    for name, s in schemes.items():
        _out.print(f"{name}: {s['description']}")
    _out.print(
        f"{result['images']} images, {result['listed']} listable (PDQ quality >= 50), lists hashed by "
        f"{result['list_hasher']}. Apply the thresholds with `safeset scan --pdq-threshold T "
        "--pdq-variant-threshold V`."
    )


@cli.command("demo")
@click.argument("directory", default="build/demo", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: all cores].")
def demo_command(directory: Path, workers: int | None) -> None:
    """Build a demo dataset of benign CC0 photos in DIRECTORY, register demo banks, and scan it."""
    from .demo import credits, run_demo

    data, report = run_demo(directory, workers=workers)
    _out.print(f"demo dataset: {data.rows:,} rows in {data.shards}")
    _out.print("photos (scikit-image sample data): " + "; ".join(credits()))
    print_summary(report, directory / "out")
    t = report["totals"]
    expected = data.listed_exact + data.listed_transformed + data.listed_urls
    if t["remove"] != expected:
        _err.print(f"[red]the demo expected {expected} removals, got {t['remove']}[/]")
        sys.exit(1)


def main() -> None:
    cli(prog_name="safeset")
