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
    SPLITS,
    DatasetOptions,
    DatasetOptionsError,
    ImageDataset,
    Split,
    load_dataset,
    required_options,
)

__all__ = ["CHECKS", "RESOLUTIONS", "check_all", "example"]

#: the resolutions the kit asks for: an even and an odd side
RESOLUTIONS = (8, 13)


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
    """Every split at each of two resolutions (an even and an odd side): the same examples,
    the asked size."""
    ds = _build(name, options)
    for which in SPLITS:
        splits = [ds.split(which, r) for r in RESOLUTIONS]
        for r, split in zip(RESOLUTIONS, splits):
            assert tuple(split.images.shape[1:]) == (ds.in_chans, r, r), (
                f"{name} {which} split at {r} px: images of shape {tuple(split.images.shape)}"
            )
        assert torch.equal(splits[0].labels, splits[1].labels), (
            f"{name} {which} split: the labels at {RESOLUTIONS[0]} and {RESOLUTIONS[1]} px differ"
        )


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


CHECKS: list[Callable[[str, DatasetOptions], None]] = [
    check_options,
    check_splits,
    check_resolutions,
    check_deterministic,
    check_disjoint,
]


def check_all(name: str, folder: Path | str) -> None:
    """Every check on dataset ``name``'s own example, its files written under ``folder``."""
    options = example(name, folder)
    for check in CHECKS:
        check(name, options)
