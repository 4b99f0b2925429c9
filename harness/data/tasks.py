"""The tasks of the embedded dataset ``rendered``: their names, their class names and the
regimes the scenes come in. Torch-free, and its own module so that the dataset class
(:mod:`harness.data.embedded`), the scenes (:mod:`harness.data.scenes`) and the renderer
(:mod:`harness.data.rendered`) share them without importing each other back: the class
builds on the scenes and the renderer, which build on this. The tasks are described in
:mod:`harness.data.rendered`.
"""

from __future__ import annotations

import typing
from typing import Literal

__all__ = ["CLASS_NAMES", "RENDERED_REGIMES", "TASKS", "Task"]

Task = Literal["relational", "absolute", "shape", "relational8"]
TASKS: tuple[str, ...] = typing.get_args(Task)

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "relational": ("left", "right", "above", "below"),
    "absolute": ("top-left", "top-right", "bottom-left", "bottom-right"),
    "shape": ("disc", "square", "triangle", "cross"),
    "relational8": ("right", "above right", "above", "above left", "left", "below left", "below", "below right"),
}

#: the regimes of resolution change the scenes are rendered in (both)
RENDERED_REGIMES: tuple[str, ...] = ("zoom", "canvas")
