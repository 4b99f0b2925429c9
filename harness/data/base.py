"""The dataset interface, the dataset registry, and the two ways to build a dataset by name.

A split is asked for at an image size (``32``, or rows x cols: ``Size(32, 64)``, ``(32, 64)``,
``"32x64"``) in a regime of resolution change (:data:`REGIMES`):

- ``zoom`` (every dataset): the training frame at ``size`` pixels. The frame (the unit square
  of a rendered scene, or the photo) is stretched to rows x cols, so at rows != cols the
  pixel scale differs per axis.
- ``canvas`` (datasets that declare it in ``regimes``): the training pixel scale on a larger
  image. The image at the training size (``train_size``) sits in a canvas of ``size`` pixels,
  at least ``train_size`` along each axis; what lies around it is the dataset's to define (the
  rendered scenes extend their background). A canvas of the training size is the training
  image.

:func:`check_regime` refuses an unknown regime, one the dataset does not declare, or a
canvas smaller than the training images, with a :class:`DataError`; :meth:`ImageDataset.split`
calls it, and a spec can call it before anything is built.

A dataset is a subclass of :class:`ImageDataset` registered under a name with
``@register_dataset("name")``. It owns its options: a nested frozen dataclass ``Options``
subclassing :class:`DatasetOptions` (typed fields with defaults and bounds, and a
``validate`` method for rules that tie fields together), checked once, on construction. The
dataset is built from its options, one way only: ``cls(options)``.

- :func:`load_dataset` ``(name, options, cache)``: what a study calls; one instance per process
  and (name, options, cache folder), so the trials of a worker share the tensors. With a
  ``cache`` folder (a study's ``output/<name>/cache``) the splits are also kept on disk
  (:mod:`harness.data.cache`), so the processes of a study, and later commands, render or
  resize each split once.
- :func:`build_dataset` ``(name, **options)``: a fresh instance from keyword options, for
  tests and scripts; its splits are kept in memory only, unless :meth:`ImageDataset.keep_splits_in`
  names a folder.

The built-ins are the modules of ``harness.data`` that register datasets (``embedded``,
``vision``). Their classes and options import no torch, so a spec is checked without it; the
pixels (``rendered``, ``shapes``, torchvision) are imported when a dataset is built. A plugin
is one file (:func:`harness.registry.load_plugin`) or a package declaring an entry point in
the group ``harness.datasets``.
"""

from __future__ import annotations

import dataclasses
import operator
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from harness.config import Config, ConfigError, convert
from harness.data.split import Split
from harness.errors import DataError, did_you_mean
from harness.registry import Registry
from harness.schema import Size

if TYPE_CHECKING:  # torch is imported when a split is made, never to check a dataset's options
    import torch

__all__ = [
    "DATASETS",
    "REGIMES",
    "SPLITS",
    "DatasetOptions",
    "DatasetOptionsError",
    "ImageDataset",
    "Split",
    "SplitName",
    "build_dataset",
    "check_regime",
    "image_size",
    "integer",
    "load_dataset",
    "positive_integer",
    "register_dataset",
    "required_options",
]

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: the regimes of resolution change a dataset may declare (``ImageDataset.regimes``)
REGIMES: tuple[str, ...] = ("zoom", "canvas")


class DatasetOptionsError(ConfigError, DataError):
    """A dataset option that cannot work (a :class:`ConfigError` keyed ``dataset.<field>``,
    and a :class:`DataError`)."""


class DatasetOptions(Config):
    """Base of every dataset's ``Options`` (a frozen dataclass): errors name ``dataset.<field>``."""

    section: ClassVar[str] = "dataset"
    error: ClassVar[type[ConfigError]] = DatasetOptionsError


class ImageDataset:
    """A classification dataset with train, val and test splits at any image size.

    Subclasses define ``Options`` (a frozen dataclass subclassing :class:`DatasetOptions`),
    ``__init__(self, options)``, which sets ``num_classes``, ``in_chans`` and ``classes`` (the
    class names in label order), and ``_load(which, size, device)``: the split in the zoom
    regime at ``size`` (a :class:`~harness.schema.Size`, ``size.rows`` x ``size.cols`` pixels).
    A dataset that declares ``"canvas"`` in ``regimes`` also defines
    ``_load_canvas(which, size, train_size, device)``. :meth:`split` checks its arguments and
    caches each split it returns, so asking again is free; :meth:`clear_cache` drops the
    cached tensors. :meth:`keep_splits_in` keeps them on disk too, shared by every process that
    names the folder; ``cache_token`` says what besides the options and the code decides the
    images (the files a dataset reads). ``example_options`` gives the conformance kit a small
    instance (writing any files it needs into a folder). ``distinct_splits``: no image appears
    in two splits (the kit checks it). ``regime_note``: why a regime is missing, added to the
    refusal.
    """

    name: str  # the registered name (set by the registry); an instance may refine it
    Options: ClassVar[type[DatasetOptions]]
    num_classes: int
    in_chans: int = 3
    classes: list[str]
    distinct_splits: ClassVar[bool] = True
    regimes: ClassVar[tuple[str, ...]] = ("zoom",)
    regime_note: ClassVar[str] = ""

    @property
    def chance(self) -> float:
        """The accuracy of guessing: 1 / ``num_classes`` (every built-in keeps its classes balanced)."""
        return 1.0 / self.num_classes

    def split(
        self,
        which: SplitName,
        size: "int | Size | tuple[int, int] | str",
        device: str | torch.device = "cpu",
        regime: str = "zoom",
        train_size: int | None = None,
    ) -> Split:
        """Split ``which`` at ``size`` (``32``, ``Size(32, 64)``, ``(32, 64)`` or ``"32x64"``) on
        ``device``, in ``regime`` (one of :attr:`regimes`); ``train_size``, the training
        resolution, is required by ``canvas`` (and ignored by ``zoom``)."""
        if which not in SPLITS:
            raise DataError(f"unknown split {which!r} of dataset {self.name!r}: expected one of {', '.join(SPLITS)}")
        import torch

        size = check_regime(self, regime, size, train_size)
        dev = torch.device(device)
        train = None if regime == "zoom" else integer(train_size, "train_size")
        cache = self.__dict__.setdefault("_split_cache", {})
        key = (which, size.rows, size.cols, regime, train, str(dev))
        if key not in cache:
            def make() -> Split:
                if regime == "zoom":
                    return self._load(which, size, dev)
                return self._load_canvas(which, size, train, dev)

            disk = self.__dict__.get("_disk_cache")
            cache[key] = make() if disk is None else disk.get(which, size, regime, train, dev, make)
        return cache[key]

    def clear_cache(self) -> None:
        """Forget every cached split (they can be large at high resolutions); the files of
        :meth:`keep_splits_in` stay."""
        self.__dict__.pop("_split_cache", None)

    def keep_splits_in(self, folder: "str | Path | None") -> "ImageDataset":
        """Keep every split this dataset makes on disk too, under ``folder`` (a study's
        ``output/<name>/cache``), and read it from there when a process (this one, another worker
        of the study, a later command) has made it already: see :class:`harness.data.cache.SplitCache`.
        None: in memory only (the default). Returns the dataset."""
        from harness.data.cache import SplitCache  # torch: imported when a folder is named

        self.__dict__["_disk_cache"] = None if folder is None else SplitCache(Path(folder), self)
        return self

    def cache_token(self) -> Any:
        """What decides this dataset's images besides its options and its code, for the disk
        cache of splits (JSON-able): None (the default) for images made from the options alone; a
        dataset read from files returns what identifies their contents (the built-ins: each
        file's path, size and modification time), so that changed files are read again."""
        return None

    def _load(self, which: SplitName, size: Size, device: torch.device) -> Split:
        raise NotImplementedError

    def _load_canvas(self, which: SplitName, size: Size, train_size: int, device: torch.device) -> Split:
        raise NotImplementedError

    @classmethod
    def example_options(cls, folder: Path) -> dict[str, Any]:
        """Options of a small instance for the conformance kit; write any files it needs
        under ``folder`` (an empty folder). Default: no options (the defaults are small)."""
        return {}


DATASETS: Registry[type[ImageDataset]] = Registry(
    "dataset", base=ImageDataset, builtins="harness.data", group="harness.datasets",
    # rendered, scenes, shapes: the scenes (torch), no dataset; images: the helpers of the image datasets;
    # split, tasks: what the others share (no dataset)
    exclude={"base", "cache", "conformance", "images", "rendered", "scenes", "shapes", "split", "tasks"},
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


_LOADED: dict[tuple[str, DatasetOptions, str | None], ImageDataset] = {}


def load_dataset(name: str, options: DatasetOptions, cache: "str | Path | None" = None) -> ImageDataset:
    """Dataset ``name`` built from ``options`` (an instance of its ``Options``), once per
    process and (name, options, cache). ``cache``: a folder that keeps its splits on disk,
    shared by every process that names it (:meth:`ImageDataset.keep_splits_in`); None: in
    memory only."""
    cls = DATASETS.get(name)
    if not isinstance(options, cls.Options):
        raise DataError(f"dataset {name!r} takes {cls.Options.__qualname__}, got {type(options).__qualname__}")
    folder = None if cache is None else os.path.abspath(cache)
    key = (name, options, folder)
    if key not in _LOADED:
        _LOADED[key] = cls(options).keep_splits_in(folder)
    return _LOADED[key]


# ------------------------------------------------------------------------------ argument checks
def check_regime(
    dataset: "type[ImageDataset] | ImageDataset",
    regime: str,
    size: "int | Size | tuple[int, int] | str | None" = None,
    train_size: int | None = None,
) -> Size | None:
    """The image size ``size`` parsed, once ``regime`` is known to work for ``dataset`` (a
    dataset class or instance) at that size; else a :class:`DataError` saying what is wrong:
    an unknown regime, one the dataset does not declare, a canvas without ``train_size`` or
    smaller than the training images along either axis. Without ``size``, the regime alone is
    checked (and None returned)."""
    name = getattr(dataset, "name", None) or getattr(dataset, "__name__", str(dataset))
    declared = tuple(dataset.regimes)
    if regime not in REGIMES:
        raise DataError(f"unknown regime {regime!r} for dataset {name!r}: its regimes are "
                        f"{', '.join(declared)}{did_you_mean(regime, REGIMES)}")
    if regime not in declared:
        note = f" ({dataset.regime_note})" if dataset.regime_note else ""
        raise DataError(f"dataset {name!r} does not support the {regime} regime: its regimes are "
                        f"{', '.join(declared)}{note}")
    if size is None:  # the regime alone
        return None
    size = image_size(size)
    if regime == "canvas":
        if train_size is None:
            raise DataError(f"the canvas regime of dataset {name!r} needs the training size (train_size): "
                            "a canvas keeps the training pixel scale")
        train = positive_integer(train_size, "train_size")
        if size.rows < train or size.cols < train:
            raise DataError(f"canvas {size.rows}x{size.cols} is smaller than the training images ({train} px): "
                            "canvas only grows the field of view (test smaller sizes in the zoom regime)")
    return size


def image_size(value: object) -> Size:
    """``value`` (``32``, ``"32x64"``, ``(32, 64)`` or a :class:`Size`) as a :class:`Size` of
    positive sides, or a :class:`DataError`."""
    if isinstance(value, Size):
        rows, cols = value.rows, value.cols
    elif isinstance(value, tuple):
        if len(value) != 2:
            raise DataError(f"image size must be an integer or (rows, cols), got {value!r}")
        rows, cols = value
    elif isinstance(value, str):
        try:
            parsed = Size.parse(value)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        rows, cols = parsed.rows, parsed.cols
    else:
        rows = cols = value
    return Size(positive_integer(rows, "resolution"), positive_integer(cols, "resolution"))


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
