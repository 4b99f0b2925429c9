"""The YAML presets of ``config/`` (model sizes, datasets, training recipes).

Found in the source tree's ``config/`` folder, which the wheel ships as ``harness._config``.
Light: imports only yaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, did_you_mean

__all__ = ["AliasRefused", "PresetError", "SpecLoader", "config_dir", "list_presets", "load_preset", "load_yaml",
           "parse_value", "yaml_problem"]


class PresetError(HarnessError):
    """A preset that does not exist or does not parse."""


# ------------------------------------------------------------------------------ YAML 1.2 floats
class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with floats as YAML 1.2 (and Python's ``float``) read them.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent: ``3e-4``, ``1E5``
    and ``1.5e3`` were strings, so ``lr: 3e-4`` was refused. The YAML 1.2 core schema adds
    them: ``[-+]? ( .digits | digits [. digits?] ) ([eE] [-+]? digits)?`` (with a dot or an
    exponent, so integers stay integers). Quoted scalars stay strings."""


_FLOAT_12 = re.compile(r"""^[-+]?(?:[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+
                              |\.[0-9]+(?:[eE][-+]?[0-9]+)?
                              |[0-9]+\.[0-9]*)$""", re.X)
# after the YAML 1.1 resolvers of these first characters: what they read is unchanged
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+.0123456789"))


class AliasRefused(yaml.MarkedYAMLError):
    """A YAML alias (``*name``) in a spec: refused, so that no "billion laughs" of nested
    aliases can expand a few lines into gigabytes (specs reuse values with ``include:`` and
    presets instead); an anchor (``&name``) too, which only an alias would use."""


def _compose_node(self: SpecLoader, parent: Any, index: Any) -> Any:
    if self.check_event(yaml.AliasEvent):
        event = self.peek_event()
        raise AliasRefused(None, None, f"YAML aliases (*{event.anchor}) are not accepted in specs: "
                                       "write the value out, or share it with 'include:'", event.start_mark)
    event = self.peek_event()
    if getattr(event, "anchor", None) is not None:
        raise AliasRefused(None, None, f"YAML anchors (&{event.anchor}) are not accepted in specs: share a "
                                       "value with 'include:'", event.start_mark)
    return yaml.composer.Composer.compose_node(self, parent, index)


SpecLoader.compose_node = _compose_node  # type: ignore[method-assign]

#: the largest spec, include or preset file read (a spec is a few hundred lines)
MAX_SPEC_BYTES = 1 << 20


def parse_value(text: str) -> Any:
    """A YAML value as a spec file would read it (``--set`` and ``KEY=VALUE`` values). An
    alias is refused (:class:`AliasRefused`, a ``yaml.YAMLError``), and so is nesting too deep
    for Python (a ``yaml.YAMLError`` too)."""
    try:
        return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line saying where a YAML text is wrong (line and column) and what is wrong."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character or a bad byte: not a text file
        return f"position {exc.position}: not a YAML text (character {exc.character!r}: {exc.reason})"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    what = "" if isinstance(exc, AliasRefused) else "malformed YAML: "
    problem = getattr(exc, "problem", None) or str(exc)
    return " ".join(f"{where}{what}{problem}".split())


def config_dir() -> Path:
    """The folder holding the presets (``config/`` of the source tree, or the wheel's copy)."""
    here = Path(__file__).resolve().parent.parent  # the harness package (this is harness/spec/presets.py)
    shipped = here / "_config"  # a wheel install
    return shipped if shipped.is_dir() else here.parent / "config"  # a source tree / editable install


def list_presets(kind: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / kind).glob("*.yaml"))


def load_yaml(path: Path) -> Any:
    """Parse a YAML file (specs, includes, presets) with :class:`SpecLoader`; a syntax error
    names the file and the line."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise PresetError(f"{path}: file not found") from None
    except OSError as exc:
        raise PresetError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise PresetError(f"{path}: larger than {MAX_SPEC_BYTES >> 20} MiB: not a spec")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PresetError(f"{path}: not a UTF-8 text file (byte 0x{data[exc.start]:02x} at offset {exc.start})"
                          ) from None
    try:
        return parse_value(text)
    except yaml.YAMLError as exc:
        raise PresetError(f"{path}: {yaml_problem(exc)}") from None


def load_preset(kind: str, name: str) -> dict[str, Any]:
    """The preset ``config/<kind>/<name>.yaml`` as a mapping."""
    path = config_dir() / kind / f"{name}.yaml"
    if not path.is_file():
        known = list_presets(kind)
        raise PresetError(f"unknown {kind} preset {name!r}{did_you_mean(name, known)} "
                          f"(known: {', '.join(known) or 'none'})")
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping of keys to values")
    return data
