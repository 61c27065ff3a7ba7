"""Settings a user sets on the command line, described where the settings live.

A field of a settings dataclass (`ReadOptions`, `FetchOptions`) that is a command-line option says
so in its metadata, with `option(...)`: its help, its bounds or choices, and its flag where that is
not the field's name. The CLI derives its options from these (`cli.options.of`), so a default, a
bound or a help text is written once, beside the field it sets. Nothing here imports click: the
settings stay plain data for the Python API and the workers.
"""

from __future__ import annotations

from typing import Any


def option(
    help: str,
    *,
    flag: str | None = None,
    min: float | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    invert: bool = False,
) -> dict[str, Any]:
    """Field metadata making the field a command-line option. `flag`: its name if not the
    field's (`--fetch-retries` for `FetchOptions.retries`); `min`: the least value a number takes;
    `invert`: a flag that sets the field False (`--ignore-optout` for `respect_optout`)."""
    return {
        "option": {"help": help, "flag": flag, "min": min, "choices": choices, "metavar": metavar, "invert": invert}
    }
