# my_dataset.py
from dataclasses import dataclass
from pathlib import Path

import torch
from harness.config import Invalid, option
from harness.data import DatasetOptions, ImageDataset, Split, register_dataset


@register_dataset("diagonal")
class Diagonal(ImageDataset):
    """A bright dot above or below the image's diagonal: 2 classes only its position tells apart."""

    classes = ["below", "above"]       # class names, in label order
    num_classes = 2
    in_chans = 1

    @dataclass(frozen=True)
    class Options(DatasetOptions):     # typed options with defaults, checked once (errors: dataset.<key>)
        num_train: int = option(2000, gt=0)
        num_val: int = option(500, gt=0)
        num_test: int = option(500, gt=0)
        radius: float = option(0.08, gt=0)   # of the dot, as a fraction of the image side
        seed: int = 0

        def validate(self):            # rules that tie fields together, or need more than a bound
            if self.radius >= 0.25:
                raise Invalid("radius", "must be below 0.25 (a dot must fit on either side of the diagonal)")

    def __init__(self, options: Options):
        self.options = options
        g = torch.Generator().manual_seed(options.seed)
        lo, hi, gap = options.radius, 1 - options.radius, 2 * options.radius
        self.centres, self.labels = {}, {}
        for which, n in (("train", options.num_train), ("val", options.num_val), ("test", options.num_test)):
            labels = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]       # balanced classes
            a = lo + (hi - gap - lo) * torch.rand(n, generator=g)
            b = a + gap + (hi - a - gap) * torch.rand(n, generator=g)           # a < b: (a, b) lies below
            above = labels == 1                                                 # (y grows downwards)
            self.centres[which] = torch.stack([torch.where(above, b, a), torch.where(above, a, b)], dim=1)
            self.labels[which] = labels

    def _load(self, which, size, device):          # rendered natively at any size.rows x size.cols
        cy = (torch.arange(size.rows, dtype=torch.float32) + 0.5) / size.rows        # pixel centres
        cx = (torch.arange(size.cols, dtype=torch.float32) + 0.5) / size.cols        # (the unit square, stretched)
        x, y = self.centres[which].T[:, :, None, None]                                  # (2, N, 1, 1)
        d2 = (cx.view(1, 1, -1) - x) ** 2 + (cy.view(1, -1, 1) - y) ** 2
        images = torch.exp(-d2 / (2 * (self.options.radius / 2) ** 2))                # (N, rows, cols) in [0, 1]
        return Split(((images - 0.5) / 0.25)[:, None].to(device), self.labels[which].to(device))

    @classmethod
    def example_options(cls, folder: Path):      # a small instance for the conformance kit
        return {"num_train": 40, "num_val": 10, "num_test": 10}
