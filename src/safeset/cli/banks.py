"""`safeset bank ...`: the local hash lists a scan matches against."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ..banks.signal_types import TYPE_NAMES
from . import _err, _Group, _out, _store, cli


@cli.group(cls=_Group)
def bank() -> None:
    """Manage the local hash lists (banks) that scans match against."""


@bank.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--type",
    "type_name",
    type=click.Choice(list(TYPE_NAMES)),
    help="Signal type of one-value-per-line files (and of CSVs without a type column). "
    "keyword: one term or phrase per line, looked for as whole words in captions. "
    "vpdq: listed videos, as python-threatexchange's signals or vpdq's hash files (a file, or a folder of them).",
)
@click.option("--label", help="Free text kept with the bank (where the list came from).")
@click.option("--strict", is_flag=True, help="Refuse the whole file if any line is bad.")
@click.pass_context
def bank_add(ctx, name: str, file: Path, type_name: str | None, label: str | None, strict: bool) -> None:
    """Import hash list FILE into bank NAME (created, or merged into and versioned).

    FILE holds one hash per line (with --type), '<type> <hash>' per line (python-threatexchange),
    or CSV with a header naming a hash column (and an `id` column, for videos); with --type keyword,
    one term or phrase per line (matches record the term's line number, never the term). With
    --type vpdq, FILE may be one video's vpdq hash file (`frame,quality,pdq,timestamp` lines) or a
    folder of them: matches record the file's name. Bad lines are reported by number and skipped.
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
