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

__all__ = ["PresetError", "SpecLoader", "config_dir", "list_presets", "load_preset", "load_yaml", "parse_value"]


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


def parse_value(text: str) -> Any:
    """A YAML value as a spec file would read it (``--set`` and ``KEY=VALUE`` values)."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


def config_dir() -> Path:
    """The folder holding the presets (``config/`` of the source tree, or the wheel's copy)."""
    here = Path(__file__).resolve().parent
    shipped = here / "_config"  # a wheel install
    return shipped if shipped.is_dir() else here.parent / "config"  # a source tree / editable install


def list_presets(kind: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / kind).glob("*.yaml"))


def load_yaml(path: Path) -> Any:
    """Parse a YAML file (specs, includes, presets) with :class:`SpecLoader`; a syntax error
    names the file and the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PresetError(f"{path}: file not found") from None
    except OSError as exc:
        raise PresetError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return parse_value(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PresetError(f"{path}:{where}: malformed YAML: {problem}") from None


def load_preset(kind: str, name: str) -> dict[str, Any]:
    """The preset ``config/<kind>/<name>.yaml`` as a mapping."""
    path = config_dir() / kind / f"{name}.yaml"
    if not path.is_file():
        known = list_presets(kind)
        raise PresetError(f"unknown {kind} preset {name!r}{did_you_mean(name, known)} Known: {', '.join(known) or 'none'}")
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping of keys to values")
    return data
