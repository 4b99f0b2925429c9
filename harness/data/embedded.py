"""The embedded dataset ``rendered``: its options and its class, without torch (its tasks are
:mod:`harness.data.tasks`, re-exported here).

A study spec names a task and the split sizes; checking them needs no image. The scenes
are sampled and rendered by :mod:`harness.data.rendered` (torch), imported when a dataset is
built; its docstring describes the scenes, the tasks and the two regimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import option
from harness.data.base import SPLITS, DatasetOptions, ImageDataset, Split, SplitName, register_dataset
from harness.data.tasks import CLASS_NAMES, RENDERED_REGIMES, TASKS, Task
from harness.schema import Size

if TYPE_CHECKING:
    import torch

__all__ = ["CLASS_NAMES", "TASKS", "RenderedDataset", "Task"]


@register_dataset("rendered")
class RenderedDataset(ImageDataset):
    """The embedded, procedurally rendered scenes: one task, rendered natively at any size, zoom or canvas.

    The train, val and test scenes are sampled once, from three seeds derived from
    ``seed``, and rendered natively at whatever size a split is asked at: in the zoom regime
    the scene's unit square fills the image; in the canvas regime it keeps the training pixel
    scale, centred on a larger image whose background extends the scene's
    (:func:`harness.data.rendered.pixel_grid`).
    Images are normalised with mean 0.5 and standard deviation 0.25 per channel.
    """

    regimes = RENDERED_REGIMES

    @dataclass(frozen=True)
    class Options(DatasetOptions):
        task: Task = "relational"
        num_train: int = option(4000, gt=0)  # scenes per split
        num_val: int = option(500, gt=0)
        num_test: int = option(1000, gt=0)
        seed: int = 0  # the scenes of every split derive from it

    def __init__(self, options: Options) -> None:
        from harness.data.rendered import sample_scenes  # torch: only when the dataset is built

        self.options = options
        self.task = options.task
        self.name = f"rendered-{self.task}"
        self.num_classes = len(CLASS_NAMES[self.task])
        self.in_chans = 3
        self.classes = list(CLASS_NAMES[self.task])
        counts = {"train": options.num_train, "val": options.num_val, "test": options.num_test}
        self.scenes = {
            which: sample_scenes(self.task, n, _derive_seed(options.seed, which)) for which, n in counts.items()
        }

    def _load(self, which: SplitName, size: Size, device: torch.device) -> Split:
        from harness.data.rendered import render

        scenes = self.scenes[which]
        return Split(render(scenes, size, device=device), scenes.labels.to(device))

    def _load_canvas(self, which: SplitName, size: Size, train_size: int, device: torch.device) -> Split:
        from harness.data.rendered import render

        scenes = self.scenes[which]
        images = render(scenes, size, regime="canvas", train_size=train_size, device=device)
        return Split(images, scenes.labels.to(device))

    @classmethod
    def example_options(cls, folder: Path) -> dict[str, Any]:
        return {"task": "absolute", "num_train": 48, "num_val": 16, "num_test": 16, "seed": 1}


def _derive_seed(seed: int, which: str) -> int:
    """A distinct, stable 63-bit seed per (seed, split); stable across runs and platforms."""
    offset = SPLITS.index(which) + 1
    return (seed * 0x9E3779B97F4A7C15 + offset * 0xBF58476D1CE4E5B9) % (1 << 63)
