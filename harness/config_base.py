"""The machinery of the typed configuration (:mod:`harness.config`): the frozen-dataclass base
:class:`Config`, field bounds (:func:`option`), the type check of a value against an annotation
(:func:`type_ok`), the check of a whole config (:func:`check`, run on construction) and the one
converter from a plain mapping (:func:`convert`), naming the dotted key of any error and the
nearest valid key of an unknown one. ``harness.config`` holds the configs built on it and
re-exports these names.

Torch-free, like every module that holds configuration.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

from harness.errors import HarnessError, did_you_mean

__all__ = ["C", "Config", "ConfigError", "Invalid", "check", "convert", "option", "type_ok"]

C = TypeVar("C")


class ConfigError(HarnessError):
    """A configuration value that cannot work. ``key`` is its dotted key (``train.lr``) and
    ``detail`` what was expected; the message is ``"<key>: <detail>"`` (just the detail when
    it names the key itself)."""

    def __init__(self, detail: str, key: str = "") -> None:
        super().__init__(f"{key}: {detail}" if key and f"'{key}'" not in detail else detail)
        self.key = key
        self.detail = detail


class Invalid(ValueError):
    """Raised by a config's ``validate``: field ``key`` (relative to the config) is wrong."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(detail)
        self.key = key
        self.detail = detail


# ------------------------------------------------------------------------------ types
def type_ok(value: Any, tp: Any) -> tuple[bool, str]:
    """Whether a plain value matches annotation ``tp``, and what ``tp`` expects in words."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        return value in choices, "one of " + ", ".join(repr(c) for c in choices)
    if origin in (typing.Union, types.UnionType):
        results = [type_ok(value, a) for a in typing.get_args(tp)]
        return any(r[0] for r in results), " or ".join(r[1] for r in results)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        ok = isinstance(value, (tuple, list)) and all(type_ok(v, args[0])[0] for v in value)
        return ok, f"a list of {type_ok(None, args[0])[1]}" if args else "a list"
    if origin is dict or tp is dict:
        return isinstance(value, Mapping), "a mapping"
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
    if tp is Any:
        return True, "anything"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, (tp, Mapping)), f"a mapping of {tp.__name__} options"
    return isinstance(value, tp), getattr(tp, "__name__", str(tp))


def _takes_float(tp: Any) -> bool:
    if tp is float:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return float in typing.get_args(tp)
    return False


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def option(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, **kwargs: Any) -> Any:
    """A dataclass field with bounds (``ge``, ``gt``, ``le``, ``lt``) that :func:`check` enforces."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"bounds": bounds}, **kwargs)


# ------------------------------------------------------------------------------ checking
def check(obj: Any, error: type[ConfigError] = ConfigError, prefix: str = "", context: tuple = ()) -> None:
    """Check every field of dataclass ``obj`` against its annotation and bounds (plain ints
    become floats where a float is expected), then run ``obj.validate(*context)`` if it has
    one (an encoding's options are validated against the model dimensions, for example).
    Raises ``error`` naming ``prefix`` + the field."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = hints[f.name]
        ok, want = type_ok(value, tp)
        if not ok:
            raise error(f"expected {want}, got {value!r}", prefix + f.name)
        if isinstance(value, int) and not isinstance(value, bool) and _takes_float(tp):
            value = float(value)
            object.__setattr__(obj, f.name, value)
        if isinstance(value, list) and typing.get_origin(tp) is tuple:
            object.__setattr__(obj, f.name, tuple(value))
        for kind, bound in f.metadata.get("bounds", {}).items():
            op, holds = _BOUNDS[kind]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not holds(value, bound):
                raise error(f"expected {want} {op} {bound}, got {value!r}", prefix + f.name)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate(*context)
        except Invalid as exc:
            raise error(f"{exc.detail}, got {getattr(obj, exc.key)!r}", prefix + exc.key) from None


def convert(cls: type[C], data: Any, key: str, error: type[ConfigError] = ConfigError,
            exclude: tuple[str, ...] = (), fixed: Mapping[str, Any] | None = None, context: tuple = ()) -> C:
    """Build config ``cls`` from a plain mapping found at dotted ``key`` (``""`` for the top):
    unknown keys are refused with the nearest valid one, nested configs converted in turn,
    every value checked by :func:`check`. ``exclude``: fields a mapping may not set;
    ``fixed``: values the caller sets for them; ``context``: what a plain dataclass's
    ``validate`` takes (a :class:`Config` validates itself on construction, without context)."""
    where = f"{key}." if key else ""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise error(f"expected a mapping, got {data!r}", key)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude]
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        if k not in names:
            raise error(f"unknown key '{where}{k}'{did_you_mean(k, names, prefix=where)} "
                        f"(valid: {', '.join(sorted(names))})", where + str(k))
        tp = hints[k]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(v, Mapping):
            v = convert(tp, v, where + k, error)
        kwargs[k] = v
    kwargs.update(fixed or {})
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"missing key (it has no default): {', '.join(missing)}", where + missing[0])
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:  # a config checking itself on construction: re-anchor the key
        raise error(exc.detail, where + _relative(exc.key, cls)) from None
    if not isinstance(obj, Config):
        check(obj, error, where, context)
    return obj


def _relative(key: str, cls: type) -> str:
    section = getattr(cls, "section", "")
    return key[len(section) + 1:] if section and key.startswith(section + ".") else key


class Config:
    """Base of the harness's own config dataclasses: checked by :func:`check` on construction.
    ``section``: the spec key the config lives under (errors say ``<section>.<field>``);
    ``error``: the exception type raised."""

    section: ClassVar[str] = ""
    error: ClassVar[type[ConfigError]] = ConfigError

    def __post_init__(self) -> None:
        check(self, self.error, f"{self.section}." if self.section else "")

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """The config from a mapping; an unknown key suggests the nearest known one."""
        return convert(cls, d, cls.section, cls.error)  # type: ignore[attr-defined]
