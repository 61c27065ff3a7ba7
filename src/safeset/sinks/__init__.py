"""Sinks: the output layout, results parts, and the manifests derived from them."""

from .layout import OutLayout, read_json, write_json
from .manifests import MANIFEST_COLUMNS, ManifestWriter
from .results import RESULTS_SCHEMA, results_table, write_results

__all__ = [
    "MANIFEST_COLUMNS",
    "RESULTS_SCHEMA",
    "ManifestWriter",
    "OutLayout",
    "read_json",
    "results_table",
    "write_results",
    "write_json",
]
