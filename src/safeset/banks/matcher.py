"""Matching a batch of item results against a set of banks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..hashing.digests import domain_suffixes, url_host
from ..model import ItemResult, Match
from .index import ExactHashIndex, PdqIndex, SignalIndex, TextIndex
from .signal_types import SIGNAL_TYPES, HexDigestType, Pdq, SignalType, signal_type
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
                values = store.load(bank, type_name)
                stype = signal_type(type_name)
                if isinstance(stype, Pdq):
                    indexes[(bank.name, type_name)] = PdqIndex(values, store.load_tables(bank))
                elif isinstance(stype, HexDigestType):
                    indexes[(bank.name, type_name)] = ExactHashIndex(values, stype.width)
                else:
                    indexes[(bank.name, type_name)] = TextIndex(values)
        return cls(indexes, settings)

    def match(self, results: Sequence[ItemResult]) -> None:
        """Append to each result's `matches` every listed entry any of its payloads matches, in a
        stable order. An entry reached by several PDQ variants of one payload is recorded once, at
        its nearest."""
        for (bank, type_name), index in self._indexes.items():
            stype = signal_type(type_name)
            queries = self._queries(results, stype)
            if not queries.values:
                continue
            if isinstance(stype, HexDigestType):
                values = np.frombuffer(bytes.fromhex("".join(queries.values)), dtype=np.uint8)
                searched = values.reshape(-1, stype.width)
            else:
                searched = queries.values
            radius = max(self.settings.pdq_threshold, self.settings.variant_threshold) if isinstance(stype, Pdq) else 0
            q, e, d = index.search(searched, radius=radius)
            best: dict[tuple[int, str, int], Match] = {}
            for qi, ei, dist in zip(q.tolist(), e.tolist(), d.tolist(), strict=True):
                variant = queries.variants[qi]
                limit = self.settings.pdq_threshold if not variant else self.settings.variant_threshold
                if dist > limit:
                    continue
                key = (queries.owners[qi], queries.payloads[qi], ei)
                if key not in best or dist < best[key].distance:
                    best[key] = Match(bank, type_name, index.entry(ei), int(dist), variant, queries.payloads[qi])
            per_item: dict[int, list[Match]] = defaultdict(list)
            for (owner, _, _), found in best.items():
                per_item[owner].append(found)
            for owner, matches in sorted(per_item.items()):
                matches.sort(key=lambda m: (m.distance, m.payload, m.entry))
                results[owner].matches.extend(matches[:MAX_PDQ_MATCHES] if isinstance(stype, Pdq) else matches)

    def optout_reason(self, url: str) -> str | None:
        """Why a URL must not even be requested: its domain is on a `domain` bank (opt-out lists)."""
        host = url_host(url)
        suffixes = domain_suffixes(host) if host else []
        for (bank, type_name), index in self._indexes.items():
            if type_name == "domain" and suffixes and len(index.search(suffixes)[0]):
                return f"listed domain ({bank})"
        return None

    def _queries(self, results: Sequence[ItemResult], stype: SignalType) -> _Queries:
        queries = _Queries()
        for i, result in enumerate(results):
            for payload, hashes in result.hashed() if stype.per_payload else [("", result)]:
                for variant, value in stype.item_values(hashes):
                    # A flat image's bits are noise: the plain hash is held to the quality gate here,
                    # each variant (with a quality of its own) was when it was made.
                    if (
                        isinstance(stype, Pdq)
                        and not variant
                        and (hashes.pdq_quality or 0) < self.settings.pdq_min_quality
                    ):
                        continue
                    queries.add(i, payload, variant, value)
        return queries


@dataclass
class _Queries:
    """Parallel lists: which result, payload and variant each queried value comes from."""

    owners: list[int] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)

    def add(self, owner: int, payload: str, variant: str, value: str) -> None:
        self.owners.append(owner)
        self.payloads.append(payload)
        self.variants.append(variant)
        self.values.append(value)
