"""Report: report.json from the results, and report.html from report.json."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_atomic
from ..errors import UsageError
from .build import ConservationError, ReportBuilder, versions
from .html import render_html


def render_report(out: Path | str) -> Path:
    """(Re)write OUT/report.html from OUT/report.json."""
    out = Path(out)
    source = out / "report.json"
    if not source.is_file():
        raise UsageError(f"{out} holds no report.json: run `safeset scan ... --out {out}` first")
    target = out / "report.html"
    write_atomic(target, render_html(json.loads(source.read_text())).encode())
    return target


__all__ = ["ConservationError", "ReportBuilder", "render_html", "render_report", "versions"]
