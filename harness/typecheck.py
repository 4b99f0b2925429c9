"""Checks of plain values (from YAML or the command line) against type annotations."""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal

__all__ = ["flat_types", "type_ok"]


def flat_types(tp: Any) -> tuple:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return (Literal,)
    if args and typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(t for a in args for t in flat_types(a))
    return (tp,)


def type_ok(value: Any, tp: Any) -> tuple[bool, str]:
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        return value in choices, "one of " + ", ".join(repr(c) for c in choices)
    if origin in (typing.Union, types.UnionType):
        results = [type_ok(value, a) for a in typing.get_args(tp)]
        return any(r[0] for r in results), " or ".join(r[1] for r in results)
    if tp is type(None):
        return value is None, "null"
    if tp is bool:
        return isinstance(value, bool), "a boolean"
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, "a finite number"
    if tp is str:
        return isinstance(value, str), "a string"
    return isinstance(value, tp), getattr(tp, "__name__", str(tp))
