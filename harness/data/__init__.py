"""Datasets behind one interface: `ImageDataset.split(which, resolution, device)`.

Every dataset gives three disjoint splits, "train", "val" (for tuning) and "test"
(never seen by tuning), as whole tensors at any square resolution, already
normalised and on the asked device, so training never waits for a loader:

- `RenderedDataset`: the embedded, procedurally rendered scenes of
  `harness.data.rendered`, rendered natively at each resolution (no resampling).
- `CIFAR`: CIFAR-10/100 from a local root, resized with an antialiased resize.
- `ImageFolderData`: a small ImageFolder tree (Imagenette-sized), likewise.

`build_dataset(name, **options)` builds one by name, as a study spec names it.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Literal

import torch

from harness.data import rendered
from harness.errors import DataError

__all__ = [
    "Split",
    "ImageDataset",
    "RenderedDataset",
    "CIFAR",
    "ImageFolderData",
    "DATASETS",
    "build_dataset",
]

SplitName = Literal["train", "val", "test"]
_SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split at one resolution: whole tensors on one device."""

    images: torch.Tensor  # (N, C, R, R) float32, normalised
    labels: torch.Tensor  # (N,) int64, same device

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class ImageDataset:
    """A classification dataset with train, val and test splits at any resolution.

    Subclasses set `name`, `num_classes`, `in_chans` and `classes` (the class names in
    label order) and implement `_load`; `split`
    checks its arguments and caches each (split, resolution, device) it returns, so
    asking again is free. `clear_cache` drops the cached tensors.
    """

    name: str
    num_classes: int
    in_chans: int = 3
    classes: list[str]

    def split(self, which: SplitName, resolution: int, device: str | torch.device = "cpu") -> Split:
        if which not in _SPLITS:
            raise DataError(f"unknown split {which!r} of dataset {self.name!r}: expected one of {', '.join(_SPLITS)}")
        resolution = rendered._positive_int(resolution, "resolution")
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


class RenderedDataset(ImageDataset):
    """A task of the embedded rendered dataset (see `harness.data.rendered`).

    The train, val and test scenes are sampled once, from three seeds derived from
    `seed`, and rendered natively at whatever resolution a split is asked at.
    Images are normalised with mean 0.5 and standard deviation 0.25 per channel.
    """

    def __init__(
        self,
        task: str = "relational",
        num_train: int = 10000,
        num_val: int = 2000,
        num_test: int = 2000,
        seed: int = 0,
    ) -> None:
        self.task = rendered._check_task(task)
        sizes = {"train": num_train, "val": num_val, "test": num_test}
        seed = rendered._int(seed, "seed")
        self.name = f"rendered-{self.task}"
        self.num_classes = rendered.num_classes(self.task)
        self.in_chans = 3
        self.classes = list(rendered.CLASS_NAMES[self.task])
        counts = {which: rendered._positive_int(n, f"num_{which}") for which, n in sizes.items()}
        self.scenes = {
            which: rendered.sample_scenes(self.task, n, _derive_seed(seed, which)) for which, n in counts.items()
        }

    def _load(self, which: SplitName, resolution: int, device: torch.device) -> Split:
        scenes = self.scenes[which]
        return Split(rendered.render(scenes, resolution, device=device), scenes.labels.to(device))


def _derive_seed(seed: int, which: str) -> int:
    """A distinct, stable 63-bit seed per (seed, split); stable across runs and platforms."""
    offset = _SPLITS.index(which) + 1
    return (seed * 0x9E3779B97F4A7C15 + offset * 0xBF58476D1CE4E5B9) % (1 << 63)


from harness.data.vision import CIFAR, ImageFolderData  # noqa: E402  (they subclass ImageDataset)

DATASETS: dict[str, type[ImageDataset]] = {
    "rendered": RenderedDataset,
    "cifar10": CIFAR,
    "cifar100": CIFAR,
    "imagefolder": ImageFolderData,
}


def build_dataset(name: str, /, **options) -> ImageDataset:
    """Build a dataset by name ("rendered", "cifar10", "cifar100", "imagefolder")."""
    if not isinstance(name, str) or name not in DATASETS:
        near = difflib.get_close_matches(str(name), DATASETS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise DataError(f"unknown dataset {name!r}: known datasets are {', '.join(DATASETS)}{hint}")
    cls = DATASETS[name]
    takes_name = cls is CIFAR  # the dataset's name picks CIFAR-10 or CIFAR-100
    params = [p for p in inspect.signature(cls).parameters.values() if not (takes_name and p.name == "name")]
    known = [p.name for p in params]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for dataset {name!r}: it takes {', '.join(known)}"
        )
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in options]
    if missing:
        raise DataError(f"dataset {name!r} needs option{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return cls(name, **options) if takes_name else cls(**options)
