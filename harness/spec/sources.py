"""Reading a study spec: YAML files with includes, presets and ``--set`` overrides, merged into
one raw mapping, with the origin of every key (the file, or the override, an error names).

1. ``include:`` files (paths relative to the including file) are merged first, the
   including file's own keys on top; a missing or self-including include is an error;
2. ``model``, ``dataset`` and ``train`` may name a preset of ``config/<section>/`` (a
   string), or be a mapping with ``preset: NAME`` plus keys that override it;
3. ``--set a.b=value`` overrides from the command line (the key must exist in the schema).

:func:`harness.spec.load_spec` then validates the raw mapping as a whole.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from harness.config import AnalysisConfig, StudySpec, TrainConfig, TuneConfig, ViTConfig
from harness.data import DATASETS
from harness.errors import HarnessError, did_you_mean
from harness.spec.presets import PresetError, config_dir, list_presets, load_yaml, parse_value, yaml_problem

__all__ = ["TOP_KEYS", "SpecError", "read_spec"]


class SpecError(HarnessError):
    """A study spec that cannot be used."""


#: the keys a spec file may hold at the top level: the fields of StudySpec but those the loader fills in itself
TOP_KEYS = frozenset({f.name for f in dataclasses.fields(StudySpec)} - {"source", "resolved", "analysis_dropped"}
                     | {"include"})
_PRESET_SECTIONS = ("model", "dataset", "train")


def read_spec(path: Path, overrides: typing.Sequence[str | tuple[str, str]] = ()) -> tuple[dict, dict[str, str]]:
    """The raw mapping of the spec file at ``path`` (includes merged, presets expanded,
    ``overrides`` applied) and each key's origin. An override is ``"KEY=VALUE"`` or a pair
    ``("KEY=VALUE", origin)`` (see :func:`harness.spec.load_spec`)."""
    raw, origins = _load_with_includes(path.resolve(), chain=())
    for section in _PRESET_SECTIONS:
        raw[section] = _expand_preset(section, raw.get(section), origins.get(section, str(path)))
    for item in overrides:
        item, origin = (item, None) if isinstance(item, str) else item
        _apply_override(raw, item, origins, origin)
    return raw, origins


def _load_yaml(path: Path) -> Any:
    """Parse a spec or preset file (YAML 1.2 floats, :class:`harness.spec.presets.SpecLoader`); an
    unreadable or malformed file is a :class:`SpecError` naming the file and line."""
    try:
        return load_yaml(path)
    except PresetError as exc:
        raise SpecError(str(exc)) from None


def _load_with_includes(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[str, str]]:
    if path in chain:
        raise SpecError(f"{chain[-1]}: include {path} includes itself (cycle: {' -> '.join(map(str, chain + (path,)))})")
    data = _load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of keys to values at the top level, got {type(data).__name__}")
    includes = data.pop("include", []) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SpecError(f"{path}: key 'include': expected a list of file paths")
    merged: dict = {}
    origins: dict[str, str] = {}
    for inc in includes:
        inc_path = (path.parent / inc).resolve()
        if not inc_path.is_file():
            raise SpecError(f"{path}: key 'include': file {inc} not found (looked at {inc_path})")
        sub, sub_origins = _load_with_includes(inc_path, chain + (path,))
        _deep_merge(merged, sub)
        origins.update(sub_origins)
    _deep_merge(merged, data)
    for key in _flatten(data):
        origins[key] = str(path)
    for key in data:
        origins[key] = str(path)
    return merged, origins


def _deep_merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _expand_preset(section: str, value: Any, origin: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"preset": value}
    if not isinstance(value, dict):
        raise SpecError(f"{origin}: key '{section}': expected a preset name or a mapping, got {value!r}")
    name = value.pop("preset", None)
    if name is None:
        return value
    file = config_dir() / section / f"{name}.yaml"
    if not isinstance(name, str) or not file.is_file():
        known = list_presets(section)
        raise SpecError(f"{origin}: key '{section}': unknown preset {name!r}{did_you_mean(name, known)} "
                        f"(known: {', '.join(known)})")
    base = _load_yaml(file) or {}
    if section == "model":
        for key in ViTConfig.PER_TRIAL:  # the training resolution comes from train_resolutions
            base.pop(key, None)
    _deep_merge(base, value)
    return base


def _section_keys(section: str, raw: dict) -> list[str]:
    """The keys a section of the spec takes."""
    if section == "model":
        return [f.name for f in dataclasses.fields(ViTConfig) if f.name not in ViTConfig.PER_TRIAL]
    if section == "train":
        return [f.name for f in dataclasses.fields(TrainConfig)]
    if section == "tune":
        return [f.name for f in dataclasses.fields(TuneConfig)]
    if section == "analysis":
        return [f.name for f in dataclasses.fields(AnalysisConfig)]
    name = (raw.get("dataset") or {}).get("name", "rendered")
    options = DATASETS.get(name).Options if name in DATASETS else None
    return ["name", *(f.name for f in dataclasses.fields(options))] if options else ["name"]


def _apply_override(raw: dict, item: str, origins: dict[str, str], origin: str | None = None) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"{origin or '--set ' + repr(item)}: expected KEY=VALUE, e.g. --set model.depth=4")
    # what an error in this value names: the option, never the value (it may hold a password)
    origin = origin or f"--set {key}=..."
    try:
        value = parse_value(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{origin}: the value is not valid YAML ({yaml_problem(exc)})") from None
    head, _, rest = key.partition(".")
    if head == "encodings" and rest:
        i = _set_encoding_option(raw, key, rest, value)
        origins[f"encodings[{i}]"] = origin
        return
    valid = sorted(TOP_KEYS - {"include"})
    if head not in valid:
        raise SpecError(f"--set {key}: unknown key {head!r}{did_you_mean(head, valid)} (valid: {', '.join(valid)})")
    # the key replaced whole: what its parts came from is replaced too
    for k in [k for k in origins if k.startswith((f"{key}.", f"{key}["))]:
        del origins[k]
    if rest:
        if head not in ("model", "dataset", "train", "tune", "analysis") or "." in rest:
            raise SpecError(f"--set {key}: only model.*, dataset.*, train.*, tune.*, analysis.* and "
                            f"encodings.<label>.options.<name> take a dotted key")
        fields = _section_keys(head, raw)
        if rest not in fields:
            raise SpecError(f"--set {key}: unknown key in '{head}' {rest!r}{did_you_mean(rest, fields)} "
                            f"(valid: {', '.join(sorted(fields))})")
        if not isinstance(raw.get(head), dict):
            raw[head] = {}
        raw[head][rest] = value
    else:
        raw[head] = value
    origins[key] = origin
    origins.setdefault(head, origin)



def _set_encoding_option(raw: dict, key: str, rest: str, value: Any) -> int:
    """``encodings.<label>.options.<name>=value`` (or ``encodings.<label>.options={...}``): one
    option of the spec's encoding entry with that label (a label may itself hold dots)."""
    label, sep, name = rest.rpartition(".options.")
    if not sep:
        label, sep, name = (rest[: -len(".options")], ".options", "") if rest.endswith(".options") else ("", "", "")
    if not sep or not label or (sep == ".options" and not isinstance(value, dict)):
        raise SpecError(f"--set {key}: expected encodings.<label>.options.<name>=VALUE "
                        f"(or encodings.<label>.options={{name: value}}), e.g. encodings.rope_axial.options.base=100")
    entries = raw.get("encodings")
    entries = [entries] if isinstance(entries, (str, dict)) else entries
    if not isinstance(entries, list):
        raise SpecError(f"--set {key}: the spec has no list of encodings to take {label!r} from")

    def label_of(e: Any) -> Any:
        return e if isinstance(e, str) else (e.get("label") or e.get("name")) if isinstance(e, dict) else None

    labels = [label_of(e) for e in entries]
    if label not in labels:
        known = [str(x) for x in labels if x is not None]
        raise SpecError(f"--set {key}: the spec lists no encoding labelled {label!r}"
                        f"{did_you_mean(label, known)} (labels: {', '.join(known)})")
    i = labels.index(label)
    entry = {"name": entries[i]} if isinstance(entries[i], str) else dict(entries[i])
    options = dict(entry.get("options") or {}) if isinstance(entry.get("options") or {}, dict) else {}
    if name:
        options[name] = value
    else:
        options = dict(value)
    entry["options"] = options
    raw["encodings"] = [*entries[:i], entry, *entries[i + 1:]]
    return i
