"""The verification round trip: `safeset review export` hands the audit's held and removed rows to a
verifier as cases (hashes, URLs and ids; never bytes, thumbnails or captions), and `safeset review
import` takes their verdicts back into the bank home (`banks.verdicts`), where every later scan and
decide round applies them.

A case's id is stable across reruns and decide rounds: it is derived from the row id and the row's
MD5 and URL, not from when or how the row was decided.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..banks import BankStore
from ..banks.signal_types import HexDigestType, InvalidEntry, signal_type
from ..banks.verdicts import (
    CONFIRMED_BANK,
    VERDICTS,
    append,
    entry_tag,
    imported_files,
    log_path,
    pytx_lines,
    pytx_signals,
)
from ..banks.vpdq import signal_of
from ..csvrecords import csv_records
from ..errors import BadInputError, UsageError
from ..model import read_frames
from ..sinks import OutLayout
from .expand import CANDIDATES

CASE_FIELDS = (
    "case_id", "row_id", "key", "url", "md5", "sha1", "sha256", "pdq", "pdq_quality", "vpdq", "decision", "reasons",
    "matches", "signals", "seed", "similarity",
)  # fmt: skip
HASHES = ("md5", "sha1", "sha256", "pdq", "url")
_NAMES = ("case_id", "row_id", *HASHES)


def case_id(row_id: str, md5: str | None, url: str | None) -> str:
    text = f"{row_id}\0{md5 or ''}\0{url or ''}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def cases(out: str | Path, include: Sequence[str] = ("review", "remove")) -> list[dict[str, Any]]:
    """The audit's rows decided as `include` says, as cases (see the module)."""
    layout = OutLayout(out)
    parts = sorted(layout.results.glob("part-*.parquet"))
    if not parts:
        raise UsageError(f"{out} holds no scan results: run `safeset scan ... --out {out}` first")
    from .decide import read_results

    nearest: dict[str, tuple[str, float]] = {}
    for path in sorted(layout.expansion.glob(f"round-*/{CANDIDATES}")) if layout.expansion.is_dir() else ():
        for c in pq.read_table(path, columns=["row_id", "seed", "similarity"]).to_pylist():
            if c["row_id"] not in nearest or c["similarity"] > nearest[c["row_id"]][1]:
                nearest[c["row_id"]] = (c["seed"], c["similarity"])
    found = []
    for part in parts:
        table = read_results(part)
        table = table.filter(pc.is_in(table["decision"], value_set=pa.array(list(include), pa.string())))
        for row in table.select(
            ["row_id", "key", "url", "md5", "sha1", "sha256", "pdq", "pdq_quality", "frames", "decision", "reasons",
             "matches", "signals"]
        ).to_pylist():  # fmt: skip
            seed, similarity = nearest.get(row["row_id"], (None, None))
            found.append(
                {
                    "case_id": case_id(row["row_id"], row["md5"], row["url"]),
                    **{k: row[k] for k in ("row_id", "key", "url", "md5", "sha1", "sha256", "pdq", "pdq_quality")},
                    # a video's frames as python-threatexchange's vPDQ signal
                    "vpdq": signal_of(read_frames(row["frames"])) if row["frames"] else None,
                    "decision": row["decision"],
                    "reasons": list(row["reasons"] or []),
                    # the listed entries that matched (the only ones of a list an output may hold)
                    "matches": [f"{m['bank']}:{m['signal_type']}:{m['entry']}" for m in row["matches"] or []],
                    "signals": dict(row["signals"] or []),
                    "seed": seed,
                    "similarity": similarity,
                }
            )
    return found


def export(out: str | Path, to: str | Path, include: Sequence[str] = ("review", "remove"), fmt: str = "csv") -> dict:
    """Write `cases.csv` (or `.jsonl`) and `hashes.txt` (python-threatexchange's local file) of
    the cases into `to`, every file 0600; return what was written."""
    if fmt not in ("csv", "jsonl"):
        raise UsageError(f"--format {fmt!r}: csv or jsonl")
    found = cases(out, include)
    folder = Path(to)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, CASE_FIELDS, lineterminator="\n")
        writer.writeheader()
        for case in found:
            writer.writerow(
                {
                    **case,
                    "reasons": ";".join(case["reasons"]),
                    "matches": ";".join(case["matches"]),
                    "signals": json.dumps(case["signals"], sort_keys=True),
                }
            )
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps(case, sort_keys=True) + "\n" for case in found)
    written = {f"cases.{fmt}": text, "hashes.txt": "".join(f"{line}\n" for line in pytx_lines(found))}
    for name, content in written.items():
        _private(folder / name, content)
    return {"cases": len(found), "files": sorted(str(folder / name) for name in written), "include": list(include)}


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def _records(path: Path) -> list[tuple[int, dict | None]]:
    """(line number, record or None if unreadable) of a CSV or JSON-lines verdict file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise BadInputError(path, "is not UTF-8 text") from exc
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        found = []
        for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may be inside a string
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                found.append((number, record if isinstance(record, dict) else None))
        return found
    found, header = [], None
    for fields, _, number in csv_records(io.StringIO(text)):  # a stray quote costs its own line only
        if header is None:
            if fields is None:
                raise BadInputError(path, "its first line is no CSV header", line=number)
            header = [name.strip().lower() for name in fields]
            if "verdict" not in header:
                raise BadInputError(path, "has no verdict column (a header naming verdict and the case)", line=number)
            continue
        found.append((number, dict(zip(header, fields, strict=False)) if fields is not None else None))
    return found


def import_verdicts(
    path: str | Path,
    home: str | Path | None = None,
    out: str | Path | None = None,
    verifier: str = "",
    reference: str = "",
    skip_bad: bool = False,
    entries: bool = False,
) -> dict[str, Any]:
    """Take a verifier's verdicts into the bank home (see the module and `banks.verdicts`). A line
    names its case by `case_id` or `row_id` (both need `out`, the audit they came from) or by a
    hash (`md5`, `sha1`, `sha256`, `pdq`) or `url`, and gives a `verdict`; with `entries`, it
    names a listed entry instead, by `bank` and `entry` (the tag the report shows, or the listed
    value). Any bad line refuses the file (its line numbers reported, never its content) unless
    `skip_bad`. A file imported before changes nothing."""
    path = Path(path)
    store = BankStore(home)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    if digest is None:
        raise BadInputError(path, "no such file")
    if digest in imported_files(store.home):
        return {"file": str(path), "already_imported": True, "imported": 0}
    known = _Known(cases(out, ("keep", "review", "remove")) if out and not entries else [], store)
    listed = _Listed(store) if entries else None
    accepted, bad = [], []
    for number, record in _records(path):
        case, why = _entry(record, listed) if entries else _case(record, known, out is not None)
        if why:
            bad.append({"line": number, "reason": why})
        else:
            accepted.append((number, case))
    if entries:  # which entry each line names, the banks' entries hashed once for all lines
        listed.resolve()
        named = [(n, {**c, "entry_tag": listed.find(c["bank"], c.pop("candidates"))}) for n, c in accepted]
        accepted = [(n, c) for n, c in named if c["entry_tag"]]
        bad += [{"line": n, "reason": "names no entry of its bank"} for n, c in named if not c["entry_tag"]]
        bad.sort(key=lambda b: b["line"])
    if bad and not skip_bad:
        first = bad[0]
        raise BadInputError(
            path, f"{first['reason']} ({len(bad)} bad line(s); --skip-bad imports the rest)", line=first["line"]
        )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    records = [
        {
            **{k: case.get(k) for k in ("case_id", "row_id", *HASHES, "bank", "entry_tag") if case.get(k)},
            "verdict": case["verdict"],
            **({} if entries else {"matches": case.get("pairs", [])}),
            "verifier": verifier,
            "reference": reference,
            "time": now,
            "file_sha256": digest,
            "line": number,
        }
        for number, case in accepted
    ]
    # a confirmed image's hashes (a video's vPDQ signal too, named by its case), into the bank every
    # later scan and round matches, before the log says so
    confirmed = [
        (kind, value, record.get("case_id") or record.get("row_id") or "")
        for (_, case), record in zip(accepted, records, strict=True)
        if record["verdict"] == "confirmed" and "entry_tag" not in record
        for kind, value in pytx_signals({**record, "vpdq": case.get("vpdq")})
    ]
    if confirmed:
        staging = log_path(store.home).parent
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        listed = staging / f".confirmed-{digest[:16]}.csv"
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["type", "value", "id"])
        writer.writerows(confirmed)
        _private(listed, buffer.getvalue())
        try:
            label = f"hashes confirmed by verification ({verifier or 'unnamed verifier'})"
            store.add(CONFIRMED_BANK, listed, label=label)
        finally:
            listed.unlink(missing_ok=True)
    if records:  # a file none of whose lines was taken is not recorded: corrected, it can come again
        append(store.home, records)
    return {
        "file": str(path),
        "already_imported": False,
        "imported": len(records),
        "verdicts": dict(sorted(Counter(r["verdict"] for r in records).items())),
        "bad_lines": bad,
        "confirmed_hashes": len(confirmed),
    }


class _Known:
    """The audit's cases, by each name a verdict may give them; and the banks a verdict by hash
    alone refutes (those of the store when it is imported, never `confirmed`)."""

    def __init__(self, found: list[dict], store: BankStore):
        self.by = {name: {} for name in _NAMES}
        for case in found:
            for name in _NAMES:
                if case.get(name):
                    self.by[name].setdefault(str(case[name]).lower() if name != "url" else case[name], case)
        self.banks = [name for name in store.names() if name != CONFIRMED_BANK]

    def find(self, name: str, value: str) -> dict | None:
        return self.by[name].get(value.lower() if name != "url" else value)


class _Listed:
    """The entries of the banks verdict lines name, found by the tags the report shows (or by their
    values): each bank's entries are hashed once for all its lines, until every tag the lines may
    mean is found, and only those are kept."""

    def __init__(self, store: BankStore):
        self.store = store
        self.banks = {name: store.get(name) for name in store.names()}  # read once, not once a line
        self.wanted: dict[str, set[str]] = {}  # bank -> tags lines may mean
        self.held: dict[str, dict[str, str]] = {}  # bank -> {tag a line may mean: the entry's tag}

    def candidates(self, bank: str, entry: str) -> set[str]:
        """The tags `entry` may mean in `bank` (a tag itself, or a value in any form the bank's
        types normalise it to); none if there is no such bank."""
        if bank not in self.banks:
            return set()
        forms = {entry}
        for type_name in self.banks[bank].counts:
            try:
                forms.add(signal_type(type_name).normalise(entry))
            except InvalidEntry:
                pass
        found = set(map(entry_tag, forms)) | ({entry.lower()} if len(entry) == 12 else set())
        self.wanted.setdefault(bank, set()).update(found)
        return found

    def resolve(self) -> None:
        for bank, wanted in self.wanted.items():
            held = self.held.setdefault(bank, {})
            for alias, tag in self._tags(bank):
                if alias in wanted and alias not in held:
                    held[alias] = tag
                    if len(held) == len(wanted):
                        break

    def find(self, bank: str, candidates: set[str]) -> str | None:
        """The tag of the entry of `bank` one of `candidates` names (after `resolve`)."""
        return next((self.held.get(bank, {})[c] for c in sorted(candidates) if c in self.held.get(bank, {})), None)

    def _tags(self, bank: str) -> Iterator[tuple[str, str]]:
        """(a tag a line may give, the entry's tag) for every entry: a keyword's match records its
        place (`line:N`), so the tag of its term names it too; a listed video's, its label."""
        info = self.banks[bank]
        for type_name in info.counts:
            stype = signal_type(type_name)
            if isinstance(stype, HexDigestType):
                for row in self.store.load_rows(info, stype):
                    tag = entry_tag(row.tobytes().hex())
                    yield tag, tag
            elif type_name == "keyword":
                for stored in self.store.load(info, type_name):
                    term, _, place = stored.partition("\t")
                    tag = entry_tag(place)
                    yield tag, tag
                    yield entry_tag(term), tag
            elif type_name == "vpdq":  # a listed video's match records its label
                for stored in self.store.load(info, type_name):
                    tag = entry_tag(stored.partition("\t")[0])
                    yield tag, tag
            else:
                for value in self.store.load(info, type_name):
                    tag = entry_tag(value)
                    yield tag, tag


def _fields(record: dict | None) -> tuple[dict, str, str]:
    """A verdict line's fields (names lower-cased, values stripped) and verdict; or why it is bad
    (never quoting the line: verdict files hold what hotlines send)."""
    if record is None:
        return {}, "", "could not be read as a record (a stray quote, or not a JSON object)"
    record = {str(k).strip().lower(): (str(v).strip() if v is not None else "") for k, v in record.items()}
    verdict = record.get("verdict", "").lower().replace("-", "_").replace(" ", "_")
    if verdict not in VERDICTS:
        return {}, "", f"no verdict of {', '.join(VERDICTS)}"
    return record, verdict, ""


def _entry(record: dict | None, listed: _Listed) -> tuple[dict, str]:
    """A verdict line on a listed entry (`--entry`): its bank and the tags its entry may have (see
    `_Listed`, which finds which one it has); or why it is bad."""
    record, verdict, why = _fields(record)
    if why:
        return {}, why
    if not record.get("bank") or not record.get("entry"):
        return {}, "names no listed entry (bank and entry)"
    candidates = listed.candidates(record["bank"], record["entry"])
    if not candidates:
        return {}, "names a bank this bank home does not hold"
    return {"bank": record["bank"], "candidates": candidates, "verdict": verdict}, ""


def _case(record: dict | None, known: _Known, have_out: bool) -> tuple[dict, str]:
    """A verdict line as a case with its hashes and matched pairs; or the reason it is bad."""
    record, verdict, why = _fields(record)
    if why:
        return {}, why
    named = [name for name in _NAMES if record.get(name)]
    if not named:
        return {}, f"names no case (one of {', '.join(_NAMES)})"
    if named[0] in ("case_id", "row_id"):
        if not have_out:
            return {}, f"names its case by {named[0]}: give the audit it came from (--out)"
        case = known.find(named[0], record[named[0]])
        if case is None:
            return {}, f"its {named[0]} is no row of the audit"
        pairs = [m.split(":", 2)[0:3:2] for m in case["matches"]]
        return {**case, "verdict": verdict, "pairs": pairs}, ""
    case = {}
    for name in named:
        try:
            case[name] = signal_type(name).normalise(record[name]) if name != "url" else record[name]
        except InvalidEntry:
            return {}, f"its {name} is not a valid {name}"
    match = next((c for n in case if (c := known.find(n, case[n])) is not None), None)
    if match is not None:  # the audit's case: its every name, and the entries that matched it
        pairs = [m.split(":", 2)[0:3:2] for m in match["matches"]]
        named_too = {n: match[n] for n in (*HASHES, "vpdq") if match.get(n)}
        return {**named_too, **case, "verdict": verdict, "pairs": pairs}, ""
    if not any(case.get(n) for n in ("md5", "sha256", "url")):
        return {}, "names its image by sha1 or pdq alone, which no audit row has here: give md5, sha256 or url"
    # named by hash alone: any entry of the banks there are now (never the confirmed one) on it
    return {**case, "verdict": verdict, "pairs": [[bank, "*"] for bank in known.banks]}, ""
