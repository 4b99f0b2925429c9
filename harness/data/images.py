"""What the datasets read from image files share (CIFAR and ImageFolder in :mod:`harness.data.vision`,
Fashion-MNIST in :mod:`harness.data.fashion_mnist`): the pixels and the splits, not the file formats.

- :class:`RootPath`, the ``root`` folder of their options, and :func:`file_stats`, the files
  behind a cache token;
- :func:`read_image` and :func:`square`, an image file decoded, centre-cropped and resized;
- :func:`resize_normalize` and :func:`normalize`, uint8 images resized with an antialiased
  bilinear resize in chunks of :data:`PIXEL_BUDGET` pixels and normalised per channel;
- :func:`carve`, the seeded, class-stratified split of indices into parts (the validation
  split carved out of the training images), and :func:`check_nonempty`, no split left empty.

torch, numpy and PIL are imported inside the functions, so importing this module imports none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from harness.data.base import SPLITS
from harness.errors import DataError
from harness.schema import Size

if TYPE_CHECKING:
    import torch

__all__ = [
    "PIXEL_BUDGET",
    "RootPath",
    "carve",
    "check_nonempty",
    "file_stats",
    "normalize",
    "read_image",
    "resize_normalize",
    "square",
]

PIXEL_BUDGET = 1 << 24  # resize at most this many pixels (per channel) at once


class RootPath:
    """What options with a ``root`` folder share (a dataclass mixin): a path object given as
    ``root`` is kept as its string, and ``path`` is the folder with ``~`` expanded."""

    root: str

    def __post_init__(self) -> None:
        if isinstance(self.root, os.PathLike):
            object.__setattr__(self, "root", os.fspath(self.root))
        super().__post_init__()

    @property
    def path(self) -> Path:
        return Path(self.root).expanduser()


def file_stats(paths) -> list[list]:
    """``[path, size, modification time in ns]`` of each file (None, None for one that is gone)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append([str(path), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(path), None, None])
    return out


def read_image(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 RGB, decoded with PIL."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except Exception as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def square(image: torch.Tensor, size: Size) -> torch.Tensor:
    """Centre-crop a (3, H, W) uint8 image to a square, resize it to rows x cols: float in [0, 1]."""
    import torch.nn.functional as F

    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = image[None, :, top : top + side, left : left + side].float().div_(255)
    if (side, side) != (size.rows, size.cols):
        x = F.interpolate(x, size=(size.rows, size.cols), mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp_(0, 1)


def resize_normalize(images: torch.Tensor, size: Size, mean, std, device: torch.device) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, rows, cols) float32 on device, resized (antialiased) and normalised,
    in chunks."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    rows, cols = size.rows, size.cols
    out = torch.empty((n, c, rows, cols), dtype=torch.float32, device=device)
    step = max(1, PIXEL_BUDGET // max(h * w, rows * cols))
    for start in range(0, n, step):
        x = images[start : start + step].to(device).float().div_(255)
        if (h, w) != (rows, cols):
            x = F.interpolate(x, size=(rows, cols), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + step] = normalize(x, mean, std)
    return out


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    import torch

    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def carve(labels: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Split indices at random into [rest, part_1, ...], part_i holding round(fraction_i * n).

    Stratified: each class gives each part its share, rounded by largest remainder so
    that the parts' totals come out right. Indices come back sorted.
    """
    import torch

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


def check_nonempty(labels: dict[str, torch.Tensor], where: str) -> None:
    for which in SPLITS:
        if labels[which].numel() == 0:
            raise DataError(f"the {which} split of {where} would be empty: use more images or a larger fraction")
