"""`safeset hash`, `report`, `bench` and `demo`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ..errors import BadInputError, UsageError
from . import _err, _Group, _out, cli
from .audit import print_summary


@cli.command("hash")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--vpdq",
    "video",
    is_flag=True,
    help="FILE is a video: print its vPDQ frame hashes, a line `frame,quality,pdq,timestamp` each, the "
    "frames, bits and format of Meta's vpdq (pip package vpdq); with --json, its md5 and the signal as "
    "python-threatexchange serialises it (`vpdq` in its lists).",
)
@click.option(
    "--seconds-per-hash",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="With --vpdq: a frame hashed every so many seconds (0: every frame), as vpdq samples them.",
)
def hash_command(files, as_json: bool, video: bool, seconds_per_hash: float) -> None:
    """Print md5, sha1, sha256, PDQ and PDQ quality of each FILE (or, with --vpdq, a video's frame
    hashes). Only hashes are printed: nothing of a file's content."""
    from .. import hash_file

    if video:
        _hash_videos(files, as_json, seconds_per_hash)
        return
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
                record["status"]
                + (f" ({record['error']})" if record["error"] else "")
                + (f" (a video: {record['video_frames']} frames, see --vpdq)" if "video_frames" in record else ""),
            )
    if not as_json:
        _out.print(table)


def _hash_videos(files: tuple[Path, ...], as_json: bool, seconds_per_hash: float) -> None:
    import hashlib

    from ..banks.vpdq import signal_of
    from ..hashing import DecodeError
    from ..hashing.video import hash_video

    if len(files) > 1 and not as_json:
        raise UsageError("--vpdq prints one video's lines: give one FILE, or --json for several")
    failed = False
    for path in files:
        data = path.read_bytes()
        record = {"path": str(path), "md5": hashlib.md5(data).hexdigest()}
        try:
            video = hash_video(data, seconds_per_hash)
        except DecodeError as exc:
            if not as_json:
                raise BadInputError(path, str(exc)) from None
            click.echo(json.dumps({**record, "error": str(exc)}))
            failed = True
            continue
        if as_json:
            click.echo(json.dumps({**record, "vpdq": signal_of(video.frames), "incomplete": video.incomplete}))
        else:
            click.echo("\n".join(f.line() for f in video.frames))
            if video.incomplete:
                _err.print(f"[yellow]{escape(str(path))}: not all hashed:[/] {escape(video.incomplete)}")
    if failed:
        sys.exit(1)


@cli.command("report")
@click.argument("out")
def report_command(out: str) -> None:
    """(Re)render OUT/report.html from OUT/report.json (OUT: a folder, or a URI such as s3://...)."""
    from ..report import render_report

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
    from ..engines import default_workers
    from ..evaluation import evaluate
    from ..sources.base import walk_files

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
    from ..demo import credits, run_demo

    data, report = run_demo(directory, workers=workers)
    _out.print(f"demo dataset: {data.rows:,} rows in {data.shards}")
    _out.print("photos (scikit-image sample data): " + "; ".join(credits()))
    print_summary(report, directory / "out")
    t = report["totals"]
    expected = data.listed_exact + data.listed_transformed + data.listed_urls + data.listed_videos
    if t["remove"] != expected:
        _err.print(f"[red]the demo expected {expected} removals, got {t['remove']}[/]")
        sys.exit(1)


@cli.group(cls=_Group)
def review() -> None:
    """The verification round trip: cases out to a verifier (hashes, never images), verdicts back."""


@review.command("export")
@click.argument("out")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write.")
@click.option(
    "--include",
    default="review,remove",
    show_default=True,
    help="Decisions whose rows become cases, comma-separated (review, remove, keep).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="Cases as CSV or JSON lines.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def review_export(out: str, to: Path, include: str, fmt: str, as_json: bool) -> None:
    """Write OUT's held and removed rows as cases for external verification (cases.csv: case_id,
    row id, key, URL, digests, PDQ, reasons, matched entries, signals, expansion seed and
    similarity) and their hashes in python-threatexchange's local-file format (hashes.txt). Hashes,
    URLs and ids only: no image, thumbnail or caption. Files are written 0600."""
    from ..pipeline.review import export

    chosen = [d.strip() for d in include.split(",") if d.strip()]
    if not chosen or set(chosen) - {"keep", "review", "remove"}:
        raise click.UsageError("--include takes keep, review, remove (comma-separated)")
    written = export(out, to, chosen, fmt)
    if as_json:
        click.echo(json.dumps(written, indent=2))
    else:
        _out.print(f"{written['cases']:,} case(s) written to {escape(str(to))}")


@review.command("import")
@click.argument("verdicts", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", help="The audit the cases came from (needed when lines name them by case_id or row_id).")
@click.option("--verifier", default="", help="Who verified (kept with every verdict).")
@click.option("--reference", default="", help="Their reference for this batch (kept with every verdict).")
@click.option("--skip-bad", is_flag=True, help="Import the good lines of a file with bad ones (reported by number).")
@click.option(
    "--entry",
    "entries",
    is_flag=True,
    help="Lines name listed entries (bank, and entry: the tag the report shows, or the value), not cases: "
    "false_positive disables the entry for every audit on this bank home, confirmed releases it from "
    "flood quarantine, disputed quarantines it again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
def review_import(
    ctx, verdicts: Path, out: str | None, verifier: str, reference: str, skip_bad: bool, entries: bool, as_json: bool
):
    """Take a verifier's VERDICTS (CSV or JSON lines: a case by case_id, row_id, md5, sha1, sha256,
    pdq or url, and a verdict: confirmed, false_positive, disputed or unknown) into the bank home.
    Confirmed hashes go into the bank 'confirmed', matched by every later scan and round; a false
    positive's matches stop firing; a disputed case is held. Run `safeset decide OUT` to apply them."""
    from ..pipeline.review import import_verdicts

    home = ctx.obj["home"]
    done = import_verdicts(verdicts, home, out, verifier, reference, skip_bad, entries)
    if as_json:
        click.echo(json.dumps(done, indent=2))
    elif done["already_imported"]:
        _out.print("this file was imported before: nothing changed")
    else:
        counts = ", ".join(f"{v}: {n:,}" for v, n in done["verdicts"].items()) or "none"
        _out.print(
            f"{done['imported']:,} verdict(s) imported ({counts}); {done['confirmed_hashes']:,} hash(es) confirmed"
        )
        for bad in done["bad_lines"]:
            _err.print(f"line {bad['line']}: {escape(bad['reason'])} (skipped)")


def _round_span(ctx, param, value: str | None) -> tuple[int, int | None] | None:
    if value is None:
        return None
    first, sep, last = value.partition("..")
    try:
        if not sep:  # what round N changed; the scan's own round 1 changed nothing
            return (max(int(first) - 1, 1), int(first))
        return int(first), int(last) if last else None
    except ValueError:
        raise click.BadParameter("give FIRST..LAST (e.g. 2..5, or 2.. for 2 to the latest), or one round N") from None


@cli.command("diff")
@click.argument("a")
@click.argument("b", required=False)
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=Path), help="Folder for the differing rows.")
@click.option("--key", help="Column that identifies a row of two release tables (default: url and caption).")
@click.option(
    "--rounds",
    callback=_round_span,
    help="With one OUT: decisions after round FIRST against those after round LAST (FIRST..LAST, FIRST.. for "
    "the latest, or N for what round N changed) [default: what the last round changed].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def diff_command(
    a: str, b: str | None, to: Path | None, key: str | None, rounds: tuple[int, int | None] | None, as_json: bool
) -> None:
    """What changed from A to B. Two audits (OUTs of `safeset scan`): the rows whose decision
    differs, by transition and reason (--to: changed.parquet). One audit: the same, between two of
    its decide rounds (--rounds). Two release tables (parquet, csv or jsonl metadata): the rows of
    A not in B and of B not in A, by url and caption or --key (--to: only_in_a.parquet,
    only_in_b.parquet), streamed through disk with bounded memory."""
    from ..pipeline.diff import diff

    summary = diff(a, b, to, key, rounds)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if summary["kind"] in ("audits", "rounds"):
        _out.print(
            f"{summary['changed']:,} row(s) decided otherwise"
            + (
                f"; only in A: {summary['only_in_a']:,}, only in B: {summary['only_in_b']:,}"
                if summary["kind"] == "audits"
                else f" from round {summary['from_round']} to round {summary['to_round']}"
            )
        )
        for change, reasons in summary["transitions"].items():
            _out.print(f"{escape(change)}: {summary['rows_by_transition'].get(change, 0):,} row(s)")
            for reason, n in reasons.items():
                _out.print(f"  {escape(reason)}: {n:,}")
    else:
        _out.print(f"only in A: {summary['only_in_a']:,} row(s); only in B: {summary['only_in_b']:,} row(s)")


@cli.command("sync")
@click.argument("copy")
@click.option(
    "--release",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="The new release's metadata (a parquet, csv or jsonl table, or a folder of them) with url and, if it "
    "has one, caption.",
)
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the cleaned copy."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sync_command(copy: str, release: Path, out: Path, as_json: bool) -> None:
    """Clean my copy: prune an img2dataset COPY (a folder or a URI such as s3://bucket/copy;
    webdataset, files or parquet output: NNNNN.parquet with NNNNN.tar, a folder NNNNN/, or the
    images in it) to the rows the new release still has,
    matched by URL and caption (URL alone when either side has no caption), without decoding an
    image: kept tar members and files are copied byte for byte, each shard's parquet keeps its kept
    rows, and OUT/sync_stats.json says how many rows left."""
    from ..pipeline.sync import sync

    summary = sync(copy, release, out)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _out.print(
            f"kept {summary['kept']:,} of {summary['copy_rows']:,} row(s); "
            f"{summary['dropped_not_in_release']:,} not in the release"
        )
