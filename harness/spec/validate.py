"""Step 4 of resolving a study spec (:mod:`harness.spec`): every section of the merged raw
mapping converted into its config and checked, then the study-level rules (resolutions the
patch stem tiles, duplicated seeds, empty lists, names safe as paths, sizes this machine's
memory can take). Every error names the file and the key (:class:`SpecValidator`)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from harness.config import (
    ConfigError,
    DatasetSpec,
    StudySpec,
    TrainConfig,
    TuneConfig,
    ViTConfig,
    convert,
    type_ok,
)
from harness.data import DATASETS, check_regime
from harness.errors import HarnessError, did_you_mean, redact_url
from harness.files import sqlite_path
from harness.registry import load_plugin
from harness.schema import Size
from harness.spec.checks import MAX_NAME, MAX_SEED, SAFE_NAME, SectionChecks, positive_size, registered_name, seed_problem
from harness.spec.memory import gib, memory_bytes, model_bytes
from harness.spec.sources import TOP_KEYS, SpecError
from harness.variants import POLICIES, TEMPERATURES

__all__ = ["MAX_NAME", "MAX_SEED", "SpecValidator", "seed_problem"]


_SCALARS = {"storage": str | None, "tracking_uri": str | None, "baseline": str | None}




# ------------------------------------------------------------------------------ validation
class SpecValidator(SectionChecks):
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
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            # it names the folder output/<name>/ (one path component: never '.', '..' or a separator)
            self.fail("name", f"expected a study name of 1 to {MAX_NAME} letters, digits, '-', '_' or '.', "
                              f"not starting with '.', got {name!r}")
        plugins = self.plugins()  # first: they may register what the spec names
        dataset = self.dataset()
        train_res = self.int_list("train_resolutions", positive=True)
        test_res = self.items("test_resolutions", positive_size, "integers or ROWSxCOLS sizes")
        seeds = self.int_list("seeds", positive=False)
        for i, seed in enumerate(seeds):
            if not 0 <= seed < MAX_SEED:
                self.fail(f"seeds[{i}]", seed_problem(seed))
        policies = self.items("policies", registered_name(POLICIES), "new-grid policies", ("extrapolate", "interpolate"))
        temperatures = self.items("temperatures", registered_name(TEMPERATURES), "attention temperatures", ("none",))
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
        sizes = self.items("canvas_resolutions", positive_size, "integers or ROWSxCOLS sizes")
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
