"""Real image datasets through torchvision: CIFAR-10/100 and small ImageFolder trees.

Both keep every split in memory as tensors and return, for any size rows x cols, the
images resized from the originals with an antialiased bilinear resize
(``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``): the zoom
regime, the same (square) frame at more or fewer pixels, stretched when rows != cols.
They do not support the canvas regime: a photo shows nothing beyond its frame, so a larger
field of view at the training pixel scale would have to invent pixels (padding, zero or
reflected, shows a border or mirrored content a model could key on, not a larger view).
Images are normalised with per-channel statistics:

- CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616)
- CIFAR-100: mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762)
- ImageFolder: the ImageNet statistics, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)

The validation split is a seeded, class-stratified random part of the training
images, kept apart from the training split; the test split is never used for it.
torch, numpy, PIL and torchvision (a second or two to import) are imported only when a dataset
is built: the classes and their options are checked without them (a study spec, ``harness run
--dry-run``).
The resize, normalisation and carving of splits they share with Fashion-MNIST are :mod:`harness.data.images`.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.config import Invalid, option
from harness.data.base import SPLITS, DatasetOptions, ImageDataset, Split, SplitName, register_dataset
from harness.data.images import (
    RootPath,
    carve,
    check_nonempty,
    file_stats,
    normalize,
    read_image,
    resize_normalize,
    square,
)
from harness.errors import DataError
from harness.schema import Size

if TYPE_CHECKING:
    import torch

__all__ = ["CIFAR", "CIFAR10", "CIFAR100", "ImageFolderData"]

_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_NO_CANVAS = ("a photo shows nothing beyond its frame: a larger field of view at the training pixel scale "
              "would have to invent pixels")


@dataclass(frozen=True)
class _FolderOptions(RootPath, DatasetOptions):
    """Options of a dataset read from a folder: its root, the validation share, the seed."""

    root: str  # a path (``~`` expanded); a path object is kept as its string
    val_fraction: float = 0.1  # carved out of the training images, stratified
    seed: int = 0  # of that carving

    def validate(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise Invalid("val_fraction", "expected a fraction in (0, 1)")


# ------------------------------------------------------------------------------ CIFAR
class CIFAR(ImageDataset):
    """CIFAR-10 or CIFAR-100 (the registered subclasses) from ``root``, the folder that holds
    (or will hold) cifar-10-batches-py/ or cifar-100-python/.

    Downloads only when ``download`` is true; checks each file against the official MD5
    unless ``verify`` is false (a re-packed copy). The validation split is a seeded,
    stratified ``val_fraction`` of the official training set, the training split the rest;
    the test split is the official test set. Originals are 32 x 32, so ``split(which, 32)``
    does not resize; all splits stay in memory as uint8 and each (split, size, device)
    asked for is cached as float32. Zoom regime only.
    """

    regime_note: ClassVar[str] = _NO_CANVAS

    torchvision_class: ClassVar[str]  # the torchvision class that knows the files: "CIFAR10", "CIFAR100"
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]

    @dataclass(frozen=True)
    class Options(_FolderOptions):
        download: bool = False  # fetch the official files into root when they are missing
        verify: bool = True  # check every file's MD5 against the official release

        def validate(self) -> None:
            super().validate()
            if not self.download and not self.path.exists():
                raise Invalid("root", "does not exist; set download: true to fetch the dataset into it")

    def __init__(self, options: Options) -> None:
        self.options = options
        self.root = options.path
        self.in_chans = 3
        (train_x, train_y), (test_x, test_y), self.classes = _read_cifar(self, options.download, options.verify)
        self.num_classes = len(self.classes)
        train_idx, val_idx = carve(train_y, (options.val_fraction,), options.seed)
        self._images = {"train": train_x[train_idx], "val": train_x[val_idx], "test": test_x}
        self._labels = {"train": train_y[train_idx], "val": train_y[val_idx], "test": test_y}
        check_nonempty(self._labels, f"{self.name} in {self.root}")

    def _load(self, which: SplitName, size: Size, device: torch.device) -> Split:
        images = resize_normalize(self._images[which], size, self.mean, self.std, device)
        return Split(images, self._labels[which].to(device))

    def cache_token(self) -> list:
        """The files read (each one's path, size and modification time): a changed copy is read again."""
        tv_cls = getattr(_torchvision_cifar(), self.torchvision_class)
        names = [f for f, _ in (*tv_cls.train_list, *tv_cls.test_list)] + [tv_cls.meta["filename"]]
        return file_stats(self.root / tv_cls.base_folder / f for f in names)

    @classmethod
    def example_options(cls, folder: Path) -> dict[str, Any]:
        """A fake copy in the official layout: 40 random training and 20 test images."""
        import numpy as np

        tv_cls = getattr(_torchvision_cifar(), cls.torchvision_class)
        meta = tv_cls.meta
        label_key = "labels" if meta["key"] == "label_names" else "fine_labels"
        num_classes = 10 if label_key == "labels" else 100
        base = folder / tv_cls.base_folder
        base.mkdir(parents=True)
        rng = np.random.default_rng(0)
        batches = [(f, 40 // len(tv_cls.train_list)) for f, _ in tv_cls.train_list] + [(tv_cls.test_list[0][0], 20)]
        for filename, n in batches:
            entry = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                     label_key: rng.integers(0, num_classes, n).tolist()}
            (base / filename).write_bytes(pickle.dumps(entry))
        (base / meta["filename"]).write_bytes(pickle.dumps({meta["key"]: [f"class{i}" for i in range(num_classes)]}))
        return {"root": str(folder), "verify": False, "val_fraction": 0.25}


@register_dataset("cifar10")
class CIFAR10(CIFAR):
    """CIFAR-10: 60000 32 x 32 colour images in 10 classes (50000 training, 10000 test)."""

    torchvision_class = "CIFAR10"
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@register_dataset("cifar100")
class CIFAR100(CIFAR):
    """CIFAR-100: 60000 32 x 32 colour images in 100 classes (50000 training, 10000 test)."""

    torchvision_class = "CIFAR100"
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _torchvision_cifar():
    """torchvision's CIFAR module: the file names, checksums and URLs, the checksum and download
    functions (looked up there on each call, so tests can stub them)."""
    import torchvision.datasets.cifar as tv_cifar  # about a second: only when CIFAR is built

    return tv_cifar


def _read_cifar(ds: CIFAR, download: bool, verify: bool):
    """((train images, labels), (test images, labels), class names): uint8 (N, 3, 32, 32), int64 (N,)."""
    import numpy as np
    import torch

    tv_cifar = _torchvision_cifar()
    name, root, tv_cls = ds.name, ds.root, getattr(tv_cifar, ds.torchvision_class)
    folder = root / tv_cls.base_folder
    files = [*tv_cls.train_list, *tv_cls.test_list, (tv_cls.meta["filename"], tv_cls.meta["md5"])]
    missing = [f for f, _ in files if not (folder / f).is_file()]
    if missing and not download:
        raise DataError(f"{name} files missing in {folder}: {', '.join(missing)}; set download: true to fetch them")
    if missing:
        try:
            tv_cifar.download_and_extract_archive(tv_cls.url, str(root), filename=tv_cls.filename, md5=tv_cls.tgz_md5)
        except Exception as err:
            raise DataError(f"could not download {name} into {root}: {type(err).__name__}: {err}") from err
    if verify:
        for filename, md5 in files:
            if not tv_cifar.check_integrity(str(folder / filename), md5):
                raise _corrupt(name, folder / filename, "its MD5 checksum is not the official file's; "
                                                        "set verify: false for a re-packed copy")
    parts = []
    for batch in (tv_cls.train_list, tv_cls.test_list):
        entries = [_unpickle(name, folder / filename) for filename, _ in batch]
        try:
            data = np.vstack([e["data"] for e in entries]).reshape(-1, 3, 32, 32)
            targets = [t for e in entries for t in (e["labels"] if "labels" in e else e["fine_labels"])]
        except Exception as err:
            raise _corrupt(name, folder / batch[0][0], f"{type(err).__name__}: {err}") from err
        parts.append((torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)),
                      torch.as_tensor(targets, dtype=torch.int64)))
    meta_path = folder / tv_cls.meta["filename"]
    try:
        classes = list(_unpickle(name, meta_path)[tv_cls.meta["key"]])
    except KeyError as err:
        raise _corrupt(name, meta_path, f"no {err} in it") from None
    for images, labels in parts:
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(f"{name} in {folder} has labels outside 0..{len(classes) - 1}")
    return parts[0], parts[1], classes


def _unpickle(name: str, path: Path) -> dict:
    """One CIFAR file (a pickled dict, Python 2 str keys read as latin-1)."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:
        raise _corrupt(name, path, f"{type(err).__name__}: {err}") from err
    if not isinstance(entry, dict):
        raise _corrupt(name, path, f"a {type(entry).__name__}, not a dict")
    return entry


def _corrupt(name: str, path: Path, why: str) -> DataError:
    return DataError(f"{name}: file {path} is corrupt or truncated ({why}); "
                     f"delete it and set download: true to fetch it again")


# ------------------------------------------------------------------------------ ImageFolder
@register_dataset("imagefolder")
class ImageFolderData(ImageDataset):
    """A small ImageFolder tree (one subfolder of images per class), Imagenette-sized.

    Layouts: if ``root/train`` exists, train and val come from it (val carved out,
    seeded, stratified) and test from ``root/val``, or else ``root/test``, whose class
    folders must be among the training ones. Otherwise the class folders sit in
    ``root`` itself and are split three ways (``val_fraction``, ``test_fraction``, the rest
    for training). Each image is centre-cropped to a square and resized (antialiased)
    to the asked size, rows x cols (the square stretched when rows != cols); every split
    is held in memory per size, so keep to trees of some ten thousand images. With
    ``image_size_cache`` = S, each image is decoded once and kept as S x S uint8, and every
    size is resized from that (fast; set S at least the largest side); without it, each new
    size decodes the files again and resizes from the originals. Zoom regime only.
    """

    regime_note: ClassVar[str] = _NO_CANVAS

    @dataclass(frozen=True)
    class Options(_FolderOptions):
        image_size_cache: int | None = option(None, gt=0)  # decode once at this side (pixels)
        test_fraction: float = 0.1  # the test share when root holds the class folders directly

        def validate(self) -> None:
            super().validate()
            if not self.path.is_dir():
                raise Invalid("root", "does not exist or is not a folder")
            if not (self.path / "train").is_dir():  # split three ways
                if not 0 < self.test_fraction < 1:
                    raise Invalid("test_fraction", "expected a fraction in (0, 1)")
                if self.val_fraction + self.test_fraction >= 1:
                    raise Invalid("test_fraction", f"val_fraction + test_fraction must be below 1 "
                                                   f"(val_fraction is {self.val_fraction})")

    def __init__(self, options: Options) -> None:
        self.options = options
        self.root = options.path
        self.name = f"imagefolder-{self.root.name}"
        self.in_chans = 3
        self.mean, self.std = _IMAGENET_STATS
        self.image_size_cache = options.image_size_cache
        train_dir = self.root / "train"
        if train_dir.is_dir():
            test_dir = next((self.root / d for d in ("val", "test") if (self.root / d).is_dir()), None)
            if test_dir is None:
                raise DataError(
                    f"{train_dir} exists but neither {self.root / 'val'} nor {self.root / 'test'} does: put the "
                    f"test images there, or put the class folders directly in {self.root} to split it three ways"
                )
            self.classes, files, labels = _scan(train_dir)
            _, test_files, test_labels = _scan(test_dir, self.classes)
            train_idx, val_idx = carve(labels, (options.val_fraction,), options.seed)
            parts = {"train": train_idx, "val": val_idx}
        else:
            self.classes, files, labels = _scan(self.root)
            fractions = (options.val_fraction, options.test_fraction)
            train_idx, val_idx, test_idx = carve(labels, fractions, options.seed)
            parts = {"train": train_idx, "val": val_idx, "test": test_idx}
            test_files, test_labels = None, None
        self.num_classes = len(self.classes)
        self._files = {which: [files[i] for i in idx.tolist()] for which, idx in parts.items()}
        self._labels = {which: labels[idx] for which, idx in parts.items()}
        if test_files is not None:
            self._files["test"], self._labels["test"] = test_files, test_labels
        check_nonempty(self._labels, f"ImageFolder {self.root}")
        self._originals: dict[str, torch.Tensor] = {}  # split -> (N, 3, S, S) uint8 at image_size_cache

    def _load(self, which: SplitName, size: Size, device: torch.device) -> Split:
        import torch

        labels = self._labels[which].to(device)
        if self.image_size_cache is not None:
            if which not in self._originals:
                cached = self.image_size_cache
                self._originals[which] = torch.stack(
                    [square(read_image(p), Size(cached, cached)).mul_(255).round_().to(torch.uint8)
                     for p in self._files[which]]
                )
            images = resize_normalize(self._originals[which], size, self.mean, self.std, device)
            return Split(images, labels)
        images = torch.stack([square(read_image(p), size) for p in self._files[which]])
        return Split(normalize(images, self.mean, self.std).to(device), labels)

    def cache_token(self) -> list:
        """The images of every split (each file's path, size and modification time): a changed tree is read again."""
        return file_stats(p for which in SPLITS for p in self._files[which])

    @classmethod
    def example_options(cls, folder: Path) -> dict[str, Any]:
        """Three classes of five PNGs each (noise tinted red, green or blue; assorted sizes)."""
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        for c, tint in enumerate(((120, 0, 0), (0, 120, 0), (0, 0, 120))):
            (folder / f"class{c}").mkdir(parents=True)
            for i in range(5):
                pixels = rng.integers(0, 128, size=(12 + 3 * i, 20 - 2 * i, 3)) + np.array(tint)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"class{c}" / f"{i}.png")
        return {"root": str(folder), "val_fraction": 0.2, "test_fraction": 0.2}


def _scan(directory: Path, classes: list[str] | None = None) -> tuple[list[str], list[Path], torch.Tensor]:
    """Class names, image paths and int64 labels of an ImageFolder directory.

    Without `classes`, the class folders found define the classes and each must hold
    images; with them (a test folder), the folders found must be among them.
    """
    import torch
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset  # about a second: only when built

    found = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not found:
        raise DataError(f"no class folders in {directory}: an ImageFolder tree has one subfolder of images per class")
    require_all = classes is None
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataError(
                f"class folders {', '.join(extra)} in {directory} are not among the training classes "
                f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
            )
    class_to_idx = {c: i for i, c in enumerate(classes)}
    samples = make_dataset(str(directory), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DataError(f"no images in {directory}: looked for {' '.join(IMG_EXTENSIONS)} files in its class folders")
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    if require_all:
        empty = [c for c, n in zip(classes, torch.bincount(labels, minlength=len(classes)).tolist()) if n == 0]
        if empty:
            raise DataError(f"class folders in {directory} hold no images: {', '.join(empty)}")
    return classes, [Path(p) for p, _ in samples], labels
