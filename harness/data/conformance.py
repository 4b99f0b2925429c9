"""The dataset conformance kit: checks every registered dataset must pass, built-in or plugin.

Each check takes a dataset name and options (an instance of the dataset's ``Options``) and
raises ``AssertionError`` on failure. :func:`example` gives the small instance a dataset
class describes with ``example_options`` (writing any files it needs into a folder), so a
plugin's own test suite can run the kit too::

    import pytest
    from harness.data.conformance import CHECKS, example

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_my_dataset(check, tmp_path):
        check("my_dataset", example("my_dataset", tmp_path))
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from harness.config import convert
from harness.data.base import (
    DATASETS,
    REGIMES,
    SPLITS,
    DatasetOptions,
    DatasetOptionsError,
    ImageDataset,
    Split,
    load_dataset,
    required_options,
)
from harness.errors import DataError
from harness.schema import Size

__all__ = ["CHECKS", "NON_SQUARE", "RESOLUTIONS", "check_all", "example"]

#: the resolutions the kit asks for: an even and an odd side
RESOLUTIONS = (8, 13)
#: the non-square sizes the kit asks for, rows x cols (as a canvas, around training images of RESOLUTIONS[0])
NON_SQUARE = (Size(8, 13), Size(13, 10))


def example(name: str, folder: Path | str) -> DatasetOptions:
    """The options of dataset ``name``'s own small example (its files written under ``folder``)."""
    cls = DATASETS.get(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return convert(cls.Options, cls.example_options(folder), DatasetOptions.section, DatasetOptionsError)


def _build(name: str, options: DatasetOptions) -> ImageDataset:
    """A fresh instance (``load_dataset`` would share one)."""
    return DATASETS.get(name)(options)


def _fingerprints(split: Split) -> set[str]:
    return {hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in split.images.cpu()}


def check_options(name: str, options: DatasetOptions) -> None:
    """``Options`` is a frozen, hashable ``DatasetOptions`` dataclass; its defaults pass its own
    checks; the options a spec logs (``asdict``) convert back to the same options."""
    cls = DATASETS.get(name)
    assert (cls.__doc__ or "").strip(), f"{name}: the class needs a docstring (the listing shows its first line)"
    opts_cls = cls.Options
    assert isinstance(opts_cls, type) and issubclass(opts_cls, DatasetOptions), (
        f"{name}: Options must subclass harness.data.DatasetOptions"
    )
    assert dataclasses.is_dataclass(opts_cls) and opts_cls.__dataclass_params__.frozen, (  # type: ignore[attr-defined]
        f"{name}: Options must be a frozen dataclass"
    )
    assert isinstance(options, opts_cls), f"{name}: expected {opts_cls.__qualname__}, got {type(options).__qualname__}"
    hash(options)  # load_dataset caches by it
    required = {k: getattr(options, k) for k in required_options(opts_cls)}
    try:
        convert(opts_cls, required, DatasetOptions.section, DatasetOptionsError)
    except DatasetOptionsError as exc:
        raise AssertionError(f"{name}: the Options defaults fail their own checks: {exc}") from None
    again = convert(opts_cls, dataclasses.asdict(options), DatasetOptions.section, DatasetOptionsError)
    assert again == options, f"{name}: {options} logged and read back gives {again}"


def check_splits(name: str, options: DatasetOptions) -> None:
    """Three non-empty splits: images (N, in_chans, R, R) float32 and finite, labels (N,) int64 in
    0..num_classes-1 on the same device; ``classes`` names each class once; ``split`` caches;
    ``load_dataset`` builds once."""
    ds = load_dataset(name, options)
    assert isinstance(ds, DATASETS.get(name)), f"{name}: load_dataset built a {type(ds).__qualname__}"
    assert load_dataset(name, options) is ds, f"{name}: load_dataset built the dataset twice"
    assert isinstance(ds.num_classes, int) and ds.num_classes >= 2, f"{name}: num_classes = {ds.num_classes!r}"
    assert isinstance(ds.in_chans, int) and ds.in_chans >= 1, f"{name}: in_chans = {ds.in_chans!r}"
    classes = list(ds.classes)
    assert len(classes) == ds.num_classes, f"{name}: {len(classes)} class names for {ds.num_classes} classes"
    assert all(isinstance(c, str) for c in classes) and len(set(classes)) == len(classes), (
        f"{name}: class names must be distinct strings, got {classes}"
    )
    r = RESOLUTIONS[0]
    for which in SPLITS:
        split = ds.split(which, r)
        where = f"{name} {which} split at {r} px"
        assert isinstance(split, Split), f"{where}: expected a Split, got {type(split).__qualname__}"
        images, labels = split.images, split.labels
        assert images.dtype == torch.float32, f"{where}: images are {images.dtype}, expected float32"
        assert labels.dtype == torch.int64, f"{where}: labels are {labels.dtype}, expected int64"
        n = labels.shape[0] if labels.ndim == 1 else -1
        assert n > 0, f"{where}: labels of shape {tuple(labels.shape)}, expected (N,) with N > 0"
        assert tuple(images.shape) == (n, ds.in_chans, r, r), (
            f"{where}: images of shape {tuple(images.shape)}, expected {(n, ds.in_chans, r, r)}"
        )
        assert images.device == labels.device, f"{where}: images on {images.device}, labels on {labels.device}"
        assert torch.isfinite(images).all(), f"{where}: non-finite pixels"
        assert int(labels.min()) >= 0 and int(labels.max()) < ds.num_classes, (
            f"{where}: labels {int(labels.min())}..{int(labels.max())} outside 0..{ds.num_classes - 1}"
        )
        assert ds.split(which, r) is split, f"{where}: asking again built the split again"
    assert ds.split("train", r).labels.unique().numel() >= 2, f"{name}: the train split holds a single class"


def check_resolutions(name: str, options: DatasetOptions) -> None:
    """Every split at two square sizes (an even and an odd side) and two non-square ones,
    given as an int, a ``Size``, a (rows, cols) tuple and a ``"RxC"`` string: the same
    examples, the asked size, finite pixels; the chance accuracy is 1 / num_classes."""
    ds = _build(name, options)
    assert ds.chance == 1 / ds.num_classes, f"{name}: chance = {ds.chance!r} for {ds.num_classes} classes"
    wrote = [RESOLUTIONS[0], Size(RESOLUTIONS[1], RESOLUTIONS[1]), (NON_SQUARE[0].rows, NON_SQUARE[0].cols),
             NON_SQUARE[1].label]
    sizes = [Size(r, r) for r in RESOLUTIONS] + list(NON_SQUARE)
    for which in SPLITS:
        splits = [ds.split(which, w) for w in wrote]
        for size, split in zip(sizes, splits):
            where = f"{name} {which} split at {size.rows}x{size.cols}"
            assert tuple(split.images.shape[1:]) == (ds.in_chans, size.rows, size.cols), (
                f"{where}: images of shape {tuple(split.images.shape)}, expected (N, {ds.in_chans}, "
                f"{size.rows}, {size.cols})"
            )
            assert torch.isfinite(split.images).all(), f"{where}: non-finite pixels"
            assert torch.equal(splits[0].labels, split.labels), (
                f"{where}: the labels differ from those at {RESOLUTIONS[0]} px"
            )
        assert ds.split(which, NON_SQUARE[0]) is splits[2], f"{name} {which} split: a size asked twice was built twice"


def check_regimes(name: str, options: DatasetOptions) -> None:
    """``regimes`` is a non-empty tuple of known regimes including ``zoom``; a regime the
    dataset does not declare, or an unknown one, is refused with a ``DataError``. In the canvas
    regime (when declared), around training images of ``RESOLUTIONS[0]`` px: the asked size at
    square and non-square sizes, the same labels as the zoom regime, a canvas of the training
    size equal to the training image, a canvas without ``train_size`` or smaller than the
    training images refused with a ``DataError``."""
    cls = DATASETS.get(name)
    regimes = cls.regimes
    assert isinstance(regimes, tuple) and regimes and "zoom" in regimes, (
        f"{name}: regimes must be a tuple that includes 'zoom', got {regimes!r}"
    )
    unknown = [r for r in regimes if r not in REGIMES]
    assert not unknown, f"{name}: unknown regimes {unknown} (known: {', '.join(REGIMES)})"
    ds = _build(name, options)
    train = RESOLUTIONS[0]
    for regime in [r for r in REGIMES if r not in regimes] + ["no_such_regime"]:
        try:
            ds.split("test", train, regime=regime, train_size=train)
        except DataError:
            continue
        raise AssertionError(f"{name}: the {regime} regime is not declared, yet split() gave images")
    if "canvas" not in regimes:
        return
    assert cls._load_canvas is not ImageDataset._load_canvas, f"{name}: declares canvas but has no _load_canvas"
    for which in SPLITS:
        zoom = ds.split(which, train)
        same = ds.split(which, train, regime="canvas", train_size=train)
        where = f"{name} {which} split, canvas regime"
        assert torch.allclose(same.images, zoom.images, atol=1e-5), (
            f"{where}: a canvas of the training size ({train} px) differs from the training image"
        )
        for size in (Size(RESOLUTIONS[1], RESOLUTIONS[1]), *NON_SQUARE):
            split = ds.split(which, size, regime="canvas", train_size=train)
            assert tuple(split.images.shape[1:]) == (ds.in_chans, size.rows, size.cols), (
                f"{where} at {size.rows}x{size.cols}: images of shape {tuple(split.images.shape)}"
            )
            assert torch.isfinite(split.images).all(), f"{where} at {size.rows}x{size.cols}: non-finite pixels"
            assert torch.equal(split.labels, zoom.labels), f"{where} at {size.rows}x{size.cols}: labels differ"
    for bad in ({"train_size": RESOLUTIONS[1]}, {}):  # smaller than the training images; no training size
        try:
            ds.split("test", Size(train, RESOLUTIONS[1]), regime="canvas", **bad)
        except DataError:
            continue
        raise AssertionError(f"{name}: a canvas of {train}x{RESOLUTIONS[1]} with {bad or 'no train_size'} "
                             "was not refused")


def check_deterministic(name: str, options: DatasetOptions) -> None:
    """The same options build the same tensors, bit for bit."""
    a, b = _build(name, options), _build(name, options)
    r = RESOLUTIONS[1]
    for which in SPLITS:
        x, y = a.split(which, r), b.split(which, r)
        assert torch.equal(x.labels, y.labels), f"{name} {which} split: two builds give different labels"
        assert torch.equal(x.images, y.images), f"{name} {which} split: two builds give different images"
    assert a.classes == b.classes, f"{name}: two builds give different class names"


def check_disjoint(name: str, options: DatasetOptions) -> None:
    """No image is in two splits (for datasets that declare ``distinct_splits``)."""
    cls = DATASETS.get(name)
    if not cls.distinct_splits:
        return
    ds = _build(name, options)
    seen: dict[str, str] = {}
    for which in SPLITS:
        for fingerprint in _fingerprints(ds.split(which, RESOLUTIONS[0])):
            other = seen.setdefault(fingerprint, which)
            assert other == which, f"{name}: an image of the {which} split is also in the {other} split"


def check_disk_cache(name: str, options: DatasetOptions) -> None:
    """Kept on disk as a study keeps them (``keep_splits_in``), the splits one build made are
    read back by a second build of the same options, bit for bit and without making them again
    (its ``cache_token`` is the same for two builds)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        writer, reader = _build(name, options).keep_splits_in(folder), _build(name, options).keep_splits_in(folder)

        def made_again(*args, **kwargs):
            raise AssertionError(f"{name}: a second build made a split again instead of reading it from the disk "
                                 "cache (does cache_token give the same for two builds?)")

        reader._load = reader._load_canvas = made_again  # type: ignore[method-assign]
        r = RESOLUTIONS[1]
        asks = [(which, r, "zoom", None) for which in SPLITS]
        if "canvas" in writer.regimes:
            asks.append(("test", r, "canvas", RESOLUTIONS[0]))
        for which, size, regime, train in asks:
            x = writer.split(which, size, regime=regime, train_size=train)
            y = reader.split(which, size, regime=regime, train_size=train)
            where = f"{name} {which} split ({regime} {size})"
            assert y.images.dtype == x.images.dtype and y.labels.dtype == x.labels.dtype, (
                f"{where}: read back from the disk cache as {y.images.dtype}, {y.labels.dtype}")
            assert torch.equal(y.images.cpu(), x.images.cpu()) and torch.equal(y.labels.cpu(), x.labels.cpu()), (
                f"{where}: read back from the disk cache, not bitwise the split made")


CHECKS: list[Callable[[str, DatasetOptions], None]] = [
    check_options,
    check_splits,
    check_resolutions,
    check_regimes,
    check_deterministic,
    check_disjoint,
    check_disk_cache,
]


def check_all(name: str, folder: Path | str) -> None:
    """Every check on dataset ``name``'s own example, its files written under ``folder``."""
    options = example(name, folder)
    for check in CHECKS:
        check(name, options)
