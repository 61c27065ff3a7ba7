"""Report: report.json from the results, and report.html from report.json."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_atomic
from ..errors import UsageError
from ..storage import Remote, is_remote, scratch
from .build import ConservationError, ReportBuilder, versions
from .html import render_html


def render_report(out: Path | str) -> str:
    """(Re)write OUT/report.html from OUT/report.json; OUT may be a URI on object storage.
    Returns where the page is."""
    if is_remote(out):
        remote = Remote(str(out))
        if not remote.exists("report.json"):
            raise UsageError(f"{remote.uri} holds no report.json: run `safeset scan ... --out {remote.uri}` first")
        with remote.open("report.json") as fh:
            page = render_html(json.loads(fh.read()))
        with scratch("safeset-report-") as tmp:  # an upload is one PUT: the page appears whole
            write_atomic(tmp / "report.html", page.encode())
            remote.upload(tmp / "report.html", "report.html")
        return remote.child("report.html").uri
    out = Path(out)
    source = out / "report.json"
    if not source.is_file():
        raise UsageError(f"{out} holds no report.json: run `safeset scan ... --out {out}` first")
    target = out / "report.html"
    write_atomic(target, render_html(json.loads(source.read_text())).encode())
    return str(target)


__all__ = ["ConservationError", "ReportBuilder", "render_html", "render_report", "versions"]
