"""A benchmark request, checked as a whole before anything is measured.

Two sources of the model and its recipe: a model preset (``--preset``: 10 classes, the default
recipe, batch 64), or a study spec (``--spec``): the study's own model, dataset, recipe, batch
size, training resolution and encoding entries (labels with their options), and its evaluation
sweep (regimes, sizes, variants, test split), so that the figures are those of one of its cells.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.config import StudySpec, ViTConfig
from harness.encodings import get_encoding, known_names
from harness.errors import HarnessError
from harness.spec.presets import list_presets, load_preset
from harness.training.step import resolve_device

__all__ = ["DEFAULT_BATCH", "DEFAULT_PRESET", "REFERENCE", "BenchError", "Request", "check_request", "model_config"]

REFERENCE = "none"  # the encoding every ratio is taken against, always measured, first
DEFAULT_PRESET = "small"  # the model without --preset or --spec
DEFAULT_BATCH = 64  # images per training step without --batch-size or --spec


class BenchError(HarnessError):
    """A benchmark request that cannot run: bad resolution, device, count or output path."""


@dataclass(frozen=True)
class Request:
    """What to measure: the model of ``preset`` (or of ``spec``), the encodings (the reference
    first; ``builds`` gives each one's registered name and options), the evaluation
    resolutions, the batch, the thread counts (each figure is measured at every one), the
    device, and where the JSON goes."""

    preset: str | None  # None: a spec's model that no preset matches
    cfg: ViTConfig
    encodings: list[str]
    resolutions: list[int]
    device: torch.device
    json_path: Path | None
    notes: list[str]  # what was added or changed, for the report
    batch_size: int = DEFAULT_BATCH
    threads: tuple[int, ...] = (0,)  # 0: torch's current count
    builds: dict[str, tuple[str, dict]] = dataclasses.field(default_factory=dict)  # key -> (name, options)
    spec: StudySpec | None = None
    overrides: tuple[str, ...] = ()  # the spec's ``--set`` overrides


def check_request(preset: str | None, *, device: str, encodings: Sequence[str] | None,
                  resolutions: Sequence[int] | None, batch_size: int | None, repeats: int,
                  threads: int | Sequence[int], json_path: str | os.PathLike | None,
                  spec: str | os.PathLike | None = None, sweep_repeats: int = 1,
                  overrides: Sequence[str] = ()) -> Request:
    """Every input checked, in this order; a bad one raises :class:`BenchError` (or the
    preset's, the spec's or the registry's ``HarnessError``).

    ``preset`` None: the spec's model, else ``DEFAULT_PRESET``; with a spec, a preset must be
    the spec's model. ``batch_size`` None: the spec's ``train.batch_size``, else ``DEFAULT_BATCH``.
    ``threads``: one count or several (0: torch's current count, alone only). ``overrides``:
    ``KEY=VALUE`` changes to the spec, as ``--set`` (only with a spec)."""
    for name, v, lo in (("--batch-size", DEFAULT_BATCH if batch_size is None else batch_size, 1),
                        ("--repeats", repeats, 1), ("--sweep-repeats", sweep_repeats, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise BenchError(f"{name} must be an integer >= {lo}, got {v!r}")
    counts = _check_threads(threads)
    if overrides and spec is None:
        raise BenchError(f"--set {str(overrides[0]).partition('=')[0]}=...: overrides change a study spec; "
                         "give one with --spec")
    if spec is None:
        preset = DEFAULT_PRESET if preset is None else preset
        cfg = model_config(preset)  # unknown preset -> PresetError
        chosen, builds, notes = _select_encodings(encodings)  # unknown encoding -> RegistryError
        study = None
    else:
        study, cfg, preset = _from_spec(spec, preset, overrides)
        chosen, builds, notes = _select_encodings(encodings, study)
        batch_size = study.train.batch_size if batch_size is None else batch_size
    return Request(
        preset=preset,
        cfg=cfg,
        encodings=chosen,
        resolutions=_check_resolutions(cfg, resolutions),
        device=resolve_device(device, option="--device", error=BenchError),
        json_path=_check_json_path(json_path),
        notes=notes,
        batch_size=DEFAULT_BATCH if batch_size is None else batch_size,
        threads=counts,
        builds=builds,
        spec=study,
        overrides=tuple(overrides),
    )


def model_config(preset: str, image_size: int | None = None) -> ViTConfig:
    """``ViTConfig`` of a model preset, 10 classes, 3 input channels."""
    d = dict(load_preset("model", preset))
    if image_size is not None:
        d["image_size"] = image_size
    d.update(num_classes=10, in_chans=3)
    return ViTConfig.from_dict(d)


def _check_threads(threads: int | Sequence[int]) -> tuple[int, ...]:
    """The thread counts, in order, without repeats; 0 (torch's current count) only alone."""
    counts = [threads] if isinstance(threads, int) else list(threads)
    if not counts:
        raise BenchError("--threads: expected at least one thread count")
    for v in counts:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise BenchError(f"--threads must be integers >= 0, got {v!r}")
    counts = list(dict.fromkeys(counts))
    if len(counts) > 1 and 0 in counts:
        raise BenchError("--threads: 0 (torch's current count) cannot be combined with other counts; "
                         "give the counts, e.g. --threads 1 2")
    return tuple(counts)


def _from_spec(path: str | os.PathLike, preset: str | None, overrides: Sequence[str]
               ) -> tuple[StudySpec, ViTConfig, str | None]:
    """The study at ``path`` (with ``overrides``), its model at its first training resolution on its data, and the
    name of the model preset that is this model (``preset`` when given: checked to be it)."""
    from harness.data import load_dataset
    from harness.spec import load_spec

    study = load_spec(path, list(overrides))  # a bad spec or override -> SpecError (one line, exit 2)
    data = load_dataset(study.dataset.name, study.dataset.options)  # one instance per process: shared later
    cfg = study.model_config(study.train_resolutions[0], data.in_chans, data.num_classes)
    if preset is not None:
        theirs = model_config(preset)  # unknown preset -> PresetError
        if not _same_model(theirs, cfg):
            raise BenchError(f"--preset {preset}: {path} trains another model ({_dims(cfg)}; {preset}: "
                             f"{_dims(theirs)}); leave out --preset to measure the spec's model")
        return study, cfg, preset
    return study, cfg, next((p for p in list_presets("model") if _same_model(model_config(p), cfg)), None)


def _same_model(a: ViTConfig, b: ViTConfig) -> bool:
    """The same network, whatever the training resolution and the data's channels and classes."""
    skip = ViTConfig.PER_TRIAL
    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(ViTConfig) if f.name not in skip)


def _dims(cfg: ViTConfig) -> str:
    return (f"dim {cfg.dim}, depth {cfg.depth}, heads {cfg.heads}, mlp {cfg.mlp_ratio:g}, "
            f"patch {cfg.patch_kernel}/{cfg.patch_stride}")


def _select_encodings(names: Sequence[str] | None, study: StudySpec | None = None
                      ) -> tuple[list[str], dict[str, tuple[str, dict]], list[str]]:
    """The encodings to measure, the reference first, and what builds each: (registered name,
    options). Default: every registered one, or with a study, every entry of the study (its
    labels, with their options). A name that is not a label of the study is the registered
    encoding with its default options (as ``harness train --encoding``)."""
    notes = []
    entries = {e.label: (e.name, dict(e.options)) for e in study.encodings} if study is not None else {}
    if not names:
        chosen = list(entries) if study is not None else known_names()
    else:
        chosen = list(dict.fromkeys(names))
    builds = {}
    for n in chosen + [REFERENCE]:
        if n not in entries:
            get_encoding(n)  # unknown -> RegistryError (one message, exit 2)
        builds[n] = entries.get(n, (n, {}))
    if REFERENCE not in chosen:
        notes.append(f"{REFERENCE} added: it is the reference of every ratio")
    return [REFERENCE] + [n for n in chosen if n != REFERENCE], builds, notes


def _check_resolutions(cfg: ViTConfig, resolutions: Sequence[int] | None) -> list[int]:
    if not resolutions:  # the training resolution and twice it (rounded up to a size the stem tiles)
        k, s = cfg.patch_kernel, cfg.patch_stride
        resolutions = [cfg.image_size, k + math.ceil((2 * cfg.image_size - k) / s) * s]
    out = []
    for r in resolutions:
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise BenchError(f"--resolutions: {r!r} is not a positive number of pixels")
        if not cfg.tiles_exactly(r):
            raise BenchError(f"--resolutions: {cfg.tiling_hint(r)}")
        if r not in out:
            out.append(r)
    return out


def _check_json_path(path: str | os.PathLike | None) -> Path | None:
    """The JSON output path, checked (not created) before anything is measured."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise BenchError(f"--json {p}: is a folder, expected a file path")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise BenchError(f"--json {p}: cannot write there ({ancestor} is not a writable folder)")
    return p
