"""Sinks: the output layout, results parts, and the manifests derived from them."""

from .layout import OutLayout, write_json
from .manifests import MANIFEST_COLUMNS, ManifestWriter

__all__ = ["MANIFEST_COLUMNS", "ManifestWriter", "OutLayout", "write_json"]
