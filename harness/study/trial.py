"""One trial: train one model of a study's cell and track it as an MLflow child run.

Everything a run records goes through the names of ``harness.schema``: its parameters
(the cell, the resolved config and, once trained, the parameter count), its tags, its
per-epoch curves, its final metrics and, per evaluation variant, the series of test accuracy
against (square) test resolution. The trial reports the per-epoch validation accuracy to
Optuna in every stage (intermediate values); only the tune stage prunes on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from datetime import datetime
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from harness.config import StudySpec
from harness.data import load_dataset
from harness.encodings import PositionalEncoding
from harness.errors import HarnessError
from harness.models.vit import build_model
from harness.training.progress import StudyProgress
from harness.provenance import git_commit, versions
from harness.schema import (
    IMAGES_PER_S,
    P_CONFIG,
    P_PARAM_COUNT,
    PARAM_COUNT,
    RESUMED_FROM,
    SPEC_ARTIFACT,
    T_CELL,
    T_DEVICE,
    T_FAIL_REASON,
    T_GIT_COMMIT,
    T_PRUNED_AT,
    T_RETRY_OF,
    T_SPEC_DIGEST,
    T_TRIAL_NUMBER,
    T_VERSIONS,
    T_WORKER,
    TUNE,
    U_MLFLOW_RUN,
    VAL_ACC,
    VAL_IMAGES,
    Cell,
    CHANCE,
    EVALUATE,
    HALF_KINDS,
    NO_POLICY,
    P_DEFAULT_POLICY,
    Size,
    Variant,
    acc_vs_res,
    eval_metric,
    time_metric,
)
from harness.training.stopwatch import Stopwatch, TimedTracker
from harness.study.tracking import Tracker
from harness.training.checkpoint import OutputWriteError
from harness.training.evaluation import evaluate_variants
from harness.training.train import TrainConfigError, TrialFailed, train_model
from harness.variants import default_policy

__all__ = ["TrialError", "model_meta", "train_one", "variants_of", "worker_id"]


class TrialError(Exception):
    """The trial failed (diverged); its run is closed as FAILED. ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def worker_id() -> str:
    """This worker process, as runs and trials record it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dataset_of(spec: StudySpec, *, cache: bool = True):
    """The study's dataset (built once per process). ``cache``: its splits are kept on disk under
    ``output/<name>/cache`` too (:mod:`harness.data.cache`), made once for every worker process
    of the study and every later command (``evaluate``, a re-run); deleting the study's folder
    deletes them. Building it writes nothing: a split is written when it is first made."""
    return load_dataset(spec.dataset.name, spec.dataset.options, spec.path_under("cache") if cache else None)


def train_one(spec: StudySpec, cell: Cell, *, stage: str, tracker: Tracker, parent: str,
              trial: optuna.Trial | None = None, overrides: dict[str, Any] | None = None,
              progress: bool | None = None) -> float:
    """Train the model of ``cell`` and track it as a child run of ``parent``; return the score
    the stage optimises (validation accuracy for tune, test accuracy at the training resolution
    otherwise). A diverged trial raises :class:`TrialError` after closing its run as FAILED."""
    sw = Stopwatch()  # where the run's time goes, logged with its results (time/<phase>_s)
    tracker = TimedTracker(tracker, sw)
    enc = spec.encoding(cell.encoding)
    res = cell.train_resolution
    with sw.phase("setup"):
        data = dataset_of(spec)
        model_cfg = spec.model_config(res, data.in_chans, data.num_classes)
        train_cfg = spec.train_config(**(overrides or {}))
        torch.manual_seed(cell.seed)
        model = build_model(model_cfg, enc.name, enc.options)
    tag = cell.tag + (f"_t{trial.number}" if stage == TUNE and trial is not None else "")
    ckpt = spec.path_under("checkpoints", stage, f"{tag}.pt")  # never outside output/<study>/
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    resolved = {**spec.resolved, "model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg),
                "encoding": dataclasses.asdict(enc)}
    previous = [r.info.run_id for r in tracker.runs(spec.name, stage, cell=tag) if r.info.status != "FINISHED"]
    tags = {T_CELL: tag, T_WORKER: worker_id(), T_SPEC_DIGEST: spec.digest(), T_GIT_COMMIT: git_commit(),
            T_VERSIONS: json.dumps(versions())}
    if trial is not None:
        tags[T_TRIAL_NUMBER] = str(trial.number)
    if previous:
        tags[T_RETRY_OF] = previous[-1]
    run_id = tracker.child_run(parent, tag, study=spec.name, stage=stage, tags=tags,
                               params={**cell.params(), P_CONFIG: resolved,
                                       P_DEFAULT_POLICY: default_policy(type(model.pe).describe())})
    tracker.log_text(run_id, json.dumps(resolved, indent=2, default=str), SPEC_ARTIFACT)
    tracker.log_dataset(run_id, spec.dataset.name, dataclasses.asdict(spec.dataset.options), resolution=res,
                        regimes=list(spec.regimes))  # the runs table's Dataset column
    if trial is not None:
        trial.set_user_attr(U_MLFLOW_RUN, run_id)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        if trial is not None:  # intermediate values for the dashboards; only the tune stage prunes
            trial.report(metrics[VAL_ACC], epoch)
            if stage == TUNE and trial.should_prune():
                tracker.set_tags(run_id, {T_PRUNED_AT: str(epoch)})
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    with sw.phase("tracking"):  # how far the study is: read from its trials
        note = _progress_note(spec, stage, trial)
    try:
        result = train_model(model, data, train_cfg, train_resolution=res, test_resolutions=(), seed=cell.seed,
                             checkpoint=ckpt, on_epoch=on_epoch, progress=progress, stopwatch=sw,
                             label=f"{_position(spec, cell, stage, trial)} {cell.encoding} r{res} seed {cell.seed}",
                             note=note)
        tested = {} if stage == TUNE else evaluate_variants(
            model, data, train_cfg, train_resolution=res, sizes={r: spec.sizes(r) for r in spec.regimes},
            variants=variants_of(spec, type(model.pe)), stopwatch=sw)
    except TrialFailed as exc:
        tracker.set_tags(run_id, {T_FAIL_REASON: exc.reason})
        tracker.end(run_id, "FAILED")
        raise TrialError(exc.reason) from None
    except TrainConfigError:
        tracker.end(run_id, "FAILED")
        raise
    except optuna.TrialPruned:
        tracker.end(run_id, "FINISHED")
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        # the trial was failed under us: this worker was paused (or stalled) past the heartbeat
        # grace and another worker took the cell over; abandon the result (the caller moves on)
        from harness.study.storage import REAPED_REASON

        tracker.set_tags(run_id, {T_FAIL_REASON: REAPED_REASON})
        tracker.end(run_id, "FAILED")
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit) as exc:
        # Ctrl-C / SIGTERM: harness.interrupts already ignores a second signal while this closes the run
        tracker.set_tags(run_id, {T_FAIL_REASON: f"interrupted: {type(exc).__name__}"})
        tracker.end(run_id, "KILLED")
        raise
    except HarnessError as exc:  # the user's to fix (a full disk, a bad checkpoint): the command stops, exit 2
        try:
            tracker.set_tags(run_id, {T_FAIL_REASON: str(exc)})
        finally:
            tracker.end(run_id, "FAILED")
        raise
    except Exception as exc:  # noqa: BLE001 - an error in the model or a plugin fails this cell, not the study
        import traceback

        reason = f"error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:500]
        try:
            tracker.set_tags(run_id, {T_FAIL_REASON: reason})
            tracker.log_text(run_id, traceback.format_exc(), "traceback.txt")
        finally:
            tracker.end(run_id, "FAILED")
        raise TrialError(reason) from exc
    try:
        _log_trained(tracker, run_id, result, tested, 1.0 / data.num_classes)
        if stage != TUNE:  # a trained cell's final model, to load with MLflow and to evaluate again (harness evaluate)
            example = data.split("test", res, "cpu").images[:2]  # the logged model's input example
            tracker.log_model(run_id, model.state_dict(), model_meta(model_cfg, enc, res), example)
        tracker.log_metrics(run_id, {time_metric(k): v for k, v in sw.breakdown().items()},
                            step=len(result.history))
    except BaseException as exc:  # the run never stays RUNNING: a full disk here fails it like one in training
        killed = isinstance(exc, (KeyboardInterrupt, SystemExit))
        reason = f"interrupted: {type(exc).__name__}" if killed else f"logging the results: {type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            tracker.set_tags(run_id, {T_FAIL_REASON: reason[:500]})
        tracker.end(run_id, "KILLED" if killed else "FAILED")
        if isinstance(exc, OSError):
            raise OutputWriteError.of(exc, spec.run_dir, f"the results of {tag}") from None
        raise
    tracker.end(run_id, "FINISHED")
    ckpt.unlink(missing_ok=True)
    at_train = [m["acc"] for (_, size), m in tested.items() if size == Size(res, res)]
    return at_train[0] if at_train else result.history[-1][VAL_ACC]


def _log_trained(tracker: Tracker, run_id: str, result: Any, tested: dict, chance: float) -> None:
    """A trained run's final metrics (per variant and test size: accuracy, loss and the accuracy on
    each half of the test images), its parameter count and, per variant, its accuracy against the
    (square) test size."""
    final = {PARAM_COUNT: result.params, IMAGES_PER_S: result.images_per_s, RESUMED_FROM: result.resumed_from_epoch,
             CHANCE: chance}
    if result.val_images:
        final[VAL_IMAGES] = result.val_images
    for (variant, size), m in tested.items():
        for kind in ("acc", "loss", *HALF_KINDS):
            if kind in m:
                final[eval_metric(kind, variant, size)] = m[kind]
    tracker.log_metrics(run_id, final, step=len(result.history))
    tracker.log_params(run_id, {P_PARAM_COUNT: result.params})
    by_variant: dict[Variant, dict[int, float]] = {}
    for (variant, size), m in tested.items():
        if size.square:  # step = the test size in px: MLflow draws accuracy against resolution
            by_variant.setdefault(variant, {})[size.rows] = m["acc"]
    for variant, series in by_variant.items():
        tracker.log_series(run_id, acc_vs_res(variant), series)
    tracker.set_tags(run_id, {T_DEVICE: result.device})


def model_meta(model_cfg: Any, enc: Any, train_resolution: int) -> dict[str, Any]:
    """What rebuilds a trained model from its weights (``model.json``): the model config, the
    encoding's registry name, options and label, and the training resolution."""
    return {"model": dataclasses.asdict(model_cfg), "encoding": {"name": enc.name, "options": enc.options,
                                                                 "label": enc.label},
            "train_resolution": train_resolution}


def _position(spec: StudySpec, cell: Cell, stage: str, trial: optuna.Trial | None) -> str:
    """Where a training stands, for progress lines: ``cell 3/42``, ``tune trial 5``, or the stage
    (``harness train`` of a cell the spec does not list)."""
    if stage == TUNE and trial is not None:
        return f"tune trial {trial.number}"
    cells = spec.cells()
    return f"cell {cells.index(cell) + 1}/{len(cells)}" if cell in cells else stage


def _progress_note(spec: StudySpec, stage: str, trial: optuna.Trial | None, now: datetime | None = None) -> str:
    """How far the study is, for a cell's progress lines (the evaluate stage): ``study: 2 done,
    40 left, about 20m10s to go`` (:func:`study_progress`); else nothing."""
    if stage != EVALUATE or trial is None:
        return ""
    return f"study: {study_progress(trial.study, spec.cells(), now or datetime.now()).text()}"


def study_progress(study: optuna.Study, cells: list[Cell], now: datetime) -> StudyProgress:
    """The evaluate study's progress at ``now`` (Optuna's clock: naive local time): the cells
    with a completed trial and how long it took, and the start of every cell's running trial."""
    from harness.study.storage import trial_cell

    finished: dict[Cell, float] = {}
    running = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        c = trial_cell(t)
        if c is None or c not in cells or t.datetime_start is None:
            continue
        if t.state == TrialState.COMPLETE and t.datetime_complete is not None:
            finished[c] = (t.datetime_complete - t.datetime_start).total_seconds()
        elif t.state == TrialState.RUNNING:
            running.append(t.datetime_start)
    return StudyProgress(len(cells), list(finished.values()), running, now)


def variants_of(spec: StudySpec, encoding: type[PositionalEncoding]) -> list[Variant]:
    """The study's evaluation variants of one encoding: every regime x temperature, and every
    policy of the study the encoding has (one evaluation, ``NO_POLICY``, for an encoding with
    no choice of policy, like ``none`` or ``learned``)."""
    own = encoding.describe().policies
    policies = [p for p in spec.policies if p in own] if len(own) > 1 else []
    return [Variant(r, p, t) for r in spec.regimes for p in policies or [NO_POLICY] for t in spec.temperatures]
