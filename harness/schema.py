"""What a study tracks, in one place: the cell type and every MLflow key, parameter and tag.

The study writes through these names and the report reads through them; nothing else
builds or parses a key. A study's cells come from its spec through :func:`cells`.

- a :class:`Cell` is one (encoding label, train resolution, seed) of the evaluate stage;
  ``cell.key`` (``rope_axial|r32|s0``) names its Optuna trial, ``cell.tag``
  (``rope_axial_r32_s0``) its MLflow run and checkpoint;
- per-epoch metrics: :data:`TRAIN_LOSS`, :data:`VAL_ACC`, :data:`VAL_LOSS`, :data:`LR`;
- at the end: :func:`acc_at` / :func:`loss_at` per test resolution (parsed back by
  :func:`parse_test_metric`), the accuracy on each half of the test images (:data:`HALF_KINDS`,
  for choosing on one half and scoring on the other), :data:`PARAM_COUNT`, :data:`IMAGES_PER_S`,
  :data:`RESUMED_FROM`, and per variant the series :func:`acc_vs_res` (step = the square test
  size in px);
- a stage's parent run: the summary metrics ``STAGE_*`` and the report under :data:`REPORT_ARTIFACTS`;
- run parameters :data:`P_ENCODING`, :data:`P_TRAIN_RESOLUTION`, :data:`P_SEED`, and the
  resolved config flattened under :data:`P_CONFIG`;
- tags under ``harness.`` (:data:`T_STUDY`, :data:`T_STAGE`, ...).

Torch-free and MLflow-free: plain strings and dataclasses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Cell",
    "HALF_KINDS",
    "Size",
    "Variant",
    "eval_metric",
    "acc_at",
    "acc_vs_res",
    "loss_at",
    "EVALUATE",
    "TRAIN",
    "TUNE",
    "cells",
    "encoding_options",
    "params_under",
    "parse_test_metric",
    "parse_time_metric",
    "time_metric",
    "tuned_values",
]

# ------------------------------------------------------------------------------ stages
EVALUATE = "evaluate"
TUNE = "tune"
TRAIN = "train"

# ------------------------------------------------------------------------------ metrics
TRAIN_LOSS = "train/loss"
VAL_ACC = "val/acc"
VAL_LOSS = "val/loss"
LR = "lr"
PARAM_COUNT = "params/count"  # a metric, and since issue #13 also a run parameter (P_PARAM_COUNT)
IMAGES_PER_S = "train/images_per_s"
RESUMED_FROM = "train/resumed_from_epoch"

#: the chance accuracy of the run's dataset (1 / number of classes), logged once per run
CHANCE = "data/chance"
#: the number of validation images the run's accuracy per epoch (:data:`VAL_ACC`) was measured on,
#: logged once per run: the report's learning-curve check weighs a rise against its binomial noise
VAL_IMAGES = "data/val_images"

#: a run's wall time by phase (:mod:`harness.training.stopwatch`), in seconds: ``time/<phase>_s``
TIME_PREFIX = "time/"


def time_metric(phase: str) -> str:
    """The metric of a run's seconds in ``phase`` (``time/train_steps_s``)."""
    return f"{TIME_PREFIX}{phase}_s"


def parse_time_metric(key: str) -> str | None:
    """The phase of a :func:`time_metric` key, or None for any other key."""
    if key.startswith(TIME_PREFIX) and key.endswith("_s"):
        return key[len(TIME_PREFIX):-2] or None
    return None

#: policies and temperatures of an evaluation variant that does not apply
NO_POLICY = "na"  # an encoding without a new-grid policy option (none, learned): evaluated once
NO_TEMPERATURE = "none"


@dataclass(frozen=True, order=True)
class Size:
    """A test image size, ``rows`` x ``cols`` pixels; written ``32`` when square, else ``32x64``."""

    rows: int
    cols: int

    @property
    def label(self) -> str:
        return str(self.rows) if self.rows == self.cols else f"{self.rows}x{self.cols}"

    @property
    def square(self) -> bool:
        return self.rows == self.cols

    @classmethod
    def parse(cls, value: "int | str | Size") -> "Size":
        """``32`` / ``"32"`` (square) or ``"32x64"`` (rows x cols)."""
        if isinstance(value, Size):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value, value)
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", str(value))
        if m is None:
            raise ValueError(f"not an image size: {value!r} (expected an integer or ROWSxCOLS, e.g. 32x64)")
        rows = int(m.group(1))
        return cls(rows, int(m.group(2)) if m.group(2) else rows)

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True, order=True)
class Variant:
    """How a trained model is evaluated off its training grid: the regime of the resolution
    change (``zoom``: the same scene at more pixels; ``canvas``: the training pixel scale on a
    larger image), the encoding's new-grid policy (:data:`NO_POLICY` when it has none) and
    the attention temperature (``none`` or ``log``)."""

    regime: str = "zoom"
    policy: str = NO_POLICY
    temperature: str = NO_TEMPERATURE

    @property
    def label(self) -> str:
        return f"{self.regime}/{self.policy}/{self.temperature}"


#: the accuracy on half A and on half B of the test images (``harness.training.evaluation.split_in_halves``: a
#: fixed, seeded, class-stratified split, the same in every run), measured on the same logits as
#: ``acc``: the report chooses a variant on one half and scores it on the other (cross-fitting)
HALF_KINDS = ("acc_a", "acc_b")

_TEST = re.compile(r"^test/(acc|loss|acc_a|acc_b)/(?:([a-z0-9_]+)/([a-z0-9_]+)/([a-z0-9_]+)/)?r(\d+(?:x\d+)?)$")


def eval_metric(kind: str, variant: Variant, size: "Size | int | str") -> str:
    """The metric key of a test accuracy (``kind="acc"``), loss (``"loss"``) or half accuracy
    (:data:`HALF_KINDS`) under ``variant`` at ``size``: ``test/<kind>/<regime>/<policy>/<temperature>/r<size>``,
    e.g. ``test/acc/canvas/extrapolate/log/r32x64``, ``test/acc_a/zoom/interpolate/none/r48``."""
    return f"test/{kind}/{variant.label}/r{Size.parse(size).label}"


def acc_at(resolution: "int | str | Size", variant: Variant = Variant()) -> str:
    """The metric key of the test accuracy at ``resolution`` under ``variant``."""
    return eval_metric("acc", variant, resolution)


def loss_at(resolution: "int | str | Size", variant: Variant = Variant()) -> str:
    """The metric key of the test loss at ``resolution`` under ``variant``."""
    return eval_metric("loss", variant, resolution)


def acc_vs_res(variant: Variant) -> str:
    """The metric key of the series "test accuracy against test resolution" under ``variant``:
    ``test_acc_vs_res/<regime>/<policy>/<temperature>``, logged once per square test size with
    step = the size in px, so that MLflow draws one curve per run. It is a plotting aid: the
    report reads :func:`eval_metric` keys, and this key is not a ``test/...`` key (it never
    parses as one)."""
    return f"test_acc_vs_res/{variant.label}"


# ------------------------------------------------------------------------------ a stage's parent run
#: summary metrics of a stage, logged on its parent run when ``harness run`` closes it
STAGE_CELLS = "stage/cells"  # evaluate: the study's cells
STAGE_CELLS_DONE = "stage/cells_done"  # ... with a completed trial
STAGE_CELLS_FAILED = "stage/cells_failed"  # ... failed more than max_retries times, never completed
STAGE_TRIALS_COMPLETE = "stage/trials_complete"  # tune: over every (encoding, train resolution)
STAGE_TRIALS_PRUNED = "stage/trials_pruned"
STAGE_TRIALS_FAILED = "stage/trials_failed"
#: evaluate: the wall time of the `harness run` that closed it last, and its worker processes
STAGE_WALL_S = "stage/wall_s"
STAGE_WORKERS = "stage/workers"
#: the artifact folder of the evaluate parent run holding the report (report.html, .md, CSVs, PNGs)
REPORT_ARTIFACTS = "report"
#: the files of a report folder that go to the parent run
REPORT_SUFFIXES = (".html", ".md", ".csv", ".png")


def parse_test_metric(key: str) -> tuple[str, Variant, Size] | None:
    """``(kind, variant, size)`` of a test metric key (kind ``"acc"``, ``"loss"`` or one of
    :data:`HALF_KINDS`), or None for any other key.
    Keys written before variants existed (``test/acc/r32``) read as the zoom regime under the
    encoding's own default policy (``policy="default"``)."""
    m = _TEST.match(key)
    if not m:
        return None
    variant = Variant(*m.group(2, 3, 4)) if m.group(2) else Variant("zoom", "default", NO_TEMPERATURE)
    return m.group(1), variant, Size.parse(m.group(5))


# ------------------------------------------------------------------------------ params and tags
P_ENCODING = "encoding"
P_TRAIN_RESOLUTION = "train_resolution"
P_SEED = "seed"
P_CONFIG = "config"
#: the policy an encoding uses when nobody chooses one, in the vocabulary of the run's variants
#: (:data:`NO_POLICY` for an encoding without the choice): what a user gets by default
P_DEFAULT_POLICY = "default_policy"
#: the model's trainable parameter count as a run parameter (the metric PARAM_COUNT is kept for old readers)
P_PARAM_COUNT = "params/count"
#: the flattened parameter holding an encoding entry's options (``config.encoding.options.<name>``)
P_ENCODING_OPTIONS = "config.encoding.options"
#: the flattened parameters holding the tune stage's search space (``config.tune.space.<key>.<field>``)
P_TUNE_SPACE = "config.tune.space"
#: the flattened parameters holding the training recipe (``config.train.<field>``)
P_TRAIN = "config.train"

T_STUDY = "harness.study"
T_STAGE = "harness.stage"
T_PARENT = "harness.parent"
T_CELL = "harness.cell"
T_WORKER = "harness.worker"
T_SPEC_DIGEST = "harness.spec_digest"
T_GIT_COMMIT = "harness.git_commit"
T_VERSIONS = "harness.versions"
T_DEVICE = "harness.device"
T_RETRY_OF = "harness.retry_of"
T_FAIL_REASON = "harness.fail_reason"
T_PRUNED_AT = "harness.pruned_at_epoch"
#: tags of a study's parent runs: the id of the Optuna storage its runs come from, and its URL (redacted)
T_STORAGE_ID = "harness.storage_id"
T_STORAGE = "harness.storage"
T_TRIAL_NUMBER = "optuna.trial_number"
T_PARENT_RUN = "mlflow.parentRunId"
#: a run's description in MLflow's UI (Markdown): the evaluate parent's holds the report's headline
T_NOTE = "mlflow.note.content"
#: the experiment tag from which MLflow 3's UI chooses an experiment's first page, and the value
#: its UI writes when a user picks "custom model development" by hand: the runs table, where the
#: GenAI kind (the UI's guess for an untagged experiment) opens on traces the harness never logs
X_KIND = "mlflow.experimentKind"
X_KIND_TRAINING = "custom_model_development"

# ------------------------------------------------------------------------------ Optuna user attributes
U_MLFLOW_RUN = "mlflow_run_id"  # a trial's MLflow run
U_SPURIOUS = "harness.spurious"  # a trial that popped no cell of its own (it never trains)
U_RUN_CLOSED = "harness.run_closed"  # the trial's MLflow run was closed by its own worker
U_WORKER = "harness.worker"  # host:pid of the worker running the trial
U_RETRY_OF = "harness.retry_of_trial"  # the failed trial a retry follows
U_SPEC_DIGEST = "harness.spec_digest"  # a stage study's pinned spec hash ...
U_SPEC = "harness.spec"  # ... and the resolved spec it was pinned with
U_ENCODING_NAME = "encoding_name"  # an evaluate trial's encoding (registry name) ...
U_ENCODING_OPTIONS = "encoding_options"  # ... and its options, as sorted JSON

# ------------------------------------------------------------------------------ Optuna parameters and objectives
#: an evaluate trial's parameters: the queue's key (``Cell.key``) and the cell's real parameters
O_CELL = "cell"
#: the objective names the dashboards show (``Study.set_metric_names``)
OBJECTIVE_EVALUATE = "test_acc_at_train_res"
OBJECTIVE_TUNE = "val_acc"

def params_under(params: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The run parameters below ``prefix`` (``config.train``), keyed by the rest of their name."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in params.items() if k.startswith(head)}


def encoding_options(params: Mapping[str, str]) -> str:
    """The options of a run's encoding entry, as sorted JSON."""
    opts = params_under(params, P_ENCODING_OPTIONS)
    if not opts and params.get(P_ENCODING_OPTIONS, "{}") not in ("{}", ""):
        return params[P_ENCODING_OPTIONS]  # an empty mapping is logged whole
    return json.dumps(opts, sort_keys=True)


def tuned_values(params: Mapping[str, str]) -> dict[str, float | None]:
    """The tune stage's search-space keys (``train.lr``) and the values a run trained with."""
    keys = {k.rsplit(".", 1)[0] for k in params_under(params, P_TUNE_SPACE)}
    return {k: None if params.get(f"{P_CONFIG}.{k}") is None else float(params[f"{P_CONFIG}.{k}"])
            for k in sorted(keys)}


#: the artifact every child run carries: the resolved spec it ran with
SPEC_ARTIFACT = "spec.resolved.json"

#: a trained cell's kept model (evaluate and train stages, :mod:`harness.study.kept`): the MLflow logged
#: model of that name (``runs:/<run_id>/model``), in the PyTorch flavour: the exported graph
#: (``data/model.pt2``) and what rebuilds the model (``model.json``: the model config, the
#: encoding's name and options, the training resolution). Runs written before it kept the run
#: artifacts ``model/weights.pt`` (a ``state_dict``) and ``model/model.json``; both are read
MODEL_ARTIFACTS = "model"
MODEL_PT2 = "data/model.pt2"
MODEL_WEIGHTS = "weights.pt"
MODEL_META = "model.json"
#: tag of a run that ``harness evaluate`` added metrics to: the time and how many metrics
T_EVALUATED = "harness.evaluated"
#: tag of a run whose kept model is in the previous format (``model/weights.pt``), and why:
#: ``torch.export`` could not trace the model (a plugin's data-dependent Python)
T_KEPT_AS = "harness.kept_as"


# ------------------------------------------------------------------------------ cells
@dataclass(frozen=True, order=True)
class Cell:
    """One (encoding label, train resolution, seed) of a study's evaluate stage."""

    encoding: str
    train_resolution: int
    seed: int

    @property
    def key(self) -> str:
        """The cell's id in Optuna: ``label|r32|s0``."""
        return f"{self.encoding}|r{self.train_resolution}|s{self.seed}"

    @property
    def tag(self) -> str:
        """The cell's id in MLflow run names and checkpoint files: ``label_r32_s0``."""
        return f"{self.encoding}_r{self.train_resolution}_s{self.seed}"

    @classmethod
    def parse(cls, text: str) -> "Cell":
        """The cell of a ``key`` or a ``tag``."""
        m = re.fullmatch(r"(.+)[|_]r(\d+)[|_]s(-?\d+)", text)
        if m is None:
            raise ValueError(f"not a cell key or tag: {text!r}")
        return cls(m.group(1), int(m.group(2)), int(m.group(3)))

    def params(self) -> dict[str, Any]:
        """The run parameters (and Optuna user attributes) that identify the cell."""
        return {P_ENCODING: self.encoding, P_TRAIN_RESOLUTION: self.train_resolution, P_SEED: self.seed}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Cell":
        """The cell of a run's parameters (or a trial's user attributes)."""
        return cls(str(params[P_ENCODING]), int(params[P_TRAIN_RESOLUTION]), int(params[P_SEED]))


def cells(spec: Mapping[str, Any]) -> list[Cell]:
    """Every cell of a study, from its resolved spec (the mapping a study logs): encodings
    (by label) x train resolutions x seeds, in that order."""
    labels = [(e.get("label") or e["name"]) if isinstance(e, Mapping) else str(e) for e in spec["encodings"]]
    return [Cell(label, int(r), int(s)) for label in labels for r in _ints(spec["train_resolutions"])
            for s in _ints(spec["seeds"])]


def _ints(values: Iterable[Any]) -> list[int]:
    return [int(v) for v in values]
