"""Kept models: a trained cell's final model, in MLflow's PyTorch flavour (issue #24).

Each trained cell (evaluate and train stages) keeps its final model as an MLflow 3 *logged
model* named ``model`` whose source run is the cell's run: the runs table's Models column shows
it, and ``mlflow.pytorch.load_model("runs:/<run_id>/model")`` (or ``models:/<model_id>``) gives a
working model with nothing of this project installed. Its folder holds:

- ``data/model.pt2``: the model as ``torch.export`` exports it (the flavour's ``pt2``
  serialization): a graph of torch operators and its weights, no Python class. The flavour's
  other form (``pickle``) would pickle the model's classes, a plugin encoding's among them,
  which may not be importable where the model is loaded; the harness never writes it. The graph
  is exported at the training size (the batch size is free): an input at another size is
  refused by the graph's shape guards.
- ``model.json`` (:func:`harness.study.trial.model_meta`): the model config, the encoding's name and
  options, the training resolution. ``harness evaluate`` tests other sizes than the graph's, so it
  rebuilds the model with this project's code from ``model.json`` and loads the weights the
  graph holds (:func:`read`): the exported graph's state dict has the model's own keys.
- ``MLmodel`` with a signature (float32 images ``(-1, C, r, r)`` -> logits ``(-1, classes)``) and
  an input example (two test images at the training size ``r``).

The model is exported from a copy rebuilt on the CPU from ``model.json`` with the trained
weights, in eval mode, outside the trainer's autocast: the exported graph is float32 and loads on
any machine (a graph exported from CUDA weights loads only where CUDA is). On CUDA the run's
logged accuracy was measured under bf16 autocast, so the float32 graph may differ from it in a
few predictions; on the CPU (float32 both) it gives the logged accuracy exactly. A model that
``torch.export`` cannot trace (a plugin's data-dependent Python) is kept in the previous format.

An earlier try (``mlflow.pytorch.log_model(..., serialization_format="pt2")``) saved models that
``torch.export.load`` refused: ``SpecViolationError: Node.meta wrap_with_autocast is missing val
field``. Training had nothing to do with it: the encodings without tables (``none``, ``learned``,
``cpe``) entered an ``autocast(enabled=False)`` region around a ``build`` that returns nothing,
on every forward; export records such a region as a ``wrap_with_autocast`` node, with no output
value to describe. ``autocast_off`` (:mod:`harness.encodings._precision`) now enters the region
only when autocast is on, so an export (autocast off) records none.

The previous format (runs written before, or a model torch.export could not trace): the run's
own artifacts ``model/weights.pt`` (a state dict saved with ``torch.save``) and ``model/model.json``;
:meth:`harness.study.tracking.Tracker.load_model` reads both.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

from harness.errors import HarnessError
from harness.schema import MODEL_ARTIFACTS, MODEL_META, MODEL_PT2, MODEL_WEIGHTS

__all__ = ["Kept", "KeptModelError", "one_line", "read", "read_weights", "rebuild", "save", "save_weights"]


class Kept(NamedTuple):
    """A kept model as read back: its weights, its ``model.json`` and the file the weights came
    from (``model/data/model.pt2``, or ``model/weights.pt`` of the previous format)."""

    state: dict
    meta: dict[str, Any]
    weights: str


class KeptModelError(HarnessError):
    """A run's kept model cannot be read (damaged weights, unreadable ``model.json``), or does
    not fit the model its ``model.json`` describes: that cell cannot be evaluated again."""


def one_line(exc: BaseException) -> str:
    """``exc`` as one short line: its type and the first sentence of its message."""
    text = str(exc).strip().splitlines()
    first = text[0].split(". ")[0].rstrip(".")[:200] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def rebuild(meta: dict[str, Any], state: dict | None = None, *, weights: str = "the weights"):
    """The model ``meta`` (a ``model.json``) describes, built with this project's code, with
    ``state`` loaded when given. A ``model.json`` that builds no model, or weights that do not fit
    it, raise :class:`KeptModelError` (one line: what is wrong; ``weights`` names the file)."""
    from harness.config import ViTConfig
    from harness.models.vit import build_model

    try:
        model = build_model(ViTConfig.from_dict(meta["model"]), meta["encoding"]["name"], meta["encoding"]["options"])
    except Exception as exc:  # noqa: BLE001 - a model.json that builds no model is the kept model's fault
        raise KeptModelError(f"{MODEL_ARTIFACTS}/{MODEL_META} does not describe a model ({one_line(exc)})") from None
    if state is not None:
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
            raise KeptModelError(f"{weights} does not fit the model of its {MODEL_META} ({detail[:200]})") from None
    return model


def save(dst: Path, state_dict: dict, meta: dict[str, Any], example, mlflow_model) -> None:
    """Write the kept model into the new folder ``dst`` in the PyTorch flavour (``pt2``) with its
    ``model.json``: the model rebuilt on the CPU from ``meta`` with ``state_dict``, exported in eval
    mode at the size of ``example`` (a batch of images, at least two: the batch size stays free).
    ``mlflow_model`` is the ``mlflow.models.Model`` of the logged model (its id goes in ``MLmodel``).
    Raises what ``torch.export`` raises on a model it cannot trace."""
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model = rebuild(meta, {k: v.detach().cpu() for k, v in state_dict.items()}).eval()
    x = example.detach().to("cpu", torch.float32)[:2]
    classes = int(meta["model"]["num_classes"])  # the model.json says it: no forward pass to find it
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *x.shape[1:]), "images")]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes), "logits")]))
    with torch.no_grad():
        # requirements given: MLflow would otherwise infer them by loading the model in a subprocess (seconds)
        mlflow.pytorch.save_model(model, str(dst), mlflow_model=mlflow_model, signature=signature,
                                  input_example=x.numpy(), serialization_format="pt2",
                                  pip_requirements=mlflow.pytorch.get_default_pip_requirements()[:1])
    (Path(dst) / MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")


def _meta(folder: Path) -> dict[str, Any]:
    """The ``model.json`` in ``folder``; :class:`KeptModelError` when it cannot be read."""
    try:
        meta = json.loads((Path(folder) / MODEL_META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeptModelError(f"{MODEL_ARTIFACTS}/{MODEL_META} cannot be read ({one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise KeptModelError(f"{MODEL_ARTIFACTS}/{MODEL_META}: not a JSON object")
    return meta


def read(folder: Path) -> Kept:
    """The kept model downloaded into ``folder``: its weights, loaded through
    ``mlflow.pytorch.load_model`` (``data/model.pt2``), and its ``model.json``. A file that cannot
    be read raises :class:`KeptModelError` naming it."""
    import mlflow.pytorch

    meta = _meta(folder)
    try:  # random bytes or a truncated file are no zip archive (MLflow would call them "not pickle-free")
        with zipfile.ZipFile(Path(folder) / MODEL_PT2) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"{bad} is damaged (CRC)")
        module = mlflow.pytorch.load_model(str(folder))
        state = dict(module.state_dict())
    except Exception as exc:  # noqa: BLE001 - whatever the loader raises on a damaged file
        raise KeptModelError(f"{MODEL_ARTIFACTS}/{MODEL_PT2} cannot be read ({one_line(exc)})") from None
    return Kept(state, meta, f"{MODEL_ARTIFACTS}/{MODEL_PT2}")


def save_weights(dst: Path, state_dict: dict, meta: dict[str, Any]) -> None:
    """The previous format, into the new folder ``dst``: ``weights.pt`` (``state_dict`` saved with
    ``torch.save``) and ``model.json`` (``meta``); the run's ``model/`` artifacts."""
    import torch

    Path(dst).mkdir(parents=True)
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, Path(dst) / MODEL_WEIGHTS)
    (Path(dst) / MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")


def read_weights(folder: Path) -> Kept:
    """A kept model of the previous format downloaded into ``folder`` (``weights.pt`` and
    ``model.json``). A file that cannot be read raises :class:`KeptModelError` naming it."""
    import torch

    meta = _meta(folder)
    try:  # random bytes: UnpicklingError; a truncated zip: RuntimeError; weights_only refuses code
        state = torch.load(Path(folder) / MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch.load raises on a damaged file
        raise KeptModelError(f"{MODEL_ARTIFACTS}/{MODEL_WEIGHTS} cannot be read ({one_line(exc)})") from None
    if not isinstance(state, dict):
        raise KeptModelError(f"{MODEL_ARTIFACTS}/{MODEL_WEIGHTS}: not a state dict")
    return Kept(state, meta, f"{MODEL_ARTIFACTS}/{MODEL_WEIGHTS}")
