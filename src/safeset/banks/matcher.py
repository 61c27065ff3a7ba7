"""Matching a batch of item results against a set of banks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..hashing.digests import domain_suffixes, url_host
from ..model import ItemResult, Match
from .index import ExactHashIndex, PdqIndex, SignalIndex, TextIndex
from .signal_types import SIGNAL_TYPES, HexDigestType, Pdq, signal_type
from .store import BankInfo, BankStore

# At most this many PDQ matches per item and bank are recorded, nearest first: a near-blank image can
# sit close to thousands of listed hashes, and the report needs the evidence, not all of it.
MAX_PDQ_MATCHES = 16


@dataclass(frozen=True)
class MatchSettings:
    pdq_threshold: int = 31
    pdq_min_quality: int = 50
    # Each query-side variant is one more chance to hit a wrong entry, so variants may be held to a
    # tighter threshold than the plain hash (`safeset bench hashers` measures both).
    pdq_variant_threshold: int | None = None

    @property
    def variant_threshold(self) -> int:
        return self.pdq_threshold if self.pdq_variant_threshold is None else self.pdq_variant_threshold


class Matcher:
    """Indexes of every (bank, signal type) pair, built once per process and reused for every shard."""

    def __init__(self, indexes: dict[tuple[str, str], SignalIndex], settings: MatchSettings):
        self._indexes = indexes
        self.settings = settings

    @classmethod
    def load(cls, store: BankStore, banks: Sequence[BankInfo], settings: MatchSettings) -> Matcher:
        indexes: dict[tuple[str, str], SignalIndex] = {}
        for bank in banks:
            for type_name in SIGNAL_TYPES:
                if not bank.counts.get(type_name):
                    continue
                values = store.load(bank.name, type_name)
                stype = signal_type(type_name)
                if isinstance(stype, Pdq):
                    indexes[(bank.name, type_name)] = PdqIndex(values, store.load_tables(bank.name))
                elif isinstance(stype, HexDigestType):
                    indexes[(bank.name, type_name)] = ExactHashIndex(values, stype.width)
                else:
                    indexes[(bank.name, type_name)] = TextIndex(values)
        return cls(indexes, settings)

    def match(self, results: Sequence[ItemResult]) -> None:
        """Append to each result's `matches` every listed entry it matches, in a stable order. An
        entry reached by several PDQ variants of one item is recorded once, at its nearest."""
        for (bank, type_name), index in self._indexes.items():
            stype = signal_type(type_name)
            owners, variants, values = self._queries(results, stype)
            if not values:
                continue
            if isinstance(stype, HexDigestType):
                queries = np.frombuffer(bytes.fromhex("".join(values)), dtype=np.uint8).reshape(-1, stype.width)
            else:
                queries = values
            radius = max(self.settings.pdq_threshold, self.settings.variant_threshold) if isinstance(stype, Pdq) else 0
            q, e, d = index.search(queries, radius=radius)
            best: dict[tuple[int, int], Match] = {}
            for qi, ei, dist in zip(q.tolist(), e.tolist(), d.tolist(), strict=True):
                limit = self.settings.pdq_threshold if not variants[qi] else self.settings.variant_threshold
                if dist > limit:
                    continue
                key = (owners[qi], ei)
                if key not in best or dist < best[key].distance:
                    best[key] = Match(bank, type_name, index.entry(ei), int(dist), variants[qi])
            per_item: dict[int, list[Match]] = defaultdict(list)
            for (owner, _), found in best.items():
                per_item[owner].append(found)
            for owner, matches in sorted(per_item.items()):
                matches.sort(key=lambda m: (m.distance, m.entry))
                results[owner].matches.extend(matches[:MAX_PDQ_MATCHES] if isinstance(stype, Pdq) else matches)

    def optout_reason(self, url: str) -> str | None:
        """Why a URL must not even be requested: its domain is on a `domain` bank (opt-out lists)."""
        host = url_host(url)
        suffixes = domain_suffixes(host) if host else []
        for (bank, type_name), index in self._indexes.items():
            if type_name == "domain" and suffixes and len(index.search(suffixes)[0]):
                return f"listed domain ({bank})"
        return None

    def _queries(self, results: Sequence[ItemResult], stype) -> tuple[list[int], list[str], list[str]]:
        owners: list[int] = []
        variants: list[str] = []
        values: list[str] = []
        for i, result in enumerate(results):
            if isinstance(stype, Pdq) and (result.pdq_quality or 0) < self.settings.pdq_min_quality:
                continue
            for variant, value in stype.item_values(result):
                owners.append(i)
                variants.append(variant)
                values.append(value)
        return owners, variants, values
