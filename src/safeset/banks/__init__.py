"""Banks: named hash lists in a local store, their indexes, and matching. Pure: no I/O beyond the store."""

from .index import ExactHashIndex, PdqIndex, SignalIndex, TextIndex
from .listfile import LineError, ParsedList, parse_list
from .matcher import Matcher, MatchSettings
from .signal_types import SIGNAL_TYPES, InvalidEntry, SignalType, signal_type
from .store import AddResult, BankInfo, BankStore, default_home

__all__ = [
    "SIGNAL_TYPES",
    "AddResult",
    "BankInfo",
    "BankStore",
    "ExactHashIndex",
    "InvalidEntry",
    "LineError",
    "MatchSettings",
    "Matcher",
    "ParsedList",
    "PdqIndex",
    "SignalIndex",
    "SignalType",
    "TextIndex",
    "default_home",
    "parse_list",
    "signal_type",
]
