"""Click options derived from the fields of the settings dataclasses (see `safeset.options`), and
the settings built back from what the user gave: a default, a bound or a help text lives once,
beside the field it sets."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import click


def _spec(field: dataclasses.Field) -> dict[str, Any]:
    return field.metadata["option"]


def _flag(field: dataclasses.Field) -> str:
    return _spec(field)["flag"] or "--" + field.name.replace("_", "-")


def _param(field: dataclasses.Field) -> str:
    """The keyword click passes the value as: the flag's name (two settings classes may have a
    field of one name, `retries`, under two flags)."""
    return _flag(field).lstrip("-").replace("-", "_")


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """The option fields of `cls`, with their types (optional ones as the type they hold)."""
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        if "option" not in field.metadata:
            continue
        hint = hints[field.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        found.append((field, hint))
    return found


def _option(field: dataclasses.Field, hint: Any):
    spec = _spec(field)
    if hint is bool:
        return click.option(_flag(field), _param(field), is_flag=True, help=spec["help"])
    if typing.get_origin(hint) is tuple:
        return click.option(_flag(field), _param(field), multiple=True, metavar=spec["metavar"], help=spec["help"])
    if spec["choices"]:
        kind = click.Choice(spec["choices"])
    elif hint is int:
        kind = click.IntRange(min=spec["min"])
    elif hint is float:
        kind = click.FloatRange(min=spec["min"])
    else:
        kind = click.STRING
    default = field.default
    return click.option(
        _flag(field),
        _param(field),
        type=kind,
        default=default,
        show_default=default not in (None, ""),
        metavar=spec["metavar"],
        help=spec["help"],
    )


def of(*classes: type):
    """The options of every option field of `classes`, in the order of their fields."""

    def apply(command):
        for cls in reversed(classes):
            for field, hint in reversed(_fields(cls)):
                command = _option(field, hint)(command)
        return command

    return apply


def build(cls: type, given: dict[str, Any], **fixed: Any):
    """An instance of `cls` from the values click parsed (`given`, by keyword) for its option
    fields, and `fixed` for others."""
    return cls(**values(cls, given), **fixed)


def values(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """The values click parsed (`given`, by keyword) for the option fields of `cls`, by field name."""
    values = {}
    for field, hint in _fields(cls):
        value = given[_param(field)]
        if _spec(field)["invert"]:
            value = not value
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        values[field.name] = value
    return values
