"""Datasets behind one interface: ``ImageDataset.split(which, size, device, regime, train_size)``.

Every dataset gives three disjoint splits, "train", "val" (for tuning) and "test"
(never seen by tuning), as whole tensors at any size (``32`` or rows x cols), already
normalised and on the asked device, so training never waits for a loader. A split comes in
a regime of resolution change (``REGIMES``): ``zoom`` (every dataset: the training frame at
more or fewer pixels) or ``canvas`` (the rendered scenes and Fashion-MNIST: the training pixel scale on a
larger image); ``check_regime`` refuses what a dataset cannot give. ``chance`` is
1 / ``num_classes``. Each is a
registered class that owns its options (``Options``, checked once) and is built from them
(see ``harness.data.base``):

- ``rendered`` (:class:`RenderedDataset`, ``harness.data.embedded``): the embedded, procedurally
  rendered scenes of ``harness.data.rendered``, rendered natively at each size (no
  resampling), zoom or canvas.
- ``cifar10``, ``cifar100`` (:class:`CIFAR10`, :class:`CIFAR100`): from a local root,
  resized with an antialiased resize.
- ``imagefolder`` (:class:`ImageFolderData`): a small ImageFolder tree (Imagenette-sized), likewise.
- ``fashion_mnist`` (:class:`FashionMNIST`): Fashion-MNIST's four idx files, read offline (by
  default from Debian's ``dataset-fashion-mnist``), one channel, zoom or canvas.

``load_dataset(name, options, cache)`` builds one for a study (once per process; with a
``cache`` folder its splits are kept on disk too, made once for all of a study's processes:
``harness.data.cache``);
``build_dataset(name, **options)`` builds one from keyword options. A new dataset is one
file: a subclass of :class:`ImageDataset` decorated with ``@register_dataset("name")``;
``harness.data.conformance`` holds the checks every dataset passes.

Importing the package imports no torch: the built-in classes and their options are checked
without it (a study spec); torch comes with the first dataset built.
"""

from __future__ import annotations

from harness.data.base import (
    DATASETS,
    REGIMES,
    DatasetOptions,
    DatasetOptionsError,
    ImageDataset,
    Split,
    build_dataset,
    check_regime,
    image_size,
    load_dataset,
    register_dataset,
)
from harness.data.embedded import RenderedDataset
from harness.data.vision import CIFAR, CIFAR10, CIFAR100, ImageFolderData
from harness.data.fashion_mnist import FashionMNIST

__all__ = [
    "CIFAR",
    "CIFAR10",
    "CIFAR100",
    "DATASETS",
    "REGIMES",
    "DatasetOptions",
    "DatasetOptionsError",
    "FashionMNIST",
    "ImageDataset",
    "ImageFolderData",
    "RenderedDataset",
    "Split",
    "build_dataset",
    "check_regime",
    "image_size",
    "load_dataset",
    "register_dataset",
]
