"""A benchmark request, checked as a whole before anything is measured."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.config import ViTConfig
from harness.encodings import get_encoding, known_names
from harness.errors import HarnessError
from harness.presets import load_preset
from harness.train import resolve_device

__all__ = ["REFERENCE", "BenchError", "Request", "check_request", "model_config"]

REFERENCE = "none"  # the encoding every ratio is taken against, always measured, first


class BenchError(HarnessError):
    """A benchmark request that cannot run: bad resolution, device, count or output path."""


@dataclass(frozen=True)
class Request:
    """What to measure: the model of ``preset``, the encodings (the reference first), the
    evaluation resolutions, the device, and where the JSON goes."""

    preset: str
    cfg: ViTConfig
    encodings: list[str]
    resolutions: list[int]
    device: torch.device
    json_path: Path | None
    notes: list[str]  # what was added or changed, for the report


def check_request(preset: str, *, device: str, encodings: Sequence[str] | None, resolutions: Sequence[int] | None,
                  batch_size: int, repeats: int, threads: int, json_path: str | os.PathLike | None) -> Request:
    """Every input checked, in this order; a bad one raises :class:`BenchError` (or the
    preset's or the registry's ``HarnessError``)."""
    for name, v, lo in (("--batch-size", batch_size, 1), ("--repeats", repeats, 1), ("--threads", threads, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise BenchError(f"{name} must be an integer >= {lo}, got {v!r}")
    cfg = model_config(preset)  # unknown preset -> PresetError
    chosen, notes = _select_encodings(encodings)  # unknown encoding -> RegistryError
    return Request(
        preset=preset,
        cfg=cfg,
        encodings=chosen,
        resolutions=_check_resolutions(cfg, resolutions),
        device=resolve_device(device, option="--device", error=BenchError),
        json_path=_check_json_path(json_path),
        notes=notes,
    )


def model_config(preset: str, image_size: int | None = None) -> ViTConfig:
    """``ViTConfig`` of a model preset, 10 classes, 3 input channels."""
    d = dict(load_preset("model", preset))
    if image_size is not None:
        d["image_size"] = image_size
    d.update(num_classes=10, in_chans=3)
    return ViTConfig.from_dict(d)


def _select_encodings(names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The encodings to measure (default: every registered one), the reference first."""
    notes = []
    if not names:
        chosen = known_names()
    else:
        chosen = list(dict.fromkeys(names))
        for n in chosen:
            get_encoding(n)  # unknown -> RegistryError (one message, exit 2)
    if REFERENCE not in chosen:
        notes.append(f"{REFERENCE} added: it is the reference of every ratio")
    return [REFERENCE] + [n for n in chosen if n != REFERENCE], notes


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
