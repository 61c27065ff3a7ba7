"""Policy: turns an item's matches and check coverage into keep / remove / review. Pure.

A policy is a small TOML file (see `presets/`):

    name = "mine"
    [match]
    default = "remove"            # a match in any bank not listed below
    [match.banks]
    watchlist = "review"          # per-bank action
    [unchecked]                   # items whose image could not be (fully) checked
    no_image = "keep"
    fetch_failed = "review"
    decode_failed = "review"
    pdq_low_quality = "keep"
    skipped_optout = "remove"

    [[rules]]                     # actions on signals, keyword lists and matches together
    name = "scored"               # (see `policy.rules` for the conditions)
    action = "remove"
    all = ["punsafe > 0.95", "keyword"]
    [expand]                      # rows `safeset expand` found near a seed (reason expand:N)
    action = "review"             # the default: similarity alone removes nothing; a rule on
                                  # the signal nn_similarity can (e.g. "nn_similarity >= 0.95")
    [copies]                      # rows whose image is a copy of a removed row's (copy_of:ROW)
    action = "review"             # the default; "keep" turns the search for copies off
    [flood]                       # a listed entry matching more rows than this in one audit
    limit = 1000                  # is quarantined: its matches go to review (flood:BANK:TAG);
                                  # 0 turns it off; "0.1%": a share of the audit's rows

Every factor that applies becomes a reason (`match:BANK:TYPE`, `unchecked:CONDITION`,
`rule:NAME`, `expand:N`, `copy_of:ROW`, `verdict:V`, `flood:BANK:TAG`), and the most severe
action among them wins: remove > review > keep. `[match]` acts on hash and URL lists; a keyword
list's term in a caption is evidence that only rules act on (a word is not an image).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, UsageError
from ..model import LOW_QUALITY, Decision, Status
from .rules import Rule, fired_rules, parse_rules

_SEVERITY = {Decision.KEEP: 0, Decision.REVIEW: 1, Decision.REMOVE: 2}
_DEFAULT_VERDICTS = {"false_positive": Decision.KEEP, "disputed": Decision.REVIEW}

UNCHECKED_CONDITIONS: tuple[str, ...] = tuple(s.value for s in Status if s is not Status.OK) + (LOW_QUALITY,)

_DEFAULT_UNCHECKED = {
    Status.NO_IMAGE.value: Decision.KEEP,
    Status.FETCH_FAILED.value: Decision.KEEP,
    Status.DECODE_FAILED.value: Decision.KEEP,
    # Bytes that are not an image safeset decodes, and rows that could not be read: their content
    # went unchecked but for exact hashes, so by default someone looks at the hashes and the URL.
    Status.UNSUPPORTED_MEDIA.value: Decision.REVIEW,
    Status.VIDEO_INCOMPLETE.value: Decision.REVIEW,
    Status.UNREADABLE_ROW.value: Decision.REVIEW,
    Status.SKIPPED_OPTOUT.value: Decision.REMOVE,
    LOW_QUALITY: Decision.KEEP,
}


def _presets_dir():
    return resources.files(__package__) / "presets"


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in _presets_dir().iterdir() if p.name.endswith(".toml"))


def flood_limit(value: object) -> int | str | None:
    """A flood limit as given (a whole number of rows, or a percentage of the audit's rows such as
    "0.1%", in (0, 100]), normalised; None if it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        number = text[:-1].strip() if text.endswith("%") else ""
        try:
            share = float(number)
        except ValueError:
            return None
        return f"{share:g}%" if 0 < share <= 100 else None
    return None


@dataclass(frozen=True)
class Policy:
    name: str = "default"
    match_default: Decision = Decision.REMOVE
    match_banks: Mapping[str, Decision] = field(default_factory=dict)
    unchecked: Mapping[str, Decision] = field(default_factory=lambda: dict(_DEFAULT_UNCHECKED))
    rules: tuple[Rule, ...] = ()
    expand: Decision = Decision.REVIEW  # a neighbour-expansion candidate's action
    copies: Decision = Decision.REVIEW  # a copy of a removed row's image (see `pipeline.copies`)
    # verification verdicts on a row's image (`banks.verdicts`): a false positive's matches are
    # dropped and the row kept, unless this says review; a disputed one held for review
    verdicts: Mapping[str, Decision] = field(default_factory=lambda: dict(_DEFAULT_VERDICTS))
    # rows one listed entry may match in an audit before it is quarantined (0 never), or a share
    # of the audit's rows ("0.1%"): see `flood_limit`
    flood: int | str = 1000

    @classmethod
    def preset(cls, name: str) -> Policy:
        if name not in preset_names():
            raise UsageError(f"no policy preset {name!r}; presets: {', '.join(preset_names())}")
        return cls.from_toml_text((_presets_dir() / f"{name}.toml").read_text(), source=f"preset {name}")

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise BadInputError(path, f"cannot read policy: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInputError(path, "not UTF-8 text", line=raw[: exc.start].count(b"\n") + 1) from None
        return cls.from_toml_text(text, source=str(path))

    @classmethod
    def from_toml_text(cls, text: str, source: str) -> Policy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BadInputError(source, f"not valid TOML: {exc}") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "policy") -> Policy:
        unknown = set(data) - {"name", "match", "unchecked", "rules", "expand", "copies", "verdicts", "flood"}
        if unknown:
            raise BadInputError(source, f"unknown policy section(s): {', '.join(sorted(unknown))}")
        if not isinstance(data.get("name", ""), str):
            raise BadInputError(source, "name must be a string")
        match = dict(_table(data, "match", source))
        banks = _table(match, "banks", source, "match.banks")
        match.pop("banks", None)
        if set(match) - {"default"}:
            raise BadInputError(source, f"unknown key(s) in [match]: {', '.join(sorted(set(match) - {'default'}))}")
        unchecked = _table(data, "unchecked", source)
        bad = set(unchecked) - set(UNCHECKED_CONDITIONS)
        if bad:
            raise BadInputError(
                source,
                f"unknown condition(s) in [unchecked]: {', '.join(sorted(bad))}; "
                f"known: {', '.join(UNCHECKED_CONDITIONS)}",
            )
        sections = {}
        for section in ("expand", "copies"):
            table = _table(data, section, source)
            if set(table) - {"action"}:
                raise BadInputError(
                    source, f"unknown key(s) in [{section}]: {', '.join(sorted(set(table) - {'action'}))}"
                )
            sections[section] = _action(table.get("action", "review"), source, f"{section}.action")
        verdicts = _table(data, "verdicts", source)
        if set(verdicts) - set(_DEFAULT_VERDICTS):
            known = ", ".join(_DEFAULT_VERDICTS)
            raise BadInputError(source, f"unknown key(s) in [verdicts]: {', '.join(sorted(verdicts))}; known: {known}")
        flood = _table(data, "flood", source)
        limit = flood.get("limit", 1000)
        if set(flood) - {"limit"} or flood_limit(limit) is None:
            raise BadInputError(
                source, '[flood] takes limit = a whole number of rows (0: never quarantine) or a share such as "0.1%"'
            )
        sections["flood"] = flood_limit(limit)
        sections["verdicts"] = {
            **_DEFAULT_VERDICTS,
            **{k: _action(v, source, f"verdicts.{k}") for k, v in verdicts.items()},
        }
        return cls(
            name=str(data.get("name", Path(source).stem)),
            **sections,
            match_default=_action(match.get("default", "remove"), source, "match.default"),
            match_banks={b: _action(a, source, f"match.banks.{b}") for b, a in banks.items()},
            unchecked={**_DEFAULT_UNCHECKED, **{k: _action(v, source, f"unchecked.{k}") for k, v in unchecked.items()}},
            rules=parse_rules(data.get("rules", []), source, _action),
        )

    def check_banks(self, known: Sequence[str]) -> None:
        """A policy that names a bank the store does not hold is a mistake (a typo would otherwise
        leave that bank's matches to the default action without a word): `UsageError`."""
        named = {c.name for rule in self.rules for c in rule.conditions if c.kind in ("match", "keyword") and c.name}
        unknown = sorted((set(self.match_banks) | named) - set(known))
        if unknown:
            raise UsageError(
                f"policy {self.name!r} names bank(s) {', '.join(unknown)}, which the store does not hold "
                "(see `safeset bank list`)"
            )

    def to_dict(self) -> dict[str, Any]:
        return (
            {
                "name": self.name,
                "match": {
                    "default": str(self.match_default),
                    "banks": {k: str(v) for k, v in sorted(self.match_banks.items())},
                },
                "unchecked": {k: str(self.unchecked[k]) for k in UNCHECKED_CONDITIONS},
            }
            | ({"rules": [rule.to_dict() for rule in self.rules]} if self.rules else {})
            | ({"expand": {"action": str(self.expand)}} if self.expand != Decision.REVIEW else {})
            | ({"copies": {"action": str(self.copies)}} if self.copies != Decision.REVIEW else {})
            | ({"flood": {"limit": self.flood}} if self.flood != 1000 else {})
            | (
                {"verdicts": {k: str(v) for k, v in sorted(self.verdicts.items())}}
                if dict(self.verdicts) != _DEFAULT_VERDICTS
                else {}
            )
        )

    @property
    def signals(self) -> list[str]:
        """The signals the rules read (lower case), which a scan must record."""
        return sorted(set().union(*(rule.signals for rule in self.rules)))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def judge(
        self,
        matched: Iterable[tuple[str, str]],
        status: str,
        low_quality: bool,
        fired: Iterable[Rule] = (),
        noted: Sequence[str] = (),
    ) -> tuple[Decision, list[str]]:
        """The decision and reasons for a row: `matched` its (bank, signal type) pairs in order,
        `status` its status, `low_quality` whether an image of it was too flat for its PDQ to
        count (or it decoded with none), `fired` the rules it fires, `noted` what a round found of
        it beyond its own observations (`expand:N`, `copy_of:ROW`)."""
        actions: dict[str, Decision] = {}
        for bank, type_name in matched:
            if type_name != "keyword":
                actions[f"match:{bank}:{type_name}"] = self.match_banks.get(bank, self.match_default)
        if status != Status.OK:
            actions[f"unchecked:{status}"] = self.unchecked[status]
        if low_quality:
            actions[f"unchecked:{LOW_QUALITY}"] = self.unchecked[LOW_QUALITY]
        for rule in fired:
            actions[rule.reason] = rule.action
        for reason in noted:
            actions[reason] = self.action_of(reason) or Decision.REVIEW
        return max(actions.values(), key=_SEVERITY.__getitem__, default=Decision.KEEP), list(actions)

    def decide_rows(
        self,
        status_codes: np.ndarray,
        status_names: Sequence[str],
        low_quality: np.ndarray,
        matched: Mapping[int, Sequence[tuple[str, str]]],
        signals: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
        noted: Mapping[int, Sequence[str]] | None = None,
    ) -> tuple[list[Decision], list[list[str]], np.ndarray]:
        """`judge` for many rows at once (statuses as codes into `status_names`; `signals` the
        (values, present) of each signal the rules read, see `rules.signal_values`; `noted`
        the reasons a round found for some rows, see `judge`): the distinct decisions, their reasons, and each row's
        index into them. Rows that neither match nor are candidates are judged once per (status,
        quality, rules fired) they share; the others one by one."""
        codes = status_codes.astype(np.int64)
        fired = np.zeros(len(codes), np.int64)
        if self.rules:
            names = np.asarray(status_names, dtype=object)[codes] if len(codes) else np.zeros(0, object)
            fired = fired_rules(self.rules, len(codes), signals or {}, matched, names)
        shared, chosen = np.unique(((codes * 2 + low_quality) << len(self.rules)) | fired, return_inverse=True)
        outcomes: dict[tuple[Decision, tuple[str, ...]], int] = {}
        remap = []
        for key in shared.tolist():
            rules, state = self._fired(key), key >> len(self.rules)
            decision, reasons = self.judge((), status_names[state // 2], bool(state % 2), rules)
            remap.append(outcomes.setdefault((decision, tuple(reasons)), len(outcomes)))
        chosen = np.asarray(remap, np.int64)[chosen] if remap else np.zeros(0, np.int64)
        noted = noted or {}
        for row in sorted(set(matched) | set(noted)):
            status = status_names[status_codes[row]]
            decision, reasons = self.judge(
                matched.get(row, ()), status, bool(low_quality[row]), self._fired(int(fired[row])), noted.get(row, ())
            )
            chosen[row] = outcomes.setdefault((decision, tuple(reasons)), len(outcomes))
        distinct = list(outcomes)
        return [d for d, _ in distinct], [list(r) for _, r in distinct], chosen

    def action_of(self, reason: str) -> Decision | None:
        """The action this policy gives a reason it could have written; None for any other."""
        kind, _, rest = reason.partition(":")
        if kind == "match":
            return self.match_banks.get(rest.rpartition(":")[0], self.match_default)
        if kind == "unchecked":
            return self.unchecked.get(rest)
        if kind == "rule":
            return next((rule.action for rule in self.rules if rule.reason == reason), None)
        if kind == "verdict":
            return self.verdicts.get(rest)
        if kind == "flood":  # a quarantined entry's matches are held, whatever the bank's action
            return Decision.REVIEW
        return {"expand": self.expand, "copy_of": self.copies}.get(kind)

    def _fired(self, mask: int) -> list[Rule]:
        return [rule for bit, rule in enumerate(self.rules) if mask >> bit & 1]


def _table(data: Mapping[str, Any], key: str, source: str, where: str | None = None) -> Mapping[str, Any]:
    """`data[key]`, which must be a TOML table (a missing one is empty)."""
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise BadInputError(source, f"[{where or key}] must be a table of names to actions, not {type(value).__name__}")
    return value


def _action(value: Any, source: str, key: str) -> Decision:
    try:
        return Decision(value) if isinstance(value, str) else Decision("not an action")
    except ValueError:
        raise BadInputError(source, f"{key} = {value!r}: expected keep, remove or review") from None
