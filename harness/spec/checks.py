"""The checks of a study spec's sections that need more than their config's types: the declared
analysis, the tune stage's search space, the memory a size takes, the encodings at each
training resolution (:class:`SectionChecks`, which :class:`harness.spec.validate.SpecValidator`
builds on), and the limits on names and seeds."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from harness.config import (
    AnalysisConfig,
    ConfigError,
    DatasetSpec,
    EncodingSpec,
    TrainConfig,
    TuneConfig,
    ViTConfig,
    parse_comparison,
)
from harness.encodings import ENCODINGS, check_encoding, describe_encoding
from harness.errors import HarnessError, did_you_mean
from harness.registry import Registry
from harness.schema import Size
from harness.spec.memory import gib, memory_bytes, size_bytes

__all__ = ["MAX_NAME", "MAX_SEED", "SAFE_LABEL", "SAFE_NAME", "SectionChecks", "positive_size", "registered_name", "seed_problem"]


def positive_size(x: Any) -> Size:
    size = Size.parse(x) if not isinstance(x, bool) else None
    if size is None or size.rows <= 0 or size.cols <= 0:
        raise ValueError(f"expected a positive size (an integer or ROWSxCOLS, e.g. 32x64), got {x!r}")
    return size


def registered_name(registry: Registry) -> Any:
    def parse(x: Any) -> str:
        if not isinstance(x, str) or x not in registry:
            known = registry.names()
            raise ValueError(f"unknown {registry.kind} {x!r}{did_you_mean(x, known)} (known: {', '.join(known)})")
        return x

    return parse


# ------------------------------------------------------------------------------ limits
#: the longest study name or encoding label (a file name, an MLflow experiment or run name)
MAX_NAME = 100
SAFE_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
SAFE_LABEL = re.compile(rf"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{{0,{MAX_NAME - 1}}}")
#: seeds go to torch.manual_seed and torch.Generator.manual_seed (64 bits) and numpy (modulo 2**32)
MAX_SEED = 2**63


def seed_problem(seed: Any) -> str:
    """What is wrong with a seed (the trainer takes integers 0 <= seed < 2**63)."""
    return f"expected an integer seed 0 <= seed < 2**63, got {seed!r}"


# ------------------------------------------------------------------------------ sections
class SectionChecks:
    """The section checks of :class:`~harness.spec.validate.SpecValidator` (its ``raw``,
    ``where``, ``fail`` and ``items``); every failure names file and key."""

    raw: dict

    def where(self, key: str) -> str:
        raise NotImplementedError

    def fail(self, key: str, msg: str) -> typing.NoReturn:
        raise NotImplementedError

    def items(self, key: str, parse: Any, what: str, default: tuple = ()) -> tuple:
        raise NotImplementedError

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
            if not SAFE_LABEL.fullmatch(label):  # it names files (checkpoints) and MLflow runs and tags
                self.fail(f"{key}.label" if item.get("label") else f"{key}.name",
                          f"expected a label of 1 to {MAX_NAME} letters, digits, '_', '-', '.' or '+', "
                          f"not starting with '.', got {label!r}")
            out.append(EncodingSpec(item["name"], dict(options), label))
        labels = [e.label for e in out]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            self.fail("encodings", f"{dupes[0]!r} is listed twice (give one of them a distinct 'label')")
        return out
