"""Study specs: YAML files (with includes and presets) resolved into typed, validated configuration.

A spec is resolved in four steps, and validated as a whole before anything runs:

1. ``include:`` files (paths relative to the including file) are merged first, the
   including file's own keys on top; a missing or self-including include is an error;
2. ``model``, ``dataset`` and ``train`` may name a preset of ``config/<section>/`` (a
   string), or be a mapping with ``preset: NAME`` plus keys that override it;
3. ``--set a.b=value`` overrides from the command line (the key must exist in the schema);
4. every value is checked against the schema (typed dataclasses): unknown keys (with the
   nearest valid key), wrong types, sizes <= 0, resolutions the patch stem cannot tile,
   unknown encodings and datasets, missing dataset roots, duplicated seeds, empty lists.

Every error names the file, the key and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError
from harness.presets import PresetError, config_dir, list_presets, load_yaml
from harness.typecheck import type_ok

__all__ = ["DatasetSpec", "EncodingSpec", "SpecError", "StudySpec", "TuneSpec", "load_spec", "redact_url"]


def redact_url(text: str) -> str:
    """Hide the password of a database or server URL (``scheme://user:***@host``)."""
    import re

    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


class SpecError(HarnessError):
    """A study spec that cannot be used."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "rendered"
    # the embedded, procedurally rendered dataset
    task: str = "relational"
    num_train: int = 4000
    num_val: int = 500
    num_test: int = 1000
    seed: int = 0
    # torchvision datasets (cifar10, cifar100, imagefolder)
    root: str | None = None
    download: bool = False
    val_fraction: float = 0.1


@dataclass(frozen=True)
class EncodingSpec:
    name: str
    options: dict = field(default_factory=dict)
    label: str = ""  # the id of this entry in the study (default: the name)


@dataclass(frozen=True)
class TuneSpec:
    trials: int = 8  # per (encoding, train resolution): the same budget for every encoding
    epochs: int = 0  # epochs per tuning trial (0: the training recipe's)
    pruner: Literal["median", "none"] = "median"
    seed: int = 0
    space: dict = field(default_factory=dict)  # "train.lr": {low, high, log} | {choices: [...]}


@dataclass(frozen=True)
class StudySpec:
    name: str
    dataset: DatasetSpec
    model: dict  # ViTConfig fields but image_size / in_chans / num_classes (set per trial)
    train: dict  # TrainConfig fields
    encodings: tuple[EncodingSpec, ...]
    train_resolutions: tuple[int, ...]
    test_resolutions: tuple[int, ...]
    seeds: tuple[int, ...]
    tune: TuneSpec | None = None
    storage: str | None = None  # Optuna storage URL (default: sqlite file under output/<name>/)
    tracking_uri: str | None = None  # MLflow tracking URI (default: sqlite file under output/<name>/)
    output: str = "runs"
    plugins: tuple[str, ...] = ()
    baseline: str | None = None  # the encoding reports compare against (default: learned if present)
    heartbeat: int = 30  # seconds between a running trial's heartbeats; silent for 3 intervals = dead worker
    max_retries: int = 2  # times a failed cell is tried again
    source: str = ""  # the spec file
    resolved: dict = field(default_factory=dict, repr=False)  # the resolved mapping, as run

    @property
    def run_dir(self) -> Path:
        return Path(self.output) / self.name

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.run_dir / 'optuna.db').resolve()}"

    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}"

    def digest(self) -> str:
        """Content hash of what the study computes (locations excluded)."""
        keep = {k: v for k, v in self.resolved.items() if k not in _OPERATIONAL}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def model_config(self, train_resolution: int, in_chans: int, num_classes: int):
        from harness.models.vit import ViTConfig

        return ViTConfig(**self.model, image_size=train_resolution, in_chans=in_chans, num_classes=num_classes)

    def train_config(self, **overrides: Any):
        from harness.train import TrainConfig

        return TrainConfig(**{**self.train, **overrides})

    def cells(self) -> list[tuple[str, int, int]]:
        """Every (encoding label, train resolution, seed) of the evaluate stage."""
        return [(e.label, r, s) for e in self.encodings for r in self.train_resolutions for s in self.seeds]

    def encoding(self, label: str) -> EncodingSpec:
        return next(e for e in self.encodings if e.label == label)


#: keys that say where and how a study runs, not what it computes (outside its content hash)
_OPERATIONAL = ("storage", "tracking_uri", "output", "heartbeat", "max_retries")
_TOP = {f.name for f in dataclasses.fields(StudySpec)} - {"source", "resolved"} | {"include"}
_MODEL_KEYS = {"dim", "depth", "heads", "mlp_ratio", "patch_kernel", "patch_stride", "pool", "qkv_bias"}
_PRESET_SECTIONS = ("model", "dataset", "train")


# ------------------------------------------------------------------------------ loading
def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    """Resolve and validate the study spec at ``path`` with ``--set`` ``overrides``."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    raw, origins = _load_with_includes(path.resolve(), chain=())
    for section in _PRESET_SECTIONS:
        raw[section] = _expand_preset(section, raw.get(section), origins.get(section, str(path)))
    for item in overrides:
        _apply_override(raw, item, origins)
    return _validate(raw, origins, path)


def _load_with_includes(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[str, str]]:
    if path in chain:
        raise SpecError(f"{chain[-1]}: include {path} includes itself (cycle: {' -> '.join(map(str, chain + (path,)))})")
    try:
        data = load_yaml(path)
    except PresetError as exc:
        raise SpecError(str(exc)) from None
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
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{origin}: key '{section}': unknown preset {name!r}{hint} (known: {', '.join(known)})")
    try:
        base = load_yaml(file) or {}
    except PresetError as exc:
        raise SpecError(str(exc)) from None
    if section == "model":
        base.pop("image_size", None)  # the training resolution comes from train_resolutions
    _deep_merge(base, value)
    return base


def _schema(section: str) -> dict[str, Any]:
    """Field name -> annotation for a spec section."""
    if section == "dataset":
        return typing.get_type_hints(DatasetSpec)
    if section == "tune":
        return typing.get_type_hints(TuneSpec)
    if section == "model":
        from harness.models.vit import ViTConfig

        hints = typing.get_type_hints(ViTConfig)
        return {k: v for k, v in hints.items() if k in _MODEL_KEYS}
    if section == "train":
        from harness.train import TrainConfig

        return typing.get_type_hints(TrainConfig)
    raise KeyError(section)


def _apply_override(raw: dict, item: str, origins: dict[str, str]) -> None:
    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.depth=4")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SpecError(f"--set {item!r}: the value is not valid YAML") from None
    head, _, rest = key.partition(".")
    if head not in _TOP - {"include"}:
        _unknown(f"--set {key}", head, sorted(_TOP - {"include"}), what="key")
    if rest:
        if head not in ("model", "dataset", "train", "tune") or "." in rest:
            raise SpecError(f"--set {key}: only model.*, dataset.*, train.* and tune.* take a dotted key")
        fields = _schema(head)
        if rest not in fields:
            _unknown(f"--set {key}", rest, sorted(fields), what=f"key in '{head}'")
        if not isinstance(raw.get(head), dict):
            raw[head] = {}
        raw[head][rest] = value
    else:
        raw[head] = value
    origins[key] = "--set"
    origins.setdefault(head, "--set")


def _unknown(where: str, key: str, valid: list[str], what: str = "key") -> typing.NoReturn:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SpecError(f"{where}: unknown {what} {key!r}{hint} (valid: {', '.join(valid)})")


# ------------------------------------------------------------------------------ validation
def _validate(raw: dict, origins: dict[str, str], path: Path) -> StudySpec:
    def where(key: str) -> str:
        k = key
        while k and k not in origins:
            k = k.rpartition(".")[0]
        return origins.get(k, str(path))

    def fail(key: str, msg: str) -> typing.NoReturn:
        raise SpecError(f"{where(key)}: key '{key}': {msg}")

    for key in raw:
        if key not in _TOP:
            close = difflib.get_close_matches(key, sorted(_TOP), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{where(key)}: unknown key {key!r}{hint}")

    def typed(section: str, values: dict, hints: dict[str, Any]) -> dict:
        if not isinstance(values, dict):
            fail(section, f"expected a mapping, got {values!r}")
        out = {}
        for k, v in values.items():
            if k not in hints:
                close = difflib.get_close_matches(str(k), sorted(hints), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                fail(f"{section}.{k}", f"unknown key{hint} (valid: {', '.join(sorted(hints))})")
            ok, want = type_ok(v, hints[k])
            if not ok:
                fail(f"{section}.{k}", f"expected {want}, got {v!r}")
            out[k] = float(v) if hints[k] is float else v
        return out

    name = raw.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        fail("name", f"expected a study name of letters, digits, '-', '_' or '.', got {name!r}")

    # plugins first: they may register encodings the spec names
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        fail("plugins", "expected a list of plugin references (file paths or module:attr)")
    resolved_plugins = []
    for i, ref in enumerate(plugins):
        if ref.endswith(".py") and not Path(ref).is_absolute():
            ref = str((path.parent / ref).resolve())
        from harness.encodings.registry import load_plugin

        try:
            load_plugin(ref)
        except HarnessError as exc:
            fail(f"plugins[{i}]", str(exc))
        resolved_plugins.append(ref)

    dataset = DatasetSpec(**typed("dataset", raw.get("dataset") or {}, _schema("dataset")))
    _check_dataset(dataset, fail)

    model = typed("model", raw.get("model") or {}, _schema("model"))
    train = typed("train", raw.get("train") or {}, _schema("train"))
    tune_raw = raw.get("tune")
    tune = TuneSpec(**typed("tune", tune_raw, _schema("tune"))) if tune_raw else None

    def int_list(key: str, *, positive: bool) -> tuple[int, ...]:
        v = raw.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, list) or not v:
            fail(key, f"expected a non-empty list of integers, got {v!r}")
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, int):
                fail(f"{key}[{i}]", f"expected an integer, got {x!r}")
            if positive and x <= 0:
                fail(f"{key}[{i}]", f"expected a positive size, got {x}")
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            fail(key, f"{dupes[0]} is given twice")
        return tuple(v)

    train_res = int_list("train_resolutions", positive=True)
    test_res = int_list("test_resolutions", positive=True)
    seeds = int_list("seeds", positive=False)

    # the model, built once per training resolution, must accept every size
    from harness.models.vit import ModelConfigError, ViTConfig

    try:
        probe = ViTConfig(**model, image_size=max(model.get("patch_kernel", 4), 1))
    except ModelConfigError as exc:
        fail("model", str(exc).replace("model.", ""))
    except TypeError as exc:
        fail("model", str(exc))
    for key, values in (("train_resolutions", train_res), ("test_resolutions", test_res)):
        for i, r in enumerate(values):
            if not probe.tiles_exactly(r):
                k, s = probe.patch_kernel, probe.patch_stride
                lo = k + max(0, (r - k) // s) * s
                fail(f"{key}[{i}]", f"the patch stem (kernel {k}, stride {s}) cannot tile {r} pixels; "
                     f"expected kernel + n*stride, e.g. {lo} or {lo + s}")
    from harness.train import TrainConfig

    try:
        TrainConfig(**train)
    except HarnessError as exc:
        fail("train", str(exc))

    encodings = _encodings(raw.get("encodings"), fail, probe, model, train_res)
    labels = [e.label for e in encodings]
    baseline = raw.get("baseline")
    if baseline is not None and baseline not in labels:
        fail("baseline", f"expected one of the study's encodings ({', '.join(labels)}), got {baseline!r}")
    if tune is not None:
        _check_space(tune, fail)
    for key in ("storage", "tracking_uri"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            fail(key, f"expected a URL string, got {raw[key]!r}")
    for key, low in (("heartbeat", 1), ("max_retries", 0)):
        v = raw.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            fail(key, f"expected an integer >= {low}, got {v!r}")
    output = raw.get("output", "runs")
    if not isinstance(output, str) or not output:
        fail("output", f"expected a folder path, got {output!r}")
    resolved = {
        "name": name, "dataset": dataclasses.asdict(dataset), "model": model, "train": train,
        "encodings": [dataclasses.asdict(e) for e in encodings], "train_resolutions": list(train_res),
        "test_resolutions": list(test_res), "seeds": list(seeds),
        "tune": dataclasses.asdict(tune) if tune else None,
        # what is logged and shown: never a password
        "storage": redact_url(raw["storage"]) if raw.get("storage") else None,
        "tracking_uri": redact_url(raw["tracking_uri"]) if raw.get("tracking_uri") else None, "output": output, "plugins": resolved_plugins,
        "baseline": baseline, "heartbeat": raw.get("heartbeat", 30), "max_retries": raw.get("max_retries", 2),
    }
    return StudySpec(
        name=name, dataset=dataset, model=model, train=train, encodings=tuple(encodings),
        train_resolutions=train_res, test_resolutions=test_res, seeds=seeds, tune=tune,
        storage=raw.get("storage"), tracking_uri=raw.get("tracking_uri"), output=output,
        plugins=tuple(resolved_plugins), baseline=baseline, heartbeat=resolved["heartbeat"],
        max_retries=resolved["max_retries"], source=str(path), resolved=resolved,
    )


def _check_dataset(d: DatasetSpec, fail) -> None:
    known = ("rendered", "cifar10", "cifar100", "imagefolder")
    if d.name not in known:
        close = difflib.get_close_matches(d.name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        fail("dataset.name", f"unknown dataset {d.name!r}{hint} (known: {', '.join(known)})")
    if d.name == "rendered":
        from harness.data.rendered import TASKS

        if d.task not in TASKS:
            fail("dataset.task", f"expected one of {', '.join(TASKS)}, got {d.task!r}")
        for k in ("num_train", "num_val", "num_test"):
            if getattr(d, k) <= 0:
                fail(f"dataset.{k}", f"expected a positive count, got {getattr(d, k)}")
    else:
        if not d.root:
            fail("dataset.root", f"dataset {d.name!r} needs a root folder")
        if not Path(d.root).expanduser().exists() and not d.download:
            fail("dataset.root", f"folder {d.root} does not exist (set dataset.download: true to fetch {d.name})"
                 if d.name != "imagefolder" else f"folder {d.root} does not exist")
    if not 0 < d.val_fraction < 1:
        fail("dataset.val_fraction", f"expected a fraction in (0, 1), got {d.val_fraction}")


def _encodings(value: Any, fail, probe, model: dict, train_res: tuple[int, ...]) -> list[EncodingSpec]:
    from harness.encodings.base import build_encoding
    from harness.encodings.registry import RegistryError, get_encoding

    if not isinstance(value, list) or not value:
        fail("encodings", f"expected a non-empty list of encodings, got {value!r}")
    out = []
    for i, item in enumerate(value):
        key = f"encodings[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            fail(key, f"expected an encoding name or a mapping with 'name' (and 'options', 'label'), got {item!r}")
        extra = set(item) - {"name", "options", "label"}
        if extra:
            fail(f"{key}.{sorted(extra)[0]}", "unknown key (valid: name, options, label)")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            fail(f"{key}.options", f"expected a mapping of option names to values, got {options!r}")
        try:
            get_encoding(item["name"])
        except RegistryError as exc:
            fail(f"{key}.name", str(exc))
        label = item.get("label") or item["name"]
        if not isinstance(label, str):
            fail(f"{key}.label", f"expected a string, got {label!r}")
        out.append(EncodingSpec(item["name"], dict(options), label))
        for r in train_res:  # options and head dimension checked against the real model dimensions
            from harness.models.vit import ViTConfig

            try:
                build_encoding(item["name"], ViTConfig(**model, image_size=r).dims, options)
            except HarnessError as exc:
                fail(key, str(exc))
    labels = [e.label for e in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        fail("encodings", f"{dupes[0]!r} is listed twice (give one of them a distinct 'label')")
    return out


def _check_space(tune: TuneSpec, fail) -> None:
    if tune.trials <= 0:
        fail("tune.trials", f"expected a positive number of trials, got {tune.trials}")
    if not tune.space:
        fail("tune.space", "expected at least one parameter to tune, e.g. train.lr: {low: 1e-4, high: 3e-3, log: true}")
    train_fields = _schema("train")
    for key, dist in tune.space.items():
        section, _, name = str(key).partition(".")
        if section != "train" or name not in train_fields:
            fail(f"tune.space.{key}", f"expected a train.* key (one of {', '.join('train.' + f for f in train_fields)})")
        if not isinstance(dist, dict) or not ({"low", "high"} <= set(dist) or "choices" in dist):
            fail(f"tune.space.{key}", "expected {low, high[, log]} or {choices: [...]}")
        if "low" in dist and not (isinstance(dist["low"], (int, float)) and isinstance(dist["high"], (int, float))
                                  and dist["low"] < dist["high"]):
            fail(f"tune.space.{key}", f"expected numbers with low < high, got {dist}")
