"""``harness evaluate``: evaluate a study's trained models again, without training.

Every trained cell keeps its final model in MLflow: the run's logged model ``model``, in the
PyTorch flavour, with its ``model.json`` (:mod:`harness.study.kept`; runs of earlier versions kept the
artifacts ``model/weights.pt`` and ``model/model.json``, still read). Given the
study's spec, with evaluation keys changed (``test_resolutions``, ``canvas_resolutions``,
``regimes``, ``policies``, ``temperatures``: ``harness.config.EVALUATION_ONLY``, outside the
study's pinned hash), this rebuilds each finished cell's model from its run, measures every test
size and evaluation variant the run has no metric for yet (or no half metrics: runs measured
before them get them, and keep the accuracy they were reported with), and logs them to the same
run, under the same names a training run uses (so the report reads them as any other). Nothing is trained:
a spec whose training keys differ from the study's is refused as ``harness run`` refuses it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import StudySpec
from harness.schema import (
    EVALUATE,
    HALF_KINDS,
    T_CELL,
    T_EVALUATED,
    VAL_ACC,
    Size,
    Variant,
    acc_vs_res,
    eval_metric,
)
from harness.spec import load_spec
from harness.study.storage import open_storage, open_studies
from harness.study.kept import KeptModelError, rebuild
from harness.study.tracking import Tracker
from harness.wording import count

__all__ = ["EvaluateResult", "evaluate_spec", "evaluate_study"]


@dataclass
class EvaluateResult:
    """What ``harness evaluate`` did, per cell tag."""

    spec: StudySpec
    evaluated: dict[str, int] = field(default_factory=dict)  # cell tag -> metrics added
    complete: list[str] = field(default_factory=list)  # cells that had every metric already
    untrained: list[str] = field(default_factory=list)  # cells with no finished run
    no_weights: list[str] = field(default_factory=list)  # finished runs that kept no model
    damaged: dict[str, str] = field(default_factory=dict)  # cell tag -> why its kept model is unusable


def evaluate_study(spec_path: str, overrides: list[str], *, storage: str | None = None,
                   tracking_uri: str | None = None, progress: bool | None = None) -> EvaluateResult:
    """``harness evaluate``: load the spec (with the overrides) and :func:`evaluate_spec` it."""
    extra = [f"storage={storage}"] if storage else []
    extra += [f"tracking_uri={tracking_uri}"] if tracking_uri else []
    spec = load_spec(spec_path, [*overrides, *extra])
    return evaluate_spec(spec, progress=progress)


def evaluate_spec(spec: StudySpec, *, progress: bool | None = None) -> EvaluateResult:
    """Add the spec's missing test sizes and evaluation variants to every finished cell of the
    study, from the weights its run kept. Returns what was done."""
    import torch

    from harness.encodings import ENCODINGS
    from harness.training.evaluation import evaluate_variants
    from harness.training.step import resolve_device
    from harness.study.trial import dataset_of, variants_of

    # the study must exist (nothing is created), trained with this spec's training keys (the pinned hash)
    open_studies(spec, open_storage(spec.storage_url(), create=False), create=False)
    tracker = Tracker(spec.tracking(), spec.name, create=False)
    tracker.mark_training()  # an experiment written before it was tagged opens on its runs too
    data = dataset_of(spec)
    train_cfg = spec.train_config()
    finished: dict[str, object] = {}
    for run in sorted(tracker.runs(spec.name, EVALUATE, status="FINISHED"), key=lambda r: r.info.start_time):
        finished[run.data.tags.get(T_CELL, "")] = run  # the latest finished run of a cell
    result = EvaluateResult(spec)
    cells = spec.cells()
    with tempfile.TemporaryDirectory() as tmp:
        for i, cell in enumerate(cells, 1):
            run = finished.get(cell.tag)
            if run is None:
                result.untrained.append(cell.tag)
                continue
            enc = spec.encoding(cell.encoding)
            variants = variants_of(spec, ENCODINGS.get(enc.name))
            have = run.data.metrics
            # a (variant, size) lacks a metric: never measured, or measured before the half metrics
            missing = {(v, s) for v in variants for s in spec.sizes(v.regime)
                       if any(eval_metric(k, v, s) not in have for k in ("acc", *HALF_KINDS))}
            if not missing:
                result.complete.append(cell.tag)
                continue
            try:
                model = _rebuild(tracker, run.info.run_id, Path(tmp) / cell.tag)
            except KeptModelError as exc:
                result.damaged[cell.tag] = f"run {run.info.run_id}: {exc}"
                continue
            if model is None:
                result.no_weights.append(cell.tag)
                print(f"warning: {cell.tag}: run {run.info.run_id} kept no model (trained before models were "
                      "kept): not evaluated; retrain the cell to evaluate it", file=sys.stderr)
                continue
            model.to(resolve_device(train_cfg.device))
            t0 = time.monotonic()
            tested = {}
            for regime in dict.fromkeys(v.regime for v, _ in missing):
                sizes = sorted({s for v, s in missing if v.regime == regime})
                mine = [v for v in variants if v.regime == regime and any((v, s) in missing for s in sizes)]
                got = evaluate_variants(model, data, train_cfg, train_resolution=cell.train_resolution,
                                        sizes={regime: sizes}, variants=mine)
                tested.update({k: m for k, m in got.items() if k in missing})
            _log(tracker, run, tested, have)
            result.evaluated[cell.tag] = len(tested)
            if progress is not False:
                print(f"cell {i}/{len(cells)} {cell.tag}: {count(len(tested), 'evaluation')} added "
                      f"({time.monotonic() - t0:.1f}s)", file=sys.stderr, flush=True)
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return result


def _rebuild(tracker: Tracker, run_id: str, dst: Path):
    """The model a run kept, rebuilt from its ``model.json`` with its weights loaded
    (:func:`harness.study.kept.rebuild`); None when the run kept no model. A model that cannot be read,
    or whose weights do not fit the model its ``model.json`` describes, raises
    :class:`KeptModelError` (one line: what is wrong)."""
    found = tracker.load_model(run_id, dst)
    if found is None:
        return None
    return rebuild(found.meta, found.state, weights=found.weights)


def _log(tracker: Tracker, run, tested: dict[tuple[Variant, Size], dict[str, float]],
         have: dict[str, float]) -> None:
    """The new metrics, at the step the run's own test metrics have (its last epoch), and the new
    points of its accuracy-against-resolution series. A metric the run has (``have``) is left as
    logged: a run measured before the half metrics gets them, and its accuracy stays the number it
    was reported with."""
    run_id = run.info.run_id
    history = tracker.client.get_metric_history(run_id, VAL_ACC)
    step = max((m.step for m in history), default=0)
    final = {}
    for (variant, size), m in tested.items():
        for kind in ("acc", "loss", *HALF_KINDS):
            key = eval_metric(kind, variant, size)
            if kind in m and key not in have:
                final[key] = m[kind]
    tracker.log_metrics(run_id, final, step=step)
    by_variant: dict[Variant, dict[int, float]] = {}
    for (variant, size), m in tested.items():
        if size.square and eval_metric("acc", variant, size) not in have:
            by_variant.setdefault(variant, {})[size.rows] = m["acc"]
    for variant, series in by_variant.items():
        tracker.log_series(run_id, acc_vs_res(variant), series)
    tracker.set_tags(run_id, {T_EVALUATED: f"{time.strftime('%Y-%m-%dT%H:%M:%S')} +{len(final)} metrics"})
