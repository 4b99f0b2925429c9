"""Study specs: YAML files (with includes and presets) resolved into the typed configuration tree.

A spec is resolved in four steps, and validated as a whole before anything runs:

1.-3. includes, presets and ``--set`` overrides are merged into one raw mapping with the
   origin of every key (:mod:`harness.spec.sources`);
4. every section is converted into its config (``harness.config``): the model, the recipe,
   the tune stage, the dataset's own ``Options`` (the dataset registry names the class) and
   every encoding's options (at each training resolution, refused as building it would
   refuse them: ``harness.encodings.check_encoding``); then the study-level rules:
   resolutions the patch stem cannot tile, duplicated seeds, empty lists, names that are safe
   as paths, sizes this machine's memory can take (:mod:`harness.spec.memory`).

Every error names the file, the key and what was expected. Torch, MLflow and Optuna are never
imported here (nor by the built-in datasets and encodings a spec names): a mistake is answered
at once. A plugin the spec names may import what it needs.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

from harness.config import (
    AnalysisConfig,
    ConfigError,
    DatasetSpec,
    EncodingSpec,
    StudySpec,
    TrainConfig,
    TuneConfig,
    ViTConfig,
    convert,
    parse_comparison,
    type_ok,
)
from harness.data import DATASETS, check_regime
from harness.encodings import ENCODINGS, check_encoding, describe_encoding
from harness.errors import HarnessError, did_you_mean, redact_url
from harness.files import sqlite_path
from harness.spec.presets import SpecLoader, parse_value
from harness.registry import Registry, load_plugin
from harness.schema import Size
from harness.spec.memory import gib, memory_bytes, model_bytes, size_bytes
from harness.spec.sources import TOP_KEYS, SpecError, read_spec
from harness.variants import POLICIES, TEMPERATURES

__all__ = ["DatasetSpec", "EncodingSpec", "SpecError", "SpecLoader", "StudySpec", "check_resolution", "check_seed",
           "load_spec", "memory_bytes", "parse_value", "redact_url"]


_SCALARS = {"storage": str | None, "tracking_uri": str | None, "baseline": str | None}


def load_spec(path: str | Path, overrides: typing.Sequence[str | tuple[str, str]] = ()) -> StudySpec:
    """Resolve and validate the study spec at ``path`` with ``--set`` ``overrides``.

    An override is ``"KEY=VALUE"`` (an error in its value names ``--set KEY=...``), or a pair
    ``("KEY=VALUE", origin)`` whose errors name ``origin`` instead (``"--resolution 17"``: a
    command's own option turned into an override)."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a folder, expected a spec file (e.g. studies/smoke.yaml)")
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    raw, origins = read_spec(path, overrides)
    return _Validator(raw, origins, path).study()


def check_seed(seed: Any, origin: str) -> int:
    """A seed given on the command line (``--seed``), checked as the spec checks its ``seeds``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise SpecError(f"{origin}: {seed_problem(seed)}")
    return seed


def check_resolution(spec: StudySpec, resolution: Any, label: str, origin: str) -> int:
    """A training resolution given on the command line (``--resolution``) for the encoding
    labelled ``label``, checked as the spec checks its ``train_resolutions``: a positive size the
    patch stem tiles, that fits this machine's memory, at which the encoding builds."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
        raise SpecError(f"{origin}: expected a positive training resolution in pixels, got {resolution!r}")
    model = spec.model
    if not model.tiles_exactly(resolution):
        raise SpecError(f"{origin}: {model.tiling_hint(resolution)}")
    validator = _Validator({"encodings": [{"name": e.name} for e in spec.encodings]}, {}, Path(spec.source))

    def fail(key: str, msg: str) -> typing.NoReturn:  # the option is the key
        raise SpecError(f"{origin}: {msg}")

    validator.fail = fail  # type: ignore[method-assign]
    validator.memory(model, spec.train, spec.dataset, (resolution,), (), ())
    enc = spec.encoding(label)
    try:
        check_encoding(enc.name, dataclasses.replace(model, image_size=resolution).dims, enc.options)
    except HarnessError as exc:
        raise SpecError(f"{origin}: {exc}") from None
    return resolution


def _size(x: Any) -> Size:
    size = Size.parse(x) if not isinstance(x, bool) else None
    if size is None or size.rows <= 0 or size.cols <= 0:
        raise ValueError(f"expected a positive size (an integer or ROWSxCOLS, e.g. 32x64), got {x!r}")
    return size


def _registered(registry: Registry) -> Any:
    def parse(x: Any) -> str:
        if not isinstance(x, str) or x not in registry:
            known = registry.names()
            raise ValueError(f"unknown {registry.kind} {x!r}{did_you_mean(x, known)} (known: {', '.join(known)})")
        return x

    return parse


# ------------------------------------------------------------------------------ limits
#: the longest study name or encoding label (a file name, an MLflow experiment or run name)
MAX_NAME = 100
_SAFE_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
_SAFE_LABEL = re.compile(rf"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{{0,{MAX_NAME - 1}}}")
#: seeds go to torch.manual_seed and torch.Generator.manual_seed (64 bits) and numpy (modulo 2**32)
MAX_SEED = 2**63


def seed_problem(seed: Any) -> str:
    """What is wrong with a seed (the trainer takes integers 0 <= seed < 2**63)."""
    return f"expected an integer seed 0 <= seed < 2**63, got {seed!r}"


# ------------------------------------------------------------------------------ validation
class _Validator:
    """Turns the merged mapping into a :class:`StudySpec`; every failure names file and key."""

    def __init__(self, raw: dict, origins: dict[str, str], path: Path) -> None:
        self.raw, self.origins, self.path = raw, origins, path
        self.dropped: list[str] = []  # primary comparisons of encodings a --set left out (analysis)

    def where(self, key: str) -> str:
        """The origin of ``key`` (``seeds[1]``, ``encodings[0].options.base``): the file, or the
        ``--set`` override, that gave it or the nearest key holding it."""
        k = key
        while k and k not in self.origins:
            k = k[: max(k.rfind("."), k.rfind("["), 0)]
        return self.origins.get(k, str(self.path))

    def fail(self, key: str, msg: str) -> typing.NoReturn:
        if f"'{key}'" in msg:  # the message names the key itself
            raise SpecError(f"{self.where(key)}: {msg}")
        raise SpecError(f"{self.where(key)}: key '{key}': {msg}")

    def section(self, cls: type, key: str, **kwargs: Any) -> Any:
        value = self.raw.get(key)
        try:
            return convert(cls, {} if value is None else value, key, **kwargs)
        except ConfigError as exc:
            self.fail(exc.key or key, exc.detail)

    def study(self) -> StudySpec:
        raw = self.raw
        for key in raw:
            if key not in TOP_KEYS:
                raise SpecError(f"{self.where(key)}: unknown key {key!r}{did_you_mean(key, sorted(TOP_KEYS))}")
        name = raw.get("name")
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
            # it names the folder output/<name>/ (one path component: never '.', '..' or a separator)
            self.fail("name", f"expected a study name of 1 to {MAX_NAME} letters, digits, '-', '_' or '.', "
                              f"not starting with '.', got {name!r}")
        plugins = self.plugins()  # first: they may register what the spec names
        dataset = self.dataset()
        train_res = self.int_list("train_resolutions", positive=True)
        test_res = self.items("test_resolutions", _size, "integers or ROWSxCOLS sizes")
        seeds = self.int_list("seeds", positive=False)
        for i, seed in enumerate(seeds):
            if not 0 <= seed < MAX_SEED:
                self.fail(f"seeds[{i}]", seed_problem(seed))
        policies = self.items("policies", _registered(POLICIES), "new-grid policies", ("extrapolate", "interpolate"))
        temperatures = self.items("temperatures", _registered(TEMPERATURES), "attention temperatures", ("none",))
        dataset_cls = DATASETS.get(dataset.name)
        regimes = self.regimes(dataset_cls)
        model_raw = raw.get("model") or {}
        kernel = model_raw.get("patch_kernel", 4) if isinstance(model_raw, dict) else 4
        probe_size = kernel if isinstance(kernel, int) and not isinstance(kernel, bool) and kernel > 0 else 4
        model = self.section(ViTConfig, "model", exclude=ViTConfig.PER_TRIAL, fixed={"image_size": probe_size})
        weights = model_bytes(model)
        if weights > memory_bytes():  # before any encoding is built at these dimensions
            given = [f"model.{k}" for k in ("dim", "depth", "mlp_ratio") if f"model.{k}" in self.origins]
            self.fail((given or ["model"])[-1], f"a model of these sizes needs at least {gib(weights)} to train "
                      f"(weights, gradients and AdamW moments), more than this machine's {gib(memory_bytes())}")
        for i, r in enumerate(train_res):
            if not model.tiles_exactly(r):
                self.fail(f"train_resolutions[{i}]", model.tiling_hint(r))
        for i, size in enumerate(test_res):
            for side in dict.fromkeys((size.rows, size.cols)):
                if not model.tiles_exactly(side):
                    self.fail(f"test_resolutions[{i}]", model.tiling_hint(side))
        canvas = self.canvas_sizes(dataset_cls, regimes, train_res, test_res, model)
        model = dataclasses.replace(model, image_size=train_res[0])
        train = self.section(TrainConfig, "train")
        tune = self.section(TuneConfig, "tune") if raw.get("tune") else None
        if tune is not None:
            self.tune_space(tune, train)
        self.memory(model, train, dataset, train_res, test_res, canvas)
        encodings = self.encodings(model, train_res)
        labels = [e.label for e in encodings]
        for key, tp in _SCALARS.items():
            ok, want = type_ok(raw.get(key), tp)
            if not ok:
                self.fail(key, f"expected {want}, got {raw[key]!r}")
        baseline = raw.get("baseline")
        if baseline is not None and baseline not in labels:
            self.fail("baseline", f"expected one of the study's encodings ({', '.join(labels)}), got {baseline!r}")
        for key, low in (("heartbeat", 1), ("max_retries", 0), ("workers", 1)):
            v = raw.get(key)
            if key == "workers" and v == "auto":  # one worker per GPU, else per core (harness.devices)
                continue
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                self.fail(key, f"expected an integer >= {low}, got {v!r}")
        analysis = self.analysis(labels, regimes, train_res, {r: canvas if r == "canvas" else test_res for r in regimes})
        output = raw.get("output", "runs")
        if not isinstance(output, str) or not output:
            self.fail("output", f"expected a folder path, got {output!r}")
        resolved = {
            "name": name,
            "dataset": {"name": dataset.name, **dataclasses.asdict(dataset.options)},
            # the model and recipe keys the spec sets, as checked (defaults are not spelled out)
            "model": {k: getattr(model, k) for k in model_raw},
            "train": {k: getattr(train, k) for k in (raw.get("train") or {})},
            "encodings": [dataclasses.asdict(e) for e in encodings],
            "train_resolutions": list(train_res), "seeds": list(seeds),
            "test_resolutions": [size.rows if size.square else size.label for size in test_res],
            "policies": list(policies), "temperatures": list(temperatures), "regimes": list(regimes),
            "canvas_resolutions": [size.rows if size.square else size.label for size in canvas],
            "tune": dataclasses.asdict(tune) if tune else None,
            # what is logged and shown: never a password
            "storage": redact_url(raw["storage"]) if raw.get("storage") else None,
            "tracking_uri": redact_url(raw["tracking_uri"]) if raw.get("tracking_uri") else None,
            "output": output, "plugins": list(plugins), "baseline": baseline,
            "analysis": dataclasses.asdict(analysis) if analysis else None,
            "heartbeat": raw.get("heartbeat", 30), "max_retries": raw.get("max_retries", 2),
            "workers": raw.get("workers", 1),
        }
        spec = StudySpec(
            name=name, dataset=dataset, model=model, train=train, encodings=tuple(encodings),
            train_resolutions=train_res, test_resolutions=test_res, seeds=seeds, tune=tune,
            policies=policies, temperatures=temperatures, regimes=regimes, canvas_resolutions=canvas,
            storage=raw.get("storage"), tracking_uri=raw.get("tracking_uri"), output=output,
            plugins=plugins, baseline=baseline, analysis=analysis, analysis_dropped=tuple(self.dropped),
            heartbeat=resolved["heartbeat"],
            max_retries=resolved["max_retries"], workers=resolved["workers"], source=str(self.path),
            resolved=resolved,
        )
        stores = [spec.storage_url(), spec.tracking()]
        if all(u.startswith("sqlite:///") for u in stores) and len({sqlite_path(u).resolve() for u in stores}) == 1:
            self.fail("storage" if raw.get("storage") else "tracking_uri",
                      f"the Optuna storage and the MLflow tracking store are the same SQLite file "
                      f"({sqlite_path(stores[0]).resolve()}): each needs its own")
        return spec

    def analysis(self, labels: list[str], regimes: tuple[str, ...], train_res: tuple[int, ...],
                 sizes: dict[str, tuple[Size, ...]]) -> AnalysisConfig | None:
        """The declared primary analysis (``analysis:``), checked against the study: its
        comparisons name the study's encodings, its regimes are the study's, and each side of its
        endpoint has a test size (in one of those regimes, around one training resolution)."""
        if self.raw.get("analysis") is None:
            return None
        cfg = self.section(AnalysisConfig, "analysis")
        seen: dict[frozenset, int] = {}
        kept = []
        for i, text in enumerate(cfg.primary):
            key = f"analysis.primary[{i}]"
            try:
                a, b = parse_comparison(text)
            except ValueError as exc:
                self.fail(key, str(exc))
            absent = [label for label in (a, b) if label not in labels]
            # the encodings narrowed on the command line (``--set encodings=[...]``) under a
            # comparison the spec file declares: it cannot be answered and is dropped with a
            # warning (harness.spec.design); a comparison given with its encodings is an error
            if absent and self.where("encodings").startswith("--") and not self.where(key).startswith("--"):
                self.dropped.append(f"{key} '{text}': {' and '.join(absent)} not in the study's encodings "
                                    f"(set by {self.where('encodings')})")
                continue
            for label in absent:
                self.fail(key, f"{label!r} is not an encoding of the study{did_you_mean(label, labels)} "
                               f"(its labels: {', '.join(labels)})")
            if a == b:
                self.fail(key, f"compares {a!r} with itself")
            if frozenset((a, b)) in seen:
                self.fail(key, f"{a} and {b} are compared already (analysis.primary[{seen[frozenset((a, b))]}])")
            seen[frozenset((a, b))] = i
            kept.append(text)
        if not kept:
            return None
        if len(kept) < len(cfg.primary):
            cfg = dataclasses.replace(cfg, primary=tuple(kept))
        for i, regime in enumerate(cfg.endpoint.regimes):
            if regime not in regimes:
                self.fail(f"analysis.endpoint.regimes[{i}]", f"{regime!r} is not a regime of the study "
                          f"(its regimes: {', '.join(regimes)})")

        def on(side: str, size: Size, t: int) -> bool:
            grows = size.rows >= t and size.cols >= t
            shrinks = size.rows <= t and size.cols <= t
            return (grows if side == "above" else shrinks) and size != Size(t, t)

        for i, side in enumerate(cfg.endpoint.sides):
            if not any(on(side, size, t) for r in cfg.endpoint.regimes or regimes for size in sizes[r]
                       for t in train_res):
                self.fail(f"analysis.endpoint.sides[{i}]", f"no test size of the study lies {side} its training "
                          f"size (test sizes: {', '.join(sorted({s.label for r in regimes for s in sizes[r]}))})")
        return cfg

    def tune_space(self, tune: TuneConfig, train: TrainConfig) -> None:
        """Every value the tune stage can draw (each bound of a range, each choice, and
        ``tune.epochs``) must make a recipe :class:`TrainConfig` accepts with the rest of
        ``train:``: a trial must never fail on a value its spec allowed."""

        def recipe(key: str, **values: Any) -> None:
            try:
                dataclasses.replace(train, **values)
            except ConfigError as exc:
                self.fail(key, f"gives the recipe {exc}")

        if tune.epochs:
            recipe("tune.epochs", epochs=tune.epochs)
        for name, dist in tune.space.items():
            field = name.partition(".")[2]
            key = f"tune.space.{name}"
            if "choices" in dist:
                for i, choice in enumerate(dist["choices"]):
                    recipe(f"{key}.choices[{i}]", **{field: choice})
                continue
            # as the tune stage draws: integers when both bounds are integers and the range is not log
            whole = isinstance(dist["low"], int) and isinstance(dist["high"], int) and not dist.get("log")
            if not whole and typing.get_type_hints(TrainConfig).get(field) is int:
                self.fail(key, f"train.{field} takes integers, and this range is drawn as floats: give integer "
                               f"low and high without log, or choices")
            for bound in ("low", "high"):
                recipe(f"{key}.{bound}", **{field: dist[bound] if whole else float(dist[bound])})

    def memory(self, model: ViTConfig, train: TrainConfig, dataset: DatasetSpec, train_res: tuple[int, ...],
               test_res: tuple[Size, ...], canvas: tuple[Size, ...]) -> None:
        """Refuse image sizes this machine's memory cannot take, before anything is built at
        them: each training and test size's floor (:func:`harness.spec.memory.size_bytes`) against
        :func:`memory_bytes`, the estimate in the message."""
        available = memory_bytes()
        bias = model.heads if self._has_attn_bias() else 0
        opts = dataset.options

        def check(key: str, size: Size, count: str, batch: int, training: bool) -> None:
            images = getattr(opts, count, None)
            images = images if isinstance(images, int) and not isinstance(images, bool) and images > 0 else batch
            batch = min(batch, images)
            tokens, need = size_bytes(model, size.rows, size.cols, images, batch, bias, training)
            what = "training" if training else "evaluating"
            if need > available:
                self.fail(key, f"{size.label} px is {tokens:,} tokens per image: {what} needs at least {gib(need)} "
                               f"({images:,} images at that size, the activations of a batch of {batch}"
                               f"{f' in each of {model.depth} blocks' if training else ''}"
                               f"{', an attention bias of tokens x tokens per head' if bias else ''}), more than "
                               f"this machine's {gib(available)} of memory")

        for i, r in enumerate(train_res):
            check(f"train_resolutions[{i}]", Size(r, r), "num_train", train.batch_size, True)
        for key, sizes in (("test_resolutions", test_res), ("canvas_resolutions", canvas)):
            for i, size in enumerate(sizes):
                check(f"{key}[{i}]", size, "num_test", train.eval_batch_size, False)

    def _has_attn_bias(self) -> bool:
        """Whether an encoding of the spec adds an attention bias (a tokens x tokens table)."""
        entries = self.raw.get("encodings")
        for item in entries if isinstance(entries, list) else []:
            name = item if isinstance(item, str) else item.get("name") if isinstance(item, dict) else None
            try:
                if isinstance(name, str) and name in ENCODINGS and "attn_bias" in describe_encoding(name).hooks:
                    return True
            except Exception:  # noqa: BLE001 - a broken plugin class: encodings() names it
                continue
        return False

    def plugins(self) -> tuple[str, ...]:
        plugins = self.raw.get("plugins") or []
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            self.fail("plugins", "expected a list of plugin references (file paths or module:attr)")
        out = []
        for i, ref in enumerate(plugins):
            if ref.endswith(".py") and not Path(ref).is_absolute():
                ref = str((self.path.parent / ref).resolve())
            try:
                load_plugin(ref)
            except HarnessError as exc:
                self.fail(f"plugins[{i}]", str(exc))
            out.append(ref)
        return tuple(out)

    def dataset(self) -> DatasetSpec:
        value = self.raw.get("dataset") or {}
        if not isinstance(value, dict):
            self.fail("dataset", f"expected a mapping, got {value!r}")
        options = dict(value)
        name = options.pop("name", "rendered")
        try:
            cls = DATASETS.get(name)
        except HarnessError as exc:
            self.fail("dataset.name", str(exc))
        try:
            return DatasetSpec(name, convert(cls.Options, options, "dataset"))
        except ConfigError as exc:
            self.fail(exc.key or "dataset", exc.detail)

    def items(self, key: str, parse: Any, what: str, default: tuple = ()) -> tuple:
        """A non-empty list at ``key`` (``default`` when absent), each item through ``parse``
        (which raises ValueError saying what is wrong), none given twice."""
        v = self.raw.get(key, list(default) or None)
        if isinstance(v, (int, str)) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, list) or not v:
            self.fail(key, f"expected a non-empty list of {what}, got {v!r}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(parse(x))
            except ValueError as exc:
                self.fail(f"{key}[{i}]", str(exc))
        dupes = [x for i, x in enumerate(out) if x in out[:i]]
        if dupes:
            self.fail(key, f"{dupes[0]} is given twice")
        return tuple(out)

    def regimes(self, dataset_cls: type) -> tuple[str, ...]:
        """The regimes of resolution change: those the dataset has."""

        def regime(x: Any) -> str:
            try:
                check_regime(dataset_cls, x)
            except HarnessError as exc:
                raise ValueError(str(exc)) from None
            return x

        return self.items("regimes", regime, "regimes of resolution change", ("zoom",))

    def canvas_sizes(self, dataset_cls: type, regimes: tuple[str, ...], train_res: tuple[int, ...],
                     test_res: tuple[Size, ...], model: ViTConfig) -> tuple[Size, ...]:
        """The canvas regime's sizes: ``canvas_resolutions`` (each at least the training size),
        by default the test sizes at least as large as every training resolution."""
        if "canvas" not in regimes:
            if self.raw.get("canvas_resolutions") is not None:
                self.fail("canvas_resolutions", "set, but 'canvas' is not among the study's regimes")
            return ()
        if self.raw.get("canvas_resolutions") is None:
            sizes = tuple(s for s in test_res if min(s.rows, s.cols) >= max(train_res))
            if not sizes:
                self.fail("test_resolutions", f"the canvas regime needs a test size of at least the training "
                          f"size ({max(train_res)} px); none is")
            return sizes
        sizes = self.items("canvas_resolutions", _size, "integers or ROWSxCOLS sizes")
        for i, size in enumerate(sizes):
            try:
                check_regime(dataset_cls, "canvas", size, max(train_res))
            except HarnessError as exc:
                self.fail(f"canvas_resolutions[{i}]", str(exc))
            for side in dict.fromkeys((size.rows, size.cols)):
                if not model.tiles_exactly(side):
                    self.fail(f"canvas_resolutions[{i}]", model.tiling_hint(side))
        return sizes

    def int_list(self, key: str, *, positive: bool) -> tuple[int, ...]:
        v = self.raw.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, list) or not v:
            self.fail(key, f"expected a non-empty list of integers, got {v!r}")
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, int):
                self.fail(f"{key}[{i}]", f"expected an integer, got {x!r}")
            if positive and x <= 0:
                self.fail(f"{key}[{i}]", f"expected a positive size, got {x}")
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            self.fail(key, f"{dupes[0]} is given twice")
        return tuple(v)

    def encodings(self, model: ViTConfig, train_res: tuple[int, ...]) -> list[EncodingSpec]:
        value = self.raw.get("encodings")
        if not isinstance(value, list) or not value:
            self.fail("encodings", f"expected a non-empty list of encodings, got {value!r}")
        out = []
        for i, item in enumerate(value):
            key = f"encodings[{i}]"
            if isinstance(item, dict) and isinstance(item.get("options"), dict) and "policy" in item["options"]:
                self.fail(f"{key}.options.policy", "the new-grid policy is an evaluation axis, applied to the same "
                          "trained weights: list it under 'policies:' instead")
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or "name" not in item:
                self.fail(key, f"expected an encoding name or a mapping with 'name' (and 'options', 'label'), "
                               f"got {item!r}")
            extra = set(item) - {"name", "options", "label"}
            if extra:
                self.fail(f"{key}.{sorted(extra)[0]}", "unknown key (valid: name, options, label)")
            options = item.get("options") or {}
            if not isinstance(options, dict):
                self.fail(f"{key}.options", f"expected a mapping of option names to values, got {options!r}")
            label = item.get("label") or item["name"]
            if not isinstance(label, str):
                self.fail(f"{key}.label", f"expected a string, got {label!r}")
            for r in train_res:  # the name, the options and the head dimension, against the real model
                try:
                    check_encoding(item["name"], dataclasses.replace(model, image_size=r).dims, options)
                except HarnessError as exc:
                    self.fail(f"{key}.name" if "unknown encoding" in str(exc) else key, str(exc))
            if not _SAFE_LABEL.fullmatch(label):  # it names files (checkpoints) and MLflow runs and tags
                self.fail(f"{key}.label" if item.get("label") else f"{key}.name",
                          f"expected a label of 1 to {MAX_NAME} letters, digits, '_', '-', '.' or '+', "
                          f"not starting with '.', got {label!r}")
            out.append(EncodingSpec(item["name"], dict(options), label))
        labels = [e.label for e in out]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            self.fail("encodings", f"{dupes[0]!r} is listed twice (give one of them a distinct 'label')")
        return out

