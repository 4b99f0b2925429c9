"""The typed configuration tree, and the one converter that validates it.

Every section of a study is a frozen dataclass (:class:`Config`): the model
(:class:`ViTConfig`), the training recipe (:class:`TrainConfig`), the tune stage
(:class:`TuneConfig`), each dataset's and each encoding's ``Options``. A field's type
annotation says what it accepts (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
unions, nested configs, ``tuple[X, ...]``), its metadata (:func:`option`) the bounds, and a
``validate`` method the rules that tie fields together. One function checks all of it
(:func:`check`, run on construction) and one converts a plain mapping from YAML or the
command line into a config (:func:`convert`), naming the dotted key of any error and the
nearest valid key of an unknown one.

Torch-free: the modules that hold configuration import neither torch nor mlflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from harness.errors import did_you_mean
from harness.schema import Cell, Size, cells
from harness.config_base import Config, ConfigError, Invalid, check, convert, option, type_ok

__all__ = [
    "AnalysisConfig",
    "AnalysisEndpoint",
    "Config",
    "ConfigError",
    "DatasetSpec",
    "EncodingSpec",
    "EVALUATION_ONLY",
    "OPERATIONAL",
    "Invalid",
    "ModelConfigError",
    "ModelDims",
    "StudySpec",
    "TrainConfig",
    "TrainConfigError",
    "TuneConfig",
    "ViTConfig",
    "check",
    "convert",
    "option",
    "parse_comparison",
    "type_ok",
]

# ------------------------------------------------------------------------------ the model
class ModelConfigError(ConfigError):
    """Model dimensions that cannot work, or an input the patch stem cannot take."""


@dataclass(frozen=True)
class ModelDims:
    """The model dimensions an encoding is built for."""

    dim: int
    depth: int
    heads: int
    train_rows: int
    train_cols: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def as_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "head_dim": self.head_dim}


@dataclass(frozen=True)
class ViTConfig(Config):
    """Model sizes. ``image_size`` is the training resolution: it fixes the training grid."""

    section: ClassVar[str] = "model"
    error: ClassVar[type[ConfigError]] = ModelConfigError
    #: fields a study sets per trial (from its training resolution and dataset), never its spec
    PER_TRIAL: ClassVar[tuple[str, ...]] = ("image_size", "in_chans", "num_classes")

    image_size: int = option(32, gt=0)
    in_chans: int = option(3, gt=0)
    num_classes: int = option(10, gt=0)
    dim: int = option(192, gt=0)
    depth: int = option(6, gt=0)
    heads: int = option(3, gt=0)
    mlp_ratio: float = option(4.0, gt=0)
    patch_kernel: int = option(4, gt=0)
    patch_stride: int = option(4, gt=0)
    pool: Literal["cls", "mean"] = "cls"
    qkv_bias: bool = True

    def validate(self) -> None:
        if self.dim % self.heads:
            raise Invalid("dim", f"must be divisible by model.heads {self.heads}")
        if self.patch_stride > self.patch_kernel:
            raise Invalid("patch_stride", f"must be <= model.patch_kernel {self.patch_kernel} "
                                          "(a larger stride would skip pixels)")
        if self.image_size < self.patch_kernel:
            raise Invalid("image_size", f"must be >= the patch kernel {self.patch_kernel}")

    def grid_size(self, size: int, what: str = "input size") -> int:
        """Patches along one side of an image side of ``size`` pixels."""
        if size < self.patch_kernel:
            raise ModelConfigError(f"{what} {size} is smaller than the patch kernel {self.patch_kernel}")
        return (size - self.patch_kernel) // self.patch_stride + 1

    def tiles_exactly(self, size: int) -> bool:
        """Whether the stem covers every pixel of a side of ``size`` (no pixels dropped)."""
        return size >= self.patch_kernel and (size - self.patch_kernel) % self.patch_stride == 0

    def tiling_hint(self, size: int) -> str:
        """Why ``size`` does not tile, and the nearest sizes that do."""
        k, s = self.patch_kernel, self.patch_stride
        lo = k + max(0, (size - k) // s) * s
        return f"the patch stem (kernel {k}, stride {s}) cannot tile {size} pixels; " \
               f"expected kernel + n*stride, e.g. {lo} or {lo + s}"

    @property
    def dims(self) -> ModelDims:
        g = self.grid_size(self.image_size)
        return ModelDims(dim=self.dim, depth=self.depth, heads=self.heads, train_rows=g, train_cols=g)


# ------------------------------------------------------------------------------ the recipe
class TrainConfigError(ConfigError):
    """A training recipe that cannot work, an unavailable device, or a checkpoint that does not fit."""


@dataclass(frozen=True)
class TrainConfig(Config):
    """The training recipe (the ``train:`` section of a study spec)."""

    section: ClassVar[str] = "train"
    error: ClassVar[type[ConfigError]] = TrainConfigError
    #: fields that do not change the numbers a run produces: a checkpoint may be resumed with other values
    RUNTIME_ONLY: ClassVar[tuple[str, ...]] = ("device", "eval_batch_size", "compile", "threads")

    epochs: int = option(10, ge=1)
    batch_size: int = option(128, ge=1)
    lr: float = option(1e-3, gt=0)  # peak learning rate, reached at the end of the warm-up
    min_lr: float = option(1e-5, ge=0)  # the cosine decay ends here, at the last step
    weight_decay: float = option(0.05, ge=0)  # AdamW; not applied to model.no_weight_decay()
    warmup_epochs: float = option(1.0, ge=0)  # linear warm-up, in epochs (may be fractional); then cosine
    label_smoothing: float = option(0.1, ge=0, lt=1)
    grad_clip: float = option(1.0, ge=0)  # max global gradient norm; 0 disables clipping
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: int = option(512, ge=1)
    augment: Literal["none", "flip_crop"] = "none"  # "none" for position-labelled tasks: a flip changes their labels
    compile: bool = False  # torch.compile the model for the training steps
    threads: int = option(0, ge=0)  # torch.set_num_threads when > 0

    def validate(self) -> None:
        if self.min_lr > self.lr:
            raise Invalid("min_lr", f"must be between 0 and train.lr ({self.lr})")
        if self.warmup_epochs > self.epochs:
            raise Invalid("warmup_epochs", f"must be between 0 and train.epochs ({self.epochs})")


# ------------------------------------------------------------------------------ the tune stage
@dataclass(frozen=True)
class TuneConfig(Config):
    """The optional tune stage: the same budget of trials for every (encoding, train resolution)."""

    section: ClassVar[str] = "tune"

    trials: int = option(8, gt=0)  # per (encoding, train resolution)
    epochs: int = option(0, ge=0)  # epochs per tuning trial (0: the training recipe's)
    pruner: Literal["median", "none"] = "median"
    seed: int = option(0, ge=0, lt=2**32)  # the TPE sampler's (numpy takes 32 bits)
    space: dict = dataclasses.field(default_factory=dict)  # "train.lr": {low, high, log} | {choices: [...]}

    def validate(self) -> None:
        if not self.space:
            raise Invalid("space", "expected at least one parameter to tune, "
                                   "e.g. train.lr: {low: 1e-4, high: 3e-3, log: true}")
        train_fields = [f.name for f in dataclasses.fields(TrainConfig)]
        for key, dist in self.space.items():
            section, _, name = str(key).partition(".")
            if section != "train" or name not in train_fields:
                raise Invalid("space", f"{key}: expected a train.* key "
                                       f"(one of {', '.join('train.' + f for f in train_fields)})")
            if not isinstance(dist, Mapping) or not (set(dist) in ({"low", "high"}, {"low", "high", "log"})
                                                     or set(dist) == {"choices"}):
                raise Invalid("space", f"{key}: expected {{low, high[, log]}} or {{choices: [...]}}")
            if "choices" in dist:
                choices = dist["choices"]
                if not isinstance(choices, list) or not choices:
                    raise Invalid("space", f"{key}: expected a non-empty list of choices")
                if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
                    raise Invalid("space", f"{key}: expected choices that are numbers, strings, booleans or null")
                continue
            low, high = dist["low"], dist["high"]
            if not all(type_ok(v, float)[0] for v in (low, high)) or not low < high:
                raise Invalid("space", f"{key}: expected finite numbers with low < high")
            if not isinstance(dist.get("log", False), bool):
                raise Invalid("space", f"{key}: expected log: true or false")
            if dist.get("log") and low <= 0:
                raise Invalid("space", f"{key}: a log range needs low > 0")


# ------------------------------------------------------------------------------ the primary analysis
_SIDES = Literal["above", "below"]
_VS = re.compile(r"^\s*(\S+)\s+vs\s+(\S+)\s*$")


def parse_comparison(text: str) -> tuple[str, str]:
    """``"rope_mixed vs learned"`` -> ``("rope_mixed", "learned")``; ValueError otherwise."""
    m = _VS.match(str(text))
    if m is None:
        raise ValueError(f"expected 'A vs B' (two encoding labels), got {text!r}")
    return m.group(1), m.group(2)


@dataclass(frozen=True)
class AnalysisEndpoint(Config):
    """The primary endpoint: each seed's mean test accuracy (of each encoding's selected variant)
    over the test sizes on one side of the training size, per regime."""

    section: ClassVar[str] = "analysis.endpoint"

    sides: tuple[_SIDES, ...] = ("above", "below")
    regimes: tuple[str, ...] = ()  # empty: every regime of the study

    def validate(self) -> None:
        if not self.sides:
            raise Invalid("sides", "expected at least one side, above or below")
        for key in ("sides", "regimes"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise Invalid(key, "expected each value once")


@dataclass(frozen=True)
class AnalysisConfig(Config):
    """The study's declared question (the ``analysis:`` section), fixed before it runs: the
    endpoint and the primary comparisons (``A vs B``, encoding labels). The report's
    multiple-testing family is these comparisons at each regime and side of the endpoint;
    every other test is exploratory. ``alpha``: the level of the tests; ``power`` and
    ``max_seeds``: the seeds-needed line (the seeds a two-sided paired t-test needs for this
    power at the observed effect, or "more than max_seeds")."""

    section: ClassVar[str] = "analysis"

    endpoint: AnalysisEndpoint = dataclasses.field(default_factory=AnalysisEndpoint)
    primary: tuple[str, ...] = ()
    alpha: float = option(0.05, gt=0, lt=1)
    power: float = option(0.8, gt=0, lt=1)
    max_seeds: int = option(30, ge=2, le=1000)

    def validate(self) -> None:
        if not self.primary:  # each item's form and labels: the spec checks them (harness.spec), naming the item
            raise Invalid("primary", "expected at least one comparison 'A vs B' (encoding labels), "
                                     "e.g. [rope_mixed vs learned]")

    def comparisons(self) -> list[tuple[str, str]]:
        """The primary comparisons as (A, B) label pairs."""
        return [parse_comparison(c) for c in self.primary]


# ------------------------------------------------------------------------------ the study
#: keys that say where and how a study runs, not what it computes (outside its content hash)
OPERATIONAL = ("storage", "tracking_uri", "output", "heartbeat", "max_retries", "workers")
#: keys that say how trained models are evaluated and reported, not how they are trained: also
#: outside the content hash, so ``harness evaluate`` (and ``run``) can add test sizes and variants
#: to a finished study, and a declared analysis can be added to one. Everything else (data,
#: model, recipe, encodings, seeds) pins the study.
EVALUATION_ONLY = ("test_resolutions", "canvas_resolutions", "policies", "temperatures", "regimes", "baseline",
                   "analysis")
#: evaluation keys newer than the legacy hash (issue #13): left out of it too, so a study pinned
#: before then is still recognised
_NEWER_THAN_LEGACY = ("analysis",)


@dataclass(frozen=True)
class DatasetSpec:
    """The study's dataset: a registered name and that dataset's own ``Options``."""

    name: str
    options: Any  # the dataset class's Options (a Config)


@dataclass(frozen=True)
class EncodingSpec:
    """One encoding entry of a study: the registered name, its options, and its label (its id
    in the study; default the name)."""

    name: str
    options: dict = dataclasses.field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class StudySpec:
    """A resolved, validated study (``harness.spec.load_spec`` builds it from YAML)."""

    name: str
    dataset: DatasetSpec
    model: ViTConfig  # at the first training resolution; ``model_config`` gives each trial's
    train: TrainConfig
    encodings: tuple[EncodingSpec, ...]
    train_resolutions: tuple[int, ...]
    test_resolutions: tuple[Size, ...]  # square (32) or rows x cols (32x64)
    seeds: tuple[int, ...]
    tune: TuneConfig | None = None
    # the evaluation variants, applied to the same trained weights (harness.variants)
    policies: tuple[str, ...] = ("extrapolate", "interpolate")  # new-grid policies of encodings that have one
    temperatures: tuple[str, ...] = ("none",)  # attention temperature rules
    regimes: tuple[str, ...] = ("zoom",)  # how the test images change with the size (the dataset's regimes)
    canvas_resolutions: tuple[Size, ...] = ()  # the canvas regime's sizes (default: the test sizes >= training)
    storage: str | None = None  # Optuna storage URL (default: sqlite file under output/<name>/)
    tracking_uri: str | None = None  # MLflow tracking URI (default: sqlite file under output/<name>/)
    output: str = "runs"
    plugins: tuple[str, ...] = ()
    baseline: str | None = None  # the encoding reports compare against (default: learned if present)
    analysis: AnalysisConfig | None = None  # the declared primary analysis (the report's family of tests)
    analysis_dropped: tuple[str, ...] = ()  # its comparisons of encodings an override left out (warned)
    heartbeat: int = 30  # seconds between a running trial's heartbeats; silent for 3 intervals = dead worker
    max_retries: int = 2  # times a failed cell is tried again
    workers: int | str = 1  # worker processes `harness run` starts (--workers overrides), each with cores/workers threads; "auto": harness.devices
    source: str = ""  # the spec file
    resolved: dict = dataclasses.field(default_factory=dict, repr=False)  # the resolved mapping, as logged

    @property
    def run_dir(self) -> Path:
        """The study's folder, ``output/<name>``."""
        return self.path_under()

    def path_under(self, *parts: str) -> Path:
        """``output/<name>/<parts...>``: every path the harness writes for the study is built
        here, and must stay under ``output`` (a study name or encoding label is one path
        component; the spec checks them, and this checks the result)."""
        out = Path(self.output)
        path = out.joinpath(self.name, *parts)
        root, full = os.path.abspath(out), os.path.abspath(path)
        if not self.name or any(not p or p in (".", "..") or "/" in p or "\\" in p or "\0" in p
                                for p in (self.name, *parts)) \
                or os.path.commonpath([root, full]) != root or full == root:
            raise ConfigError(f"{self.source or 'spec'}: the path {path} would leave the output folder "
                              f"{out} (study {self.name!r})")
        return path

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.run_dir / 'optuna.db').resolve()}"

    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}"

    def digest(self, *, legacy: bool = False) -> str:
        """Content hash of what the study trains: locations (``OPERATIONAL``) and evaluation
        keys (``EVALUATION_ONLY``) excluded. ``legacy``: the hash studies created before issue #13
        were pinned with (evaluation keys included), recognised so that they can be re-pinned."""
        skip = OPERATIONAL + _NEWER_THAN_LEGACY if legacy else OPERATIONAL + EVALUATION_ONLY
        keep = {k: v for k, v in self.resolved.items() if k not in skip}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def differs_in(self, other_resolved: Mapping[str, Any]) -> list[str]:
        """The keys of what is trained in which ``other_resolved`` differs from this spec."""
        return [k for k in sorted(set(other_resolved) | set(self.resolved))
                if k not in OPERATIONAL + EVALUATION_ONLY and other_resolved.get(k) != self.resolved.get(k)]

    def model_config(self, train_resolution: int, in_chans: int, num_classes: int) -> ViTConfig:
        """The model of one trial: trained at ``train_resolution`` on the study's data."""
        return dataclasses.replace(self.model, image_size=train_resolution, in_chans=in_chans,
                                   num_classes=num_classes)

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The training recipe, with tuned ``overrides``."""
        return dataclasses.replace(self.train, **overrides)

    def sizes(self, regime: str) -> tuple[Size, ...]:
        """The test sizes of a regime: a canvas only grows the field of view."""
        return self.canvas_resolutions if regime == "canvas" else self.test_resolutions

    def cells(self) -> list[Cell]:
        """Every cell of the evaluate stage (encoding label x train resolution x seed)."""
        return cells(self.resolved)

    def encoding(self, label: str) -> EncodingSpec:
        for e in self.encodings:
            if e.label == label:
                return e
        labels = [e.label for e in self.encodings]
        raise ConfigError(f"{self.source or 'spec'}: the study has no encoding labelled {label!r}"
                          f"{did_you_mean(label, labels)} (labels: {', '.join(labels)})")
