"""Real image datasets through torchvision: CIFAR-10/100 and small ImageFolder trees.

Both keep every split in memory as tensors and return, for any resolution, the
images resized from the originals with an antialiased bilinear resize
(``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``),
normalised with per-channel statistics:

- CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616)
- CIFAR-100: mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762)
- ImageFolder: the ImageNet statistics, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)

The validation split is a seeded, class-stratified random part of the training
images, kept apart from the training split; the test split is never used for it.
torchvision is imported only when a dataset is built.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.data import ImageDataset, Split, SplitName
from harness.data.rendered import _int, _positive_int
from harness.errors import DataError

__all__ = ["CIFAR", "ImageFolderData"]

_CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_PIXEL_BUDGET = 1 << 24  # resize at most this many pixels (per channel) at once


class CIFAR(ImageDataset):
    """CIFAR-10 or CIFAR-100 (`name`) from `root`, the folder that holds (or will hold)
    cifar-10-batches-py/ or cifar-100-python/.

    Downloads only when `download` is true. The validation split is a seeded,
    stratified `val_fraction` of the official training set, the training split the
    rest; the test split is the official test set. Originals are 32 x 32, so
    `split(which, 32)` does not resize; all splits stay in memory as uint8 and each
    (split, resolution, device) asked for is cached as float32.
    """

    def __init__(
        self,
        name: str,
        root: str | os.PathLike,
        download: bool = False,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        if name not in _CIFAR_STATS:
            raise DataError(f"unknown CIFAR variant {name!r}: expected cifar10 or cifar100")
        self.name = name
        self.root = _path(root, f"{name} root")
        self.in_chans = 3
        self.mean, self.std = _CIFAR_STATS[name]
        _check_fraction(val_fraction, "val_fraction")
        if not isinstance(download, bool):
            raise DataError(f"download must be true or false, got {download!r}")
        (train_x, train_y), (test_x, test_y), self.classes = _read_cifar(name, self.root, download)
        self.num_classes = len(self.classes)
        train_idx, val_idx = _carve(train_y, (val_fraction,), _int(seed, "seed"))
        self._images = {"train": train_x[train_idx], "val": train_x[val_idx], "test": test_x}
        self._labels = {"train": train_y[train_idx], "val": train_y[val_idx], "test": test_y}
        _check_nonempty(self._labels, f"{name} in {self.root}")

    def _load(self, which: SplitName, resolution: int, device: torch.device) -> Split:
        images = _resize_normalize(self._images[which], resolution, self.mean, self.std, device)
        return Split(images, self._labels[which].to(device))


def _read_cifar(name: str, root: Path, download: bool):
    """((train images, labels), (test images, labels), class names): uint8 (N, 3, 32, 32), int64 (N,)."""
    import torchvision.datasets.cifar as tv_cifar

    tv_cls = tv_cifar.CIFAR10 if name == "cifar10" else tv_cifar.CIFAR100
    folder = root / tv_cls.base_folder
    files = [(f, md5) for f, md5 in tv_cls.train_list + tv_cls.test_list]
    files.append((tv_cls.meta["filename"], tv_cls.meta["md5"]))
    missing = [f for f, _ in files if not (folder / f).is_file()]
    if missing and not download:
        if not root.is_dir():
            raise DataError(f"{name} root {root} does not exist; set download: true to fetch {name} into it")
        raise DataError(
            f"{name} files missing in {folder}: {', '.join(missing)}; set download: true to fetch them"
        )
    try:
        train = tv_cls(str(root), train=True, download=download)
        test = tv_cls(str(root), train=False, download=False)
    except Exception as err:
        if missing:  # download was asked and failed
            raise DataError(f"could not download {name} into {root}: {type(err).__name__}: {err}") from err
        bad = _first_unreadable(tv_cifar, folder, files)
        what = f"file {bad} is corrupt or truncated" if bad else f"the files in {folder} could not be read"
        raise DataError(
            f"{name}: {what} ({type(err).__name__}: {err}); delete it and set download: true to fetch it again"
        ) from err
    parts = []
    for ds in (train, test):
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(ds.classes)):
            raise DataError(f"{name} in {folder} has labels outside 0..{len(ds.classes) - 1}")
        parts.append((images, labels))
    return parts[0], parts[1], list(train.classes)


def _first_unreadable(tv_cifar, folder: Path, files: list[tuple[str, str]]) -> Path | None:
    """The first CIFAR file that fails its checksum or does not unpickle to a batch."""
    for filename, md5 in files:
        path = folder / filename
        if not tv_cifar.check_integrity(str(path), md5):  # looked up here, so tests can stub it
            return path
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
        except Exception:
            return path
        if not isinstance(entry, dict):
            return path
    return None


class ImageFolderData(ImageDataset):
    """A small ImageFolder tree (one subfolder of images per class), Imagenette-sized.

    Layouts: if `root/train` exists, train and val come from it (val carved out,
    seeded, stratified) and test from `root/val`, or else `root/test`, whose class
    folders must be among the training ones. Otherwise the class folders sit in
    `root` itself and are split three ways (`val_fraction`, `test_fraction`, the rest
    for training). Each image is centre-cropped to a square and resized (antialiased)
    to the asked resolution; every split is held in memory per resolution, so keep
    to trees of some ten thousand images. With `image_size_cache` = S, each image is
    decoded once and kept as S x S uint8, and every resolution is resized from that
    (fast; set S at least the largest resolution); without it, each new resolution
    decodes the files again and resizes from the originals.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size_cache: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        test_fraction: float = 0.1,
    ) -> None:
        self.root = _path(root, "ImageFolder root")
        if not self.root.is_dir():
            raise DataError(f"ImageFolder root {self.root} does not exist or is not a folder")
        self.name = f"imagefolder-{self.root.name}"
        self.in_chans = 3
        self.mean, self.std = _IMAGENET_STATS
        if image_size_cache is not None:
            image_size_cache = _positive_int(image_size_cache, "image_size_cache")
        self.image_size_cache = image_size_cache
        _check_fraction(val_fraction, "val_fraction")
        seed = _int(seed, "seed")
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
            train_idx, val_idx = _carve(labels, (val_fraction,), seed)
            parts = {"train": train_idx, "val": val_idx}
        else:
            _check_fraction(test_fraction, "test_fraction")
            if val_fraction + test_fraction >= 1:
                raise DataError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
            self.classes, files, labels = _scan(self.root)
            train_idx, val_idx, test_idx = _carve(labels, (val_fraction, test_fraction), seed)
            parts = {"train": train_idx, "val": val_idx, "test": test_idx}
            test_files, test_labels = None, None
        self.num_classes = len(self.classes)
        self._files = {which: [files[i] for i in idx.tolist()] for which, idx in parts.items()}
        self._labels = {which: labels[idx] for which, idx in parts.items()}
        if test_files is not None:
            self._files["test"], self._labels["test"] = test_files, test_labels
        _check_nonempty(self._labels, f"ImageFolder {self.root}")
        self._originals: dict[str, torch.Tensor] = {}  # split -> (N, 3, S, S) uint8 at image_size_cache

    def _load(self, which: SplitName, resolution: int, device: torch.device) -> Split:
        labels = self._labels[which].to(device)
        if self.image_size_cache is not None:
            if which not in self._originals:
                size = self.image_size_cache
                self._originals[which] = torch.stack(
                    [_square(_read_image(p), size).mul_(255).round_().to(torch.uint8) for p in self._files[which]]
                )
            images = _resize_normalize(self._originals[which], resolution, self.mean, self.std, device)
            return Split(images, labels)
        images = torch.stack([_square(_read_image(p), resolution) for p in self._files[which]])
        return Split(_normalize(images, self.mean, self.std).to(device), labels)


def _scan(directory: Path, classes: list[str] | None = None) -> tuple[list[str], list[Path], torch.Tensor]:
    """Class names, image paths and int64 labels of an ImageFolder directory.

    Without `classes`, the class folders found define the classes and each must hold
    images; with them (a test folder), the folders found must be among them.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

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


def _read_image(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 RGB, decoded with PIL."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except Exception as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop a (3, H, W) uint8 image to a square, resize it to size x size: float in [0, 1]."""
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = image[None, :, top : top + side, left : left + side].float().div_(255)
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp_(0, 1)


def _resize_normalize(images: torch.Tensor, resolution: int, mean, std, device: torch.device) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, R, R) float32 on device, resized (antialiased) and normalised, in chunks."""
    n, c, h, w = images.shape
    out = torch.empty((n, c, resolution, resolution), dtype=torch.float32, device=device)
    step = max(1, _PIXEL_BUDGET // max(h * w, resolution * resolution))
    for start in range(0, n, step):
        x = images[start : start + step].to(device).float().div_(255)
        if (h, w) != (resolution, resolution):
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + step] = _normalize(x, mean, std)
    return out


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def _carve(labels: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Split indices at random into [rest, part_1, ...], part_i holding round(fraction_i * n).

    Stratified: each class gives each part its share, rounded by largest remainder so
    that the parts' totals come out right. Indices come back sorted.
    """
    g = torch.Generator().manual_seed(seed)
    n = labels.numel()
    perm = torch.randperm(n, generator=g)
    by_class = perm[torch.argsort(labels[perm], stable=True)]  # each class's indices, in random order
    counts = torch.bincount(labels) if n else torch.zeros(0, dtype=torch.int64)
    starts = torch.cumsum(counts, 0) - counts
    taken = torch.zeros_like(counts)
    parts = []
    tie_break = torch.rand(len(counts), generator=g)
    for fraction in fractions:
        quota = fraction * counts.double()
        share = quota.floor().long()
        extra = int(round(fraction * n)) - int(share.sum())
        remainder = (quota - share).clamp_max(counts - taken - share)  # a class cannot give more than it has
        order = torch.argsort(-(remainder + 1e-9 * tie_break))
        share[order[: max(extra, 0)]] += 1
        share = torch.minimum(share, counts - taken)
        spans = zip(starts.tolist(), taken.tolist(), share.tolist())
        parts.append(torch.cat([by_class[s + t : s + t + k] for s, t, k in spans]))
        taken += share
    rest = torch.cat([by_class[s + t : s + c] for s, t, c in zip(starts.tolist(), taken.tolist(), counts.tolist())])
    return [torch.sort(p).values for p in [rest, *parts]]


def _check_fraction(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataError(f"{what} must be a number between 0 and 1 (exclusive), got {value!r}")


def _check_nonempty(labels: dict[str, torch.Tensor], where: str) -> None:
    for which in ("train", "val", "test"):
        if labels[which].numel() == 0:
            raise DataError(f"the {which} split of {where} would be empty: use more images or a larger fraction")


def _path(value: object, what: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise DataError(f"{what} must be a path, got {value!r}")
    return Path(value).expanduser()
