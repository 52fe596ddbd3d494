"""Strict type checks for config values, driven by each section dataclass's annotations.

TOML (and ``--set``) values are checked against the field's declared type
before the dataclass is built, so a wrong type is refused with the key's full
name instead of being coerced (``rounds = true`` is not 1 round; ``epochs =
2.5`` is not an integer) or failing deep inside a run. Rules:

* ``bool`` accepts only ``true``/``false``; ``int`` accepts integers but not
  booleans or floats (``2.0`` included: write ``2``); ``float`` accepts
  integers and finite floats (not booleans, ``nan`` or ``inf``) and returns a float.
* ``str`` accepts only strings; ``X | None`` accepts what ``X`` accepts
  (TOML has no null: ``None`` only ever comes from a default).
* ``tuple[T, ...]`` accepts an array of ``T``; ``tuple[A, B, C]`` an array of
  exactly three; ``Literal[...]`` one of its values.
"""

from __future__ import annotations

import math
import types
import typing
from functools import lru_cache
from typing import Any

from fedicd.errors import ConfigError

__all__ = ["check_section_values", "describe_value"]

_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def describe_value(value: Any) -> str:
    """``true (a boolean)``-style rendering of a bad value for error messages."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            tuple: "an array", dict: "a table"}.get(type(value), type(value).__name__)
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    return f"{shown} ({kind})"


def _expected(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _NAMES:
        return _NAMES[hint]
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in args if a is not type(None))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"an array of {_plural(args[0])}"
        return f"an array of {len(args)} values ({', '.join(_expected(a) for a in args)})"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(hint, _expected(hint))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` (list → tuple, int → float) or :class:`_Mismatch`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0]) for v in value)
            if len(value) == len(args):
                return tuple(_coerce(v, a) for v, a in zip(value, args))
    else:  # a type this checker does not know: the dataclass checks it
        return value
    raise _Mismatch


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_section_values(section: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check ``values`` (one config section) against ``cls``'s annotations; return them coerced.

    Raises
    ------
    ConfigError
        Naming ``section.key``, the expected type and the value given, e.g.
        ``federated.rounds must be an integer, got true (a boolean)``.
    """
    hints, out = _hints(cls), {}
    for key, value in values.items():
        hint = hints.get(key, Any)
        try:
            out[key] = _coerce(value, hint)
        except _Mismatch:
            name = f"{section}.{key}" if section else key
            raise ConfigError(f"{name} must be {_expected(hint)}, got {describe_value(value)}") from None
    return out
