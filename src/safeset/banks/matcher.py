"""Matching a table of results against a set of banks, column by column (see `banks.columns`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..hashing.digests import domain_suffixes, url_host
from ..model import Match
from .columns import VIDEO_FRAME, Queries
from .index import ExactHashIndex, PdqIndex, SignalIndex, TextIndex
from .keywords import KeywordIndex
from .signal_types import SIGNAL_TYPES, HexDigestType, Keyword, Pdq, Vpdq, signal_type
from .store import BankInfo, BankStore
from .vpdq import COMPARED_PERCENT, QUERY_PERCENT, VpdqIndex

# At most this many PDQ (or vPDQ) matches per item and bank are recorded, nearest first: a near-blank
# image can sit close to thousands of listed hashes, and the report needs the evidence, not all of it.
MAX_PDQ_MATCHES = 16


@dataclass(frozen=True)
class MatchSettings:
    pdq_threshold: int = 31
    pdq_min_quality: int = 50
    # Each query-side variant is one more chance to hit a wrong entry, so variants may be held to a
    # tighter threshold than the plain hash (`safeset bench hashers` measures both).
    pdq_variant_threshold: int | None = None
    vpdq_query_percent: float = QUERY_PERCENT
    vpdq_compared_percent: float = COMPARED_PERCENT

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
                elif isinstance(stype, Vpdq):
                    indexes[(bank.name, type_name)] = VpdqIndex.from_entries(values, settings.pdq_min_quality)
                elif isinstance(stype, HexDigestType):
                    indexes[(bank.name, type_name)] = ExactHashIndex(values, stype.width)
                elif isinstance(stype, Keyword):
                    indexes[(bank.name, type_name)] = KeywordIndex(values)
                else:
                    indexes[(bank.name, type_name)] = TextIndex(values)
        return cls(indexes, settings)

    def search(self, table: pa.Table) -> dict[int, list[Match]]:
        """Every listed entry each row of a results table matches, any of its payloads and
        variants, by row (rows that match nothing are absent). Per row: banks in order, then by
        distance, payload and entry. An entry reached by several variants of one payload is
        recorded once, at its nearest (the first variant by name among equals)."""
        found: dict[int, list[Match]] = defaultdict(list)
        asked: dict[str, Queries] = {}  # one type's queries serve every bank of that type
        for (bank, type_name), index in self._indexes.items():
            stype = signal_type(type_name)
            if type_name not in asked:
                asked[type_name] = stype.queries(table, self.settings.pdq_min_quality)
            queries = asked[type_name]
            if not len(queries):
                continue
            if isinstance(index, VpdqIndex):
                for owner, matches in self._videos(bank, index, queries).items():
                    found[owner].extend(matches)
                continue
            pdq = isinstance(stype, Pdq)
            radius = max(self.settings.pdq_threshold, self.settings.variant_threshold) if pdq else 0
            q, e, d = index.search(queries.values, radius=radius)
            if pdq:
                # a video's frame is a plain hash of a picture, held to the plain threshold
                plain = [name == "" or name.startswith(VIDEO_FRAME) for name in queries.variant_names]
                plain_variant = np.array(plain)[queries.variants[q]]
                limits = np.where(plain_variant, self.settings.pdq_threshold, self.settings.variant_threshold)
                near = d <= limits
                q, e, d = q[near], e[near], d[near]
            best: dict[tuple[int, int, int], Match] = {}
            for qi, ei, dist in zip(q.tolist(), e.tolist(), d.tolist(), strict=True):
                key = (int(queries.owners[qi]), int(queries.payloads[qi]), ei)
                match = Match(bank, type_name, index.entry(ei), int(dist), queries.variant(qi), queries.payload(qi))
                if key not in best or (match.distance, match.variant) < (best[key].distance, best[key].variant):
                    best[key] = match
            per_row: dict[int, list[Match]] = defaultdict(list)
            for (owner, _, _), match in best.items():
                per_row[owner].append(match)
            for owner, matches in per_row.items():
                matches.sort(key=lambda m: (m.distance, m.payload, m.entry))
                found[owner].extend(matches[:MAX_PDQ_MATCHES] if pdq else matches)
        return found

    def _videos(self, bank: str, index: VpdqIndex, queries: Queries) -> dict[int, list[Match]]:
        """The vPDQ matches of the videos among `queries` (each (row, payload) one video), by row:
        nearest (highest query share) first, then by payload and listed video."""
        videos, group = np.unique(queries.owners * len(queries.payload_names) + queries.payloads, return_inverse=True)
        settings = self.settings
        found: dict[int, list[Match]] = defaultdict(list)
        hits = index.match_groups(
            group, queries.values, settings.pdq_threshold, settings.vpdq_query_percent, settings.vpdq_compared_percent
        )
        for g, v, q_pct, c_pct in zip(*(h.tolist() for h in hits), strict=True):
            owner, payload = divmod(int(videos[g]), len(queries.payload_names))
            name = queries.payload_names[payload]
            found[owner].append(Match(bank, "vpdq", index.entry(v), 0, "", name, round(q_pct, 2), round(c_pct, 2)))
        for matches in found.values():
            matches.sort(key=lambda m: (-m.query_percent, m.payload, m.entry))
            del matches[MAX_PDQ_MATCHES:]
        return found

    def optout_reason(self, url: str) -> str | None:
        """Why a URL must not even be requested: its domain is on a `domain` bank (opt-out lists)."""
        host = url_host(url)
        suffixes = domain_suffixes(host) if host else []
        for (bank, type_name), index in self._indexes.items():
            if type_name == "domain" and suffixes and len(index.search(suffixes)[0]):
                return f"listed domain ({bank})"
        return None
