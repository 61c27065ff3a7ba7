"""Policy rules: actions on combinations of signals, matches and statuses, evaluated a column at
a time over a table of results.

    [[rules]]
    name = "relaion-research"
    action = "remove"
    all = ["punsafe > 0.95", "keyword"]     # every one must hold
    any = ["nsfw >= 0.8", "match:iwf"]      # and, if given, at least one of these

Conditions, in a grammar of our own (never `eval`):
- `SIGNAL OP NUMBER`, OP one of `> >= < <= == !=`: a signal of the row (a numeric column of the
  input, such as LAION's `punsafe`, named in any case). On a row without that signal the
  condition is false, and so is its `not`: a missing score never fires a rule.
- `match` / `match:BANK`: a match in any hash or URL list / in bank BANK.
- `keyword` / `keyword:BANK`: a keyword list's term in the caption / of bank BANK.
- `status:STATUS`: the row's status (`ok`, `no_image`, `decode_failed`, ...).
- `not COND`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import BadInputError
from ..hashing.columns import whole
from ..model import Decision, Status

# A row's fired rules are a bit mask in one int64, above its status and quality (a status code
# and a bit: 6 bits leave room for 64 statuses)
MAX_RULES = 56

_OPERATORS = {
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_COMPARISON = re.compile(rf"({_NAME})\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_REFERENCE = re.compile(rf"(match|keyword|status)(?::({_NAME}))?")
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_STATUSES = {str(s) for s in Status}


@dataclass(frozen=True)
class Condition:
    kind: str  # "signal", "match", "keyword" or "status"
    name: str  # the signal (lower case), the bank ("" any), or the status
    op: str = ""
    value: float = 0.0
    negated: bool = False

    def __str__(self) -> str:
        # the number as it reads back exactly: a policy is stored this way and decided again from it
        body = f"{self.name} {self.op} {self.value!r}" if self.kind == "signal" else self.kind
        if self.kind != "signal" and self.name:
            body += f":{self.name}"
        return f"not {body}" if self.negated else body


def parse_condition(text: str) -> Condition:
    """One condition (see the module); ValueError with the reason if malformed."""
    if not isinstance(text, str):
        raise ValueError(f"a condition is a string, not {type(text).__name__}")
    body = text.strip()
    negated = False
    if re.match(r"not\s", body):
        negated, body = True, body[4:].strip()
    if comparison := _COMPARISON.fullmatch(body):
        name, op, number = comparison.groups()
        value = float(number)
        if not np.isfinite(value):
            raise ValueError(f"{text!r}: the number must be finite")
        return Condition("signal", name.lower(), op, value, negated)
    if reference := _REFERENCE.fullmatch(body):
        kind, name = reference.group(1), reference.group(2) or ""
        if kind == "status" and name not in _STATUSES:
            raise ValueError(f"{text!r}: status must be one of {', '.join(sorted(_STATUSES))}")
        return Condition(kind, name, negated=negated)
    raise ValueError(
        f"{text!r} is not a condition (expected 'SIGNAL OP NUMBER', 'match[:BANK]', 'keyword[:BANK]', "
        "'status:STATUS', or 'not' before one)"
    )


@dataclass(frozen=True)
class Rule:
    name: str
    action: Decision
    all: tuple[Condition, ...] = ()
    any: tuple[Condition, ...] = ()

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return self.all + self.any

    @property
    def signals(self) -> set[str]:
        """The signals its conditions read."""
        return {c.name for c in self.conditions if c.kind == "signal"}

    @property
    def reason(self) -> str:
        return f"rule:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        shown = {"name": self.name, "action": str(self.action), "all": [str(c) for c in self.all]}
        return shown | ({"any": [str(c) for c in self.any]} if self.any else {})


def parse_rules(raw: Any, source: str, action: Any) -> tuple[Rule, ...]:
    """The `[[rules]]` of a policy; `action` turns an action's text into a `Decision` (or raises
    `BadInputError`). Errors name the policy and the rule."""
    if not isinstance(raw, list) or not all(isinstance(r, Mapping) for r in raw):
        raise BadInputError(source, "rules must be an array of tables ([[rules]])")
    if len(raw) > MAX_RULES:
        raise BadInputError(source, f"{len(raw)} rules; at most {MAX_RULES}")
    rules: list[Rule] = []
    for number, entry in enumerate(raw, 1):
        name = entry.get("name")
        where = f"rule {name!r}" if isinstance(name, str) else f"rule {number}"
        if not isinstance(name, str) or not _RULE_NAME.fullmatch(name):
            raise BadInputError(source, f"{where}: name must be letters, digits, '_', '.', '-' (max 64)")
        if any(rule.name == name for rule in rules):
            raise BadInputError(source, f"{where}: a second rule of that name")
        unknown = set(entry) - {"name", "action", "all", "any"}
        if unknown:
            raise BadInputError(source, f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        lists = {}
        for key in ("all", "any"):
            value = entry.get(key, [])
            if not isinstance(value, list):
                raise BadInputError(source, f"{where}: {key} must be an array of conditions")
            try:
                lists[key] = tuple(parse_condition(c) for c in value)
            except ValueError as exc:
                raise BadInputError(source, f"{where}: {exc}") from None
        if not lists["all"] and not lists["any"]:
            raise BadInputError(source, f"{where}: no condition (give 'all', 'any' or both)")
        rules.append(Rule(name, action(entry.get("action"), source, f"{where} action"), lists["all"], lists["any"]))
    return tuple(rules)


def signal_entries(signals: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array, np.ndarray, np.ndarray]:
    """The entries of a `signals` column, flat: each one's row, name, value (float64) and whether
    the value is there. From the map's own offsets (`list_parent_indices` aborts on maps): a
    few numpy passes, where a lookup per name and row costs ten times as much."""
    signals = whole(signals)
    offsets = signals.offsets.to_numpy() if len(signals) else np.zeros(1, np.int32)
    owners = np.repeat(np.arange(len(signals)), np.diff(offsets))
    start, length = int(offsets[0]), int(offsets[-1] - offsets[0])
    items = signals.items.slice(start, length) if len(signals) else pa.array([], pa.float32())
    names = signals.keys.slice(start, length) if len(signals) else pa.array([], pa.string())
    values = pc.fill_null(items, 0).to_numpy(zero_copy_only=False).astype(np.float64)
    valid = items.is_valid().to_numpy(zero_copy_only=False)
    if signals.null_count:  # a null map may still span entries (Arrow allows it): they are not its
        held = signals.is_valid().to_numpy(zero_copy_only=False)[owners]
        owners, names, values, valid = owners[held], names.filter(pa.array(held)), values[held], valid[held]
    return owners, names, values, valid


def signal_values(table: pa.Table, names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(values, present) of each named signal over a results table's rows, from its `signals`
    (a name held twice by a row: its first value)."""
    rows = table.num_rows
    owners, held, values, valid = signal_entries(table["signals"]) if names else (None, None, None, None)
    found = {}
    for name in names:
        at = np.flatnonzero(pc.fill_null(pc.equal(held, name), False).to_numpy(zero_copy_only=False))
        first = at[np.r_[True, np.diff(owners[at]) != 0]] if len(at) else at
        value, present = np.zeros(rows), np.zeros(rows, bool)
        value[owners[first]], present[owners[first]] = values[first], valid[first]
        found[name] = (np.where(present, value, 0.0), present)
    return found


def signal_holds(condition: Condition, signals: Mapping[str, tuple[np.ndarray, np.ndarray]], rows: int) -> np.ndarray:
    """Where a signal condition holds: false where the row lacks the signal, `not` or not."""
    values, present = signals.get(condition.name, (np.zeros(rows), np.zeros(rows, bool)))
    result = _OPERATORS[condition.op](values, condition.value)
    return present & (~result if condition.negated else result)


def signal_conditions(rules: Sequence[Rule]) -> list[Condition]:
    """The distinct conditions on signals of some rules, in order (the report counts each)."""
    return list(dict.fromkeys(c for rule in rules for c in rule.conditions if c.kind == "signal"))


def fired_rules(
    rules: Sequence[Rule],
    rows: int,
    signals: Mapping[str, tuple[np.ndarray, np.ndarray]],
    matched: Mapping[int, Sequence[tuple[str, str]]],
    status: np.ndarray,
) -> np.ndarray:
    """The bit mask of the rules each row fires, as int64. `matched`: each matching row's (bank,
    signal type) pairs; `status`: statuses."""
    mask = np.zeros(rows, np.int64)
    for bit, rule in enumerate(rules):

        def holds(condition: Condition) -> np.ndarray:
            if condition.kind == "signal":
                return signal_holds(condition, signals, rows)
            if condition.kind == "status":
                result = status == condition.name
            else:
                result = np.zeros(rows, bool)
                keyword = condition.kind == "keyword"
                for row, pairs in matched.items():
                    result[row] = any(
                        (type_name == "keyword") == keyword and condition.name in ("", bank)
                        for bank, type_name in pairs
                    )
            return ~result if condition.negated else result

        fires = np.ones(rows, bool)
        for condition in rule.all:
            fires &= holds(condition)
        if rule.any:
            fires &= np.logical_or.reduce([holds(c) for c in rule.any])
        mask |= fires.astype(np.int64) << bit
    return mask
