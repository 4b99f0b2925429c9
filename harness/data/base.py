"""The dataset interface, the dataset registry, and the two ways to build a dataset by name.

A dataset is a subclass of :class:`ImageDataset` registered under a name with
``@register_dataset("name")``. It owns its options: a nested frozen dataclass ``Options``
subclassing :class:`DatasetOptions` (typed fields with defaults and bounds, and a
``validate`` method for rules that tie fields together), checked once, on construction. The
dataset is built from its options, one way only: ``cls(options)``.

- :func:`load_dataset` ``(name, options)``: what a study calls; one instance per process and
  (name, options), so the trials of a worker share the tensors.
- :func:`build_dataset` ``(name, **options)``: a fresh instance from keyword options, for
  tests and scripts.

The built-ins are the modules of ``harness.data`` (``rendered``, ``vision``); a plugin is one
file (:func:`harness.registry.load_plugin`) or a package declaring an entry point in the
group ``harness.datasets``.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from harness.config import Config, ConfigError, convert
from harness.errors import DataError, did_you_mean
from harness.registry import Registry

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetOptions",
    "DatasetOptionsError",
    "ImageDataset",
    "Split",
    "SplitName",
    "build_dataset",
    "integer",
    "load_dataset",
    "positive_integer",
    "register_dataset",
    "required_options",
]

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")


class DatasetOptionsError(ConfigError, DataError):
    """A dataset option that cannot work (a :class:`ConfigError` keyed ``dataset.<field>``,
    and a :class:`DataError`)."""


class DatasetOptions(Config):
    """Base of every dataset's ``Options`` (a frozen dataclass): errors name ``dataset.<field>``."""

    section: ClassVar[str] = "dataset"
    error: ClassVar[type[ConfigError]] = DatasetOptionsError


@dataclass
class Split:
    """One split at one resolution: whole tensors on one device."""

    images: torch.Tensor  # (N, C, R, R) float32, normalised
    labels: torch.Tensor  # (N,) int64, same device

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class ImageDataset:
    """A classification dataset with train, val and test splits at any square resolution.

    Subclasses define ``Options`` (a frozen dataclass subclassing :class:`DatasetOptions`),
    ``__init__(self, options)``, which sets ``num_classes``, ``in_chans`` and ``classes`` (the
    class names in label order), and ``_load(which, resolution, device)``. :meth:`split` checks
    its arguments and caches each (split, resolution, device) it returns, so asking again is
    free; :meth:`clear_cache` drops the cached tensors. ``example_options`` gives the
    conformance kit a small instance (writing any files it needs into a folder).
    ``distinct_splits``: no image appears in two splits (the kit checks it).
    """

    name: str  # the registered name (set by the registry); an instance may refine it
    Options: ClassVar[type[DatasetOptions]]
    num_classes: int
    in_chans: int = 3
    classes: list[str]
    distinct_splits: ClassVar[bool] = True

    def split(self, which: SplitName, resolution: int, device: str | torch.device = "cpu") -> Split:
        if which not in SPLITS:
            raise DataError(f"unknown split {which!r} of dataset {self.name!r}: expected one of {', '.join(SPLITS)}")
        resolution = positive_integer(resolution, "resolution")
        dev = torch.device(device)
        cache = self.__dict__.setdefault("_split_cache", {})
        key = (which, resolution, str(dev))
        if key not in cache:
            cache[key] = self._load(which, resolution, dev)
        return cache[key]

    def clear_cache(self) -> None:
        """Forget every cached split (they can be large at high resolutions)."""
        self.__dict__.pop("_split_cache", None)

    def _load(self, which: SplitName, resolution: int, device: torch.device) -> Split:
        raise NotImplementedError

    @classmethod
    def example_options(cls, folder: Path) -> dict[str, Any]:
        """Options of a small instance for the conformance kit; write any files it needs
        under ``folder`` (an empty folder). Default: no options (the defaults are small)."""
        return {}


DATASETS: Registry[type[ImageDataset]] = Registry(
    "dataset", base=ImageDataset, builtins="harness.data", group="harness.datasets",
    exclude={"base", "conformance"},
)
register_dataset = DATASETS.register


# ------------------------------------------------------------------------------ building
def build_dataset(name: str, /, **options: Any) -> ImageDataset:
    """A fresh dataset ``name`` from keyword ``options`` (its ``Options`` fields)."""
    if not isinstance(name, str) or name not in DATASETS:
        known = sorted(DATASETS.names(), key=lambda n: (DATASETS.source(n) != "built-in", n))  # built-ins first
        raise DataError(f"unknown dataset {name!r}: known datasets are {', '.join(known)}{did_you_mean(name, known)}")
    cls = DATASETS.get(name)
    takes = [f.name for f in dataclasses.fields(cls.Options) if f.init]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise DataError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for dataset {name!r}: it takes {', '.join(takes)}{did_you_mean(unknown[0], takes)}"
        )
    missing = [k for k in required_options(cls.Options) if k not in options]
    if missing:
        raise DataError(f"dataset {name!r} needs option{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return cls(convert(cls.Options, options, DatasetOptions.section, DatasetOptionsError))


def required_options(options_cls: type[DatasetOptions]) -> list[str]:
    """The fields of a dataset's ``Options`` that have no default."""
    return [f.name for f in dataclasses.fields(options_cls)  # type: ignore[arg-type]
            if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


_LOADED: dict[tuple[str, DatasetOptions], ImageDataset] = {}


def load_dataset(name: str, options: DatasetOptions) -> ImageDataset:
    """Dataset ``name`` built from ``options`` (an instance of its ``Options``), once per
    process and (name, options)."""
    cls = DATASETS.get(name)
    if not isinstance(options, cls.Options):
        raise DataError(f"dataset {name!r} takes {cls.Options.__qualname__}, got {type(options).__qualname__}")
    key = (name, options)
    if key not in _LOADED:
        _LOADED[key] = cls(options)
    return _LOADED[key]


# ------------------------------------------------------------------------------ argument checks
def integer(value: object, what: str) -> int:
    """``value`` as an int (bools refused), or a :class:`DataError` naming ``what``."""
    if isinstance(value, bool):
        raise DataError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"{what} must be an integer, got {value!r}") from None


def positive_integer(value: object, what: str) -> int:
    """``value`` as an int > 0, or a :class:`DataError` naming ``what``."""
    number = integer(value, what)
    if number <= 0:
        raise DataError(f"{what} must be a positive integer, got {number}")
    return number
