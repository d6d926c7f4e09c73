"""Command-line options declared once: a settings dataclass's fields become argparse options.

A field takes part when its metadata says how to show it (:func:`option`); its flag is ``--`` plus the
name with dashes, its type and default come from the field, its help from the metadata::

    @dataclass
    class ServeSettings:
        max_batch_size: int = field(default=32, metadata=option("items in one model forward"))

    add_options(parser, ServeSettings)             # --max-batch-size N   (default: 32)
    settings = from_options(ServeSettings, args)   # ServeSettings(max_batch_size=...)

Options left out on the command line keep the dataclass's default (argparse never sees one), so a
default is written once, in the dataclass. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

_KEY = "lame.option"


def option(help: str, *, flag: str | None = None, metavar: str | None = None, choices=None,
           type=None, repeat: bool = False, allow_empty: bool = False) -> dict:
    """Field metadata that makes a dataclass field a command-line option.

    ``flag``: another flag than ``--field-name``; ``type``: an argparse type function instead of the
    field's own type; ``repeat``: a tuple field given as a repeated flag (``--host A --host B``) instead of
    several values after one flag; ``allow_empty``: a tuple field's flag may be given with no value (an
    empty tuple, e.g. "no sweep")."""
    return {_KEY: {"help": help, "flag": flag, "metavar": metavar, "choices": choices, "type": type,
                   "repeat": repeat, "allow_empty": allow_empty}}


def _resolved_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(hint) -> tuple[Any, bool, bool]:
    """(element type, optional, sequence) of a field's type hint."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) == 1:
            hint = args[0]
            origin = typing.get_origin(hint)
    if origin in (tuple, list):
        element = typing.get_args(hint)[0]
        return element, optional, True
    return hint, optional, False


def add_options(parser, cls, skip: tuple[str, ...] = (), defaults: dict | None = None) -> None:
    """Adds an option for every field of ``cls`` with :func:`option` metadata (but those in ``skip``).
    ``defaults``: values shown as defaults instead of the dataclass's (e.g. a verb's own default)."""
    hints = _resolved_types(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is None or f.name in skip:
            continue
        element, _, sequence = _base_type(hints[f.name])
        default = defaults.get(f.name, _default_of(f))
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help(spec["help"], default)}
        if spec["metavar"] or element in (int, float):
            kwargs["metavar"] = spec["metavar"] or "N"
        if spec["choices"] is not None:
            kwargs["choices"] = spec["choices"]
        if element is bool and not sequence:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
            kwargs.pop("metavar", None)
        else:
            kwargs["type"] = spec["type"] or element
            if sequence and spec["repeat"]:
                kwargs["action"] = "append"
            elif sequence:
                kwargs["nargs"] = "*" if spec["allow_empty"] else "+"
        parser.add_argument(spec["flag"] or "--" + f.name.replace("_", "-"), **kwargs)


def from_options(cls, args: argparse.Namespace, **defaults):
    """A ``cls`` from the options given on the command line; the others take ``defaults`` (a verb's own,
    e.g. a name derived from another argument), else the dataclass's."""
    hints = _resolved_types(cls)
    given = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get(_KEY) is not None and hasattr(args, f.name):
            value = getattr(args, f.name)
            if _base_type(hints[f.name])[2] and value is not None:
                value = tuple(value)
            given[f.name] = value
    return cls(**{**defaults, **given})


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _help(text: str, default) -> str:
    if default is None or default is False or default == ():
        return text
    shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
    return f"{text} (default: {shown})".replace("%", "%%")
