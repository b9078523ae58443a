"""Type checks of dataclass fields read from JSON (model configs, hardware profiles), with the
words an error message uses for each type."""
from __future__ import annotations

import types
import typing
from typing import Any


def has_type(value: Any, hint: Any) -> bool:
    """``value`` fits a field annotation (int, float, bool, str, a tuple of them or a dict of
    str to one of them, a bare dict or list, or ``X | None``); a bool is not a number, an int
    is a float."""
    if isinstance(hint, types.UnionType):
        return any(has_type(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(has_type(k, key) and has_type(v, item)
                                               for k, v in value.items())
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return (isinstance(value, tuple) and (args[-1] is Ellipsis or len(value) == len(args))
                and all(has_type(v, args[0]) for v in value))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and (hint is bool or not isinstance(value, bool))


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "a boolean", str: "a string",
               dict: "an object", list: "a list", type(None): "null"}


def type_name(hint: Any) -> str:
    """``an integer``, ``a list of 3 numbers``, ``a string or null``, ..."""
    if isinstance(hint, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        return f"an object of {type_name(typing.get_args(hint)[1]).split()[1]}s"
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_TYPE_NAMES[args[0]].split()[1]}s"
    return _TYPE_NAMES[hint]
