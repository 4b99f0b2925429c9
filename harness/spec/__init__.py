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
import typing
from pathlib import Path
from typing import Any

from harness.config import DatasetSpec, EncodingSpec, StudySpec
from harness.encodings import check_encoding
from harness.errors import HarnessError, redact_url
from harness.spec.presets import SpecLoader, parse_value
from harness.spec.memory import memory_bytes
from harness.spec.sources import SpecError, read_spec
from harness.spec.validate import MAX_SEED, SpecValidator, seed_problem

__all__ = ["DatasetSpec", "EncodingSpec", "SpecError", "SpecLoader", "StudySpec", "check_resolution", "check_seed",
           "load_spec", "memory_bytes", "parse_value", "redact_url"]


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
    return SpecValidator(raw, origins, path).study()


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
    validator = SpecValidator({"encodings": [{"name": e.name} for e in spec.encodings]}, {}, Path(spec.source))

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
