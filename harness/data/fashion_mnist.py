"""Fashion-MNIST, read offline from its four idx files with numpy (no download path).

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) holds 70,000 28 x 28 grey images of Zalando's
articles in 10 classes: 60,000 training images and 10,000 test images, 6,000 and 1,000 per
class. Debian's package ``dataset-fashion-mnist`` installs the four standard files, gzipped,
in ``/usr/share/datasets/fashion-mnist/`` (:data:`DEBIAN_ROOT`, the default ``root``); any
folder holding the same four files, gzipped or not, works as well.

The idx format (:func:`read_idx`): a magic number of four bytes, ``0x00 0x00``, the element
type (``0x08``: unsigned byte) and the number of dimensions (1 for the labels: magic
``0x00000801``; 3 for the images: ``0x00000803``), then each dimension as a big-endian 32-bit
count, then the elements in row-major order. A file that breaks any of it (a wrong magic
number, a body shorter or longer than its header's counts, a gzip stream cut short or not
gzip at all, images other than 28 x 28, labels outside 0..9, label and image counts that
differ) is one :class:`~harness.errors.DataError` naming the file.

Splits: the validation split is a seeded, class-stratified carve-out of ``num_val`` training
images; the training split is the rest, or a seeded, stratified subset of ``num_train`` of it
(to size a study for a CPU; the validation split does not change with it); the test split is
the official test set, or a stratified subset of ``num_test`` of it. Tuning never sees it.

Pixels are normalised with the training set's statistics, mean 0.2860 and std 0.3530
(:data:`MEAN`, :data:`STD`: the mean and standard deviation of all 47 million training
pixels, scaled to [0, 1], rounded to four places), so a pixel of 0 becomes
:data:`BACKGROUND` = -0.2860 / 0.3530, about -0.810.

Two regimes of resolution change:

``zoom``
    The whole 28 x 28 frame resized to rows x cols with an antialiased bilinear resize, as
    :mod:`harness.data.vision` does (stretched when rows != cols). At 28 px: the originals.
``canvas``
    The image at the training size (the zoom image at ``train_size``: the original at 28 px)
    pasted, pixel for pixel, on a canvas of rows x cols pixels of the background value.
    Fashion-MNIST's background is exactly 0: each product photo was trimmed to the article,
    its longer side resized to 28 px, centred in the frame and negated, so the article
    reaches the frame along its longer side (99.9% of the training images have pixels on
    the border) and is not cut there; what lay beyond the frame was the photo's background,
    0 once negated (the frame's corners are 0 in 99.98% of the images). A larger canvas of
    0 is thus a truthful larger field of view at the training pixel scale.

    Where the image sits: centred, ``top = (rows - train_size) // 2`` and ``left = (cols -
    train_size) // 2`` (the half pixel of an odd margin goes below and to the right). Not
    at a seeded random place: the articles are centred in their frames, so a centred canvas
    keeps the one thing training saw about position, and the one thing that changes is
    what the regime is about, more tokens at the same pixel scale, not a translation (which
    would also test translation invariance, a different question); it is deterministic and
    the same for every model. As for the rendered scenes. A study should pick canvas
    sizes whose margin ``(size - train_size) / 2`` is a multiple of the patch stride (28 px
    with 4 px patches: 36, 44, 52, 60, ...), so that the patches cut the image where they
    did in training; at another margin every patch holds other pixels than it did.

One channel (``in_chans`` = 1): the model's stem takes the dataset's channel count.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import numpy as np

from harness.config import option
from harness.data.base import DatasetOptions, ImageDataset, Split, SplitName, register_dataset
from harness.data.images import RootPath, carve, check_nonempty, normalize, resize_normalize
from harness.errors import DataError, os_reason
from harness.schema import Size

if TYPE_CHECKING:  # torch is imported when pixels are made, never to check the options
    import torch

__all__ = ["BACKGROUND", "CLASSES", "DEBIAN_ROOT", "FILES", "INSTALL", "MEAN", "STD", "FashionMNIST", "read_idx"]

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
INSTALL = "apt-get install dataset-fashion-mnist"
#: the four files of the standard release, per split: (images, labels), each gzipped (``.gz``) or not
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SIDE = 28  # pixels per side of every image
MEAN, STD = 0.2860, 0.3530
#: the normalised value of a pixel of 0, computed as every pixel is (float32): a canvas's background
#: the normalised background, (0 - MEAN) / STD in float32 (what normalize gives a pixel of 0)
BACKGROUND = float((np.float32(0.0) - np.float32(MEAN)) / np.float32(STD))

_MAGIC = {1: 0x00000801, 3: 0x00000803}  # idx of unsigned bytes: labels (1 dimension), images (3)
_UNSIGNED_BYTE = 0x08
_CHUNK = 1 << 20


@register_dataset("fashion_mnist")
class FashionMNIST(ImageDataset):
    """Fashion-MNIST: 70,000 28 x 28 grey images of clothes in 10 classes, offline from its idx files.

    Reads the four standard files (gzipped or not) from ``root``, by default Debian's
    ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``). Validation: a seeded,
    stratified ``num_val`` of the 60,000 training images; training: the rest (or a stratified
    ``num_train`` of it); test: the official 10,000 (or a stratified ``num_test``). Zoom
    (antialiased resize) or canvas (the training image, centred, on a background of 0).
    """

    regimes: ClassVar[tuple[str, ...]] = ("zoom", "canvas")
    in_chans = 1  # grey: the class says it, so a spec is checked (and a model sized) without building it

    @dataclass(frozen=True)
    class Options(RootPath, DatasetOptions):
        root: str = DEBIAN_ROOT  # the folder of the four idx files (``~`` expanded)
        num_val: int = option(6000, gt=0)  # carved out of the training images, stratified
        num_train: int | None = option(None, gt=0)  # a stratified subset of the rest (null: all of it)
        num_test: int | None = option(None, gt=0)  # a stratified subset of the test set (null: all of it)
        seed: int = 0  # of the carve-out and the subsets

    def __init__(self, options: Options) -> None:
        self.options = options
        self.root = options.path
        self.classes = list(CLASSES)
        self.num_classes = len(CLASSES)
        (train_x, train_y), (test_x, test_y) = (_read_pair(self.root, which) for which in ("train", "test"))
        n, n_test = len(train_y), len(test_y)
        if options.num_val >= n:
            raise DataError(f"fashion_mnist: dataset.num_val {options.num_val} leaves no training image "
                            f"(the training file in {self.root} holds {n})")
        if options.num_train is not None and options.num_val + options.num_train > n:
            raise DataError(f"fashion_mnist: dataset.num_train {options.num_train} is more than the "
                            f"{n - options.num_val} training images left beside dataset.num_val {options.num_val}")
        if options.num_test is not None and options.num_test > n_test:
            raise DataError(f"fashion_mnist: dataset.num_test {options.num_test} is more than the {n_test} "
                            f"test images in {self.root}")
        fractions = (options.num_val / n,) + (() if options.num_train is None else (options.num_train / n,))
        rest, val_idx, *subset = carve(train_y, fractions, options.seed)
        train_idx = subset[0] if subset else rest
        import torch

        test_idx = (torch.arange(n_test) if options.num_test is None
                    else carve(test_y, (options.num_test / n_test,), options.seed)[1])
        self._images = {"train": train_x[train_idx], "val": train_x[val_idx], "test": test_x[test_idx]}
        self._labels = {"train": train_y[train_idx], "val": train_y[val_idx], "test": test_y[test_idx]}
        check_nonempty(self._labels, f"fashion_mnist in {self.root}")

    def _load(self, which: SplitName, size: Size, device: torch.device) -> Split:
        images = resize_normalize(self._images[which], size, (MEAN,), (STD,), device)
        return Split(images, self._labels[which].to(device))

    def _load_canvas(self, which: SplitName, size: Size, train_size: int, device: torch.device) -> Split:
        import torch

        inner = self.split(which, train_size, device=device)  # the training images (cached)
        n = len(inner)
        top, left = (size.rows - train_size) // 2, (size.cols - train_size) // 2
        images = torch.full((n, self.in_chans, size.rows, size.cols), BACKGROUND, dtype=torch.float32, device=device)
        images[:, :, top : top + train_size, left : left + train_size] = inner.images
        return Split(images, inner.labels)

    @classmethod
    def example_options(cls, folder: Path) -> dict[str, Any]:
        """The real files when they are installed (a stratified few hundred images); else a
        small generated copy in ``folder`` (6 training and 3 test images per class)."""
        if all(_find(Path(DEBIAN_ROOT), name) for pair in FILES.values() for name in pair):
            return {"root": DEBIAN_ROOT, "num_val": 50, "num_train": 200, "num_test": 100, "seed": 0}
        rng = np.random.default_rng(0)
        for which, per_class in (("train", 6), ("test", 3)):
            labels = np.repeat(np.arange(len(CLASSES), dtype=np.uint8), per_class)
            images = np.zeros((len(labels), SIDE, SIDE), dtype=np.uint8)  # an article on a background of 0
            images[:, 4:24, 6:22] = rng.integers(1, 256, (len(labels), 20, 16), dtype=np.uint8)
            for array, name in zip((images, labels), FILES[which]):
                _write_idx(folder / f"{name}.gz", array)
        return {"root": str(folder), "num_val": 20, "seed": 0}


# ------------------------------------------------------------------------------ the idx files
def read_idx(path: Path | str, ndim: int) -> np.ndarray:
    """The array of idx file ``path`` (gzipped when its name ends in ``.gz``): unsigned bytes of
    ``ndim`` dimensions (1: labels, 3: images), shaped as its header says. A missing or
    unreadable file, a wrong magic number, a body shorter or longer than the header's counts,
    or a broken gzip stream is a :class:`DataError` naming the file."""
    path = Path(path)
    want = _MAGIC[ndim]
    try:
        with _open(path) as f:
            head = _read_up_to(f, 4)
            if len(head) < 4:
                raise _bad(path, f"truncated, {len(head)} bytes, shorter than the 4-byte magic number")
            magic = struct.unpack(">I", head)[0]
            if magic != want:
                kind = "labels" if ndim == 1 else "images"
                raise _bad(path, f"magic number 0x{magic:08x}, expected 0x{want:08x} (idx {kind} of unsigned bytes)")
            raw_dims = _read_up_to(f, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise _bad(path, f"truncated, the header ends before its {ndim} dimension count(s)")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            size = math.prod(dims)
            body = _read_up_to(f, size + 1)  # one byte more than the header counts: a body too long shows
    except OSError as exc:  # unreadable; or, reading, a .gz that is not gzip, a CRC mismatch
        if isinstance(exc, gzip.BadGzipFile):
            what = "not gzip data, despite its .gz name" if "Not a gzipped file" in str(exc) else f"broken gzip data: {exc}"
            raise _bad(path, what) from None
        raise DataError(f"fashion_mnist: cannot read {path}: {os_reason(exc)}") from None
    except EOFError:  # the gzip stream ends before its end-of-stream marker
        raise _bad(path, "truncated, the gzip stream ends early") from None
    except zlib.error as exc:
        raise _bad(path, f"broken gzip data: {exc}") from None
    shape = " x ".join(map(str, dims))
    if len(body) < size:
        raise _bad(path, f"truncated, its header counts {shape} bytes ({size:,}), it holds {len(body):,}")
    if len(body) > size:
        raise _bad(path, f"wrong count: it holds more than the {shape} bytes ({size:,}) its header counts")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_pair(root: Path, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (N, 1, 28, 28) uint8 and labels (N,) int64 of the ``which`` files in ``root``."""
    import torch

    if not root.is_dir():
        raise DataError(f"fashion_mnist: no folder {root} (dataset.root): install Debian's package "
                        f"({INSTALL}), or put the four idx files ({', '.join(n for p in FILES.values() for n in p)}, "
                        "gzipped or not) in a folder and set dataset.root to it")
    images_name, labels_name = FILES[which]
    paths = []
    for name in (images_name, labels_name):
        path = _find(root, name)
        if path is None:
            raise DataError(f"fashion_mnist: no {name}.gz (or {name}) in {root}: install Debian's package "
                            f"({INSTALL}), or put the file there")
        paths.append(path)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if images.shape[1:] != (SIDE, SIDE):
        raise _bad(paths[0], f"images of {images.shape[1]} x {images.shape[2]} px, expected {SIDE} x {SIDE}")
    if len(images) != len(labels):
        raise DataError(f"fashion_mnist: {paths[0]} holds {len(images):,} images but {paths[1]} holds "
                        f"{len(labels):,} labels: the files do not belong together")
    if labels.size and labels.max() >= len(CLASSES):
        raise _bad(paths[1], f"label {int(labels.max())}, outside 0..{len(CLASSES) - 1}")
    return (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _find(root: Path, name: str) -> Path | None:
    """``root/name``, else ``root/name.gz``, whichever is a file (None: neither)."""
    return next((p for p in (root / name, root / f"{name}.gz") if p.is_file()), None)


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def _read_up_to(f: BinaryIO, n: int) -> bytes:
    """At most ``n`` bytes of ``f``, read in chunks (a header's count never allocates more than
    the file holds)."""
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(_CHUNK, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _bad(path: Path, why: str) -> DataError:
    return DataError(f"fashion_mnist: {path} is not a valid idx file: {why} (reinstall it: "
                     f"apt-get install --reinstall dataset-fashion-mnist; or replace it)")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 ``array`` (1 or 3 dimensions) as an idx file, gzipped when ``path`` ends in ``.gz``."""
    data = struct.pack(f">I{array.ndim}I", _MAGIC[array.ndim], *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
