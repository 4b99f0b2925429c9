"""One split of a dataset at one image size: :class:`Split`, whole tensors on one device.

Its own module so that what stores splits (:mod:`harness.data.cache`) builds on it without
building on the dataset interface (:mod:`harness.data.base`), which uses the store: no module
imports back. :mod:`harness.data.base` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a split is made, never to check a dataset's options
    import torch

__all__ = ["Split"]


@dataclass
class Split:
    """One split at one image size: whole tensors on one device."""

    images: torch.Tensor  # (N, C, rows, cols) float32, normalised
    labels: torch.Tensor  # (N,) int64, same device

    def __len__(self) -> int:
        return int(self.labels.shape[0])
