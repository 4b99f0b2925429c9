"""The scenes of the embedded dataset, sampled: :class:`Scenes` (the continuous parameters of n
scenes and their labels), :func:`sample_scenes` and each task's sampler, with the sampling ranges.

What the tasks are, their classes and why a bag of patches cannot beat chance on the positional
ones is told in :mod:`harness.data.rendered`, which renders these scenes at any size and regime
(and re-exports :class:`Scenes`, :func:`sample_scenes` and :func:`num_classes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.data.base import integer, positive_integer
from harness.data.tasks import CLASS_NAMES, TASKS
from harness.data.shapes import EXTENT, NUM_SHAPES
from harness.errors import DataError, did_you_mean

__all__ = ["Scenes", "num_classes", "sample_scenes"]

# Sampling ranges.
_SMALL = (0.085, 0.108)  # bounding-disc radius of the objects of relational and absolute
_LARGE = (0.15, 0.22)  # bounding-disc radius of the object of shape
_MARGIN = 0.03  # minimum gap between an object's bounding disc and the border (or a midline)
_EDGE_SMALL = _SMALL[1] + _MARGIN  # nearest a small object's centre gets to the border
_REL_JITTER = 0.03  # relational: half-width of the jitter of the offset along and across its axis
_TINY = (0.06, 0.08)  # bounding-disc radius of the objects of relational8
_EDGE_TINY = _TINY[1] + _MARGIN
_DISTRACTORS = (2, 4)  # relational8: fewest and most distractors
_DISTRACTOR_HUES = (45.0, 180.0)  # relational8: distractor hues in degrees (yellow, green, cyan)
# relational8: the direction (dx, dy) of B from A per class, in half image sides (y down)
_DIRECTIONS = ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))
_NUM_WAVES = 3


@dataclass(frozen=True, eq=False)
class Scenes:
    """Continuous parameters of n scenes (CPU tensors) and their labels.

    Objects sit in m slots, drawn in slot order (later slots on top); `present`
    masks slots that are empty in a scene. Coordinates are normalised to [0, 1]
    with x to the right and y downwards.
    """

    task: str
    centers: torch.Tensor  # (n, m, 2) float32, (x, y) of each object's centre
    sizes: torch.Tensor  # (n, m) float32, area-equivalent radius
    shapes: torch.Tensor  # (n, m) int64, index into CLASS_NAMES["shape"]
    angles: torch.Tensor  # (n, m) float32, rotation in radians
    colors: torch.Tensor  # (n, m, 3) float32 RGB in [0, 1]
    present: torch.Tensor  # (n, m) bool
    background: torch.Tensor  # (n, 3) float32 RGB base colour
    wave_freqs: torch.Tensor  # (n, w, 2) float32, cycles per image along x and y
    wave_phases: torch.Tensor  # (n, w) float32, radians
    wave_amps: torch.Tensor  # (n, w, 3) float32, RGB amplitude of each wave
    labels: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def num_classes(task: str) -> int:
    """Number of classes of a task."""
    return len(CLASS_NAMES[_check_task(task)])


def sample_scenes(task: str, n: int, seed: int) -> Scenes:
    """Sample n scenes of a task; the same (task, n, seed) gives bitwise the same scenes."""
    task = _check_task(task)
    n = positive_integer(n, "number of scenes")
    g = torch.Generator(device="cpu")
    g.manual_seed(integer(seed, "seed"))
    return _SAMPLERS[task](n, g)


# ----------------------------------------------------------------------------- sampling


def _uniform(g: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def _balanced_labels(g: torch.Generator, n: int, k: int) -> torch.Tensor:
    return (torch.arange(n) % k)[torch.randperm(n, generator=g)]


def _background(g: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    grey = _uniform(g, (n, 1), 0.4, 0.6)
    base = grey + _uniform(g, (n, 3), -0.04, 0.04)
    cycles = _uniform(g, (n, _NUM_WAVES), 0.5, 2.0)
    direction = _uniform(g, (n, _NUM_WAVES), 0.0, 2 * math.pi)
    freqs = torch.stack([cycles * torch.cos(direction), cycles * torch.sin(direction)], dim=-1)
    phases = _uniform(g, (n, _NUM_WAVES), 0.0, 2 * math.pi)
    amps = _uniform(g, (n, _NUM_WAVES, 1), -0.06, 0.06) + _uniform(g, (n, _NUM_WAVES, 3), -0.02, 0.02)
    return {"background": base, "wave_freqs": freqs, "wave_phases": phases, "wave_amps": amps}


def _red(g: torch.Generator, shape) -> torch.Tensor:
    return torch.stack(
        [_uniform(g, shape, 0.75, 0.95), _uniform(g, shape, 0.05, 0.3), _uniform(g, shape, 0.05, 0.3)], dim=-1
    )


def _blue(g: torch.Generator, shape) -> torch.Tensor:
    return torch.stack(
        [_uniform(g, shape, 0.05, 0.3), _uniform(g, shape, 0.15, 0.4), _uniform(g, shape, 0.75, 0.95)], dim=-1
    )


def _bright(g: torch.Generator, shape, hues: tuple[float, float] = (0.0, 360.0)) -> torch.Tensor:
    """Bright colours with a hue in ``hues`` (degrees; any by default): HSV with saturation 0.5
    to 0.9 and value 0.85 to 1."""
    hue = _uniform(g, (*shape, 1), hues[0] / 60, hues[1] / 60)
    saturation = _uniform(g, (*shape, 1), 0.5, 0.9)
    value = _uniform(g, (*shape, 1), 0.85, 1.0)
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]) + hue, 6.0)
    return value - value * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _objects(g: torch.Generator, n: int, m: int, radius_range: tuple[float, float]) -> dict[str, torch.Tensor]:
    """Random shapes, rotations and sizes, the size set by the bounding-disc radius."""
    shapes = torch.randint(0, NUM_SHAPES, (n, m), generator=g)
    radii = _uniform(g, (n, m), *radius_range)
    return {
        "shapes": shapes,
        "sizes": radii / torch.tensor(EXTENT)[shapes],
        "angles": _uniform(g, (n, m), 0.0, 2 * math.pi),
    }


def _sample_relational(n: int, g: torch.Generator) -> Scenes:
    labels = _balanced_labels(g, n, 4)  # left, right, above, below
    objects = _objects(g, n, 2, _SMALL)
    colors = torch.stack([_red(g, (n,)), _blue(g, (n,))], dim=1)
    low, high = _EDGE_SMALL, 1 - _EDGE_SMALL  # range of centres
    jitter = _REL_JITTER
    # A's coordinates: t + 0.5 k, t drawn alike on both axes; along the offset's axis
    # k puts A on the side that leaves room for B, across it k is random.
    t = _uniform(g, (n, 2), low + jitter, high - 0.5 - jitter)
    k = torch.randint(0, 2, (n, 2), generator=g).float()
    v, mu = _uniform(g, (2, n), -jitter, jitter)  # major and minor jitter, alike
    horizontal = labels < 2
    toward = torch.where((labels == 0) | (labels == 2), -1.0, 1.0)  # B is left of / above A: -1
    major_axis = torch.stack([horizontal, ~horizontal], dim=-1)  # (n, 2) one-hot
    k = torch.where(major_axis, (toward < 0).float()[:, None], k)
    a = t + 0.5 * k
    major = toward * (0.5 + v)
    offset = torch.where(major_axis, major[:, None], mu[:, None])  # (n, 2): B - A
    return Scenes(
        task="relational",
        centers=torch.stack([a, a + offset], dim=1),
        colors=colors,
        present=torch.ones(n, 2, dtype=torch.bool),
        labels=labels,
        **objects,
        **_background(g, n),
    )


def _sample_absolute(n: int, g: torch.Generator) -> Scenes:
    labels = _balanced_labels(g, n, 4)  # 2 * row + column
    objects = _objects(g, n, 3, _SMALL)  # slots 0, 1: distractors; slot 2: target, on top
    # Every object's centre is t + 0.5 k, t drawn alike for all: k = (column, row) of
    # the target's quadrant, random for the distractors.
    t = _uniform(g, (n, 3, 2), _EDGE_SMALL, 0.5 - _EDGE_SMALL)
    k = torch.randint(0, 2, (n, 3, 2), generator=g)
    k[:, 2] = torch.stack([labels % 2, labels // 2], dim=-1)
    centers = t + 0.5 * k.float()
    present = torch.arange(3) < torch.randint(0, 3, (n, 1), generator=g)  # 0 to 2 distractors...
    present = torch.cat([present[:, :2], torch.ones(n, 1, dtype=torch.bool)], dim=1)  # ...and the target
    colors = torch.cat([_blue(g, (n, 2)), _red(g, (n, 1))], dim=1)
    return Scenes(
        task="absolute",
        centers=centers,
        colors=colors,
        present=present,
        labels=labels,
        **objects,
        **_background(g, n),
    )


def _sample_shape(n: int, g: torch.Generator) -> Scenes:
    labels = _balanced_labels(g, n, NUM_SHAPES)
    shapes = labels[:, None].clone()
    objects = {
        "shapes": shapes,
        "sizes": _uniform(g, (n, 1), *_LARGE) / torch.tensor(EXTENT)[shapes],
        "angles": _uniform(g, (n, 1), 0.0, 2 * math.pi),
    }
    edge = _LARGE[1] + _MARGIN
    return Scenes(
        task="shape",
        centers=_uniform(g, (n, 1, 2), edge, 1 - edge),
        colors=_bright(g, (n, 1)),
        present=torch.ones(n, 1, dtype=torch.bool),
        labels=labels,
        **objects,
        **_background(g, n),
    )


def _sample_relational8(n: int, g: torch.Generator) -> Scenes:
    labels = _balanced_labels(g, n, len(_DIRECTIONS))
    m = _DISTRACTORS[1]
    objects = _objects(g, n, m + 2, _TINY)  # slots 0..m-1: distractors; m: A (red); m + 1: B (blue), on top
    low, high = _EDGE_TINY, 1 - _EDGE_TINY  # range of centres
    jitter = _REL_JITTER
    d = torch.tensor(_DIRECTIONS, dtype=torch.float32)[labels]  # (n, 2), entries -1, 0, 1
    # Every centre is t + 0.5 k per axis, t drawn from one law for every class. A: along an
    # axis where B is offset, k puts A on the side that leaves room for B; elsewhere k is random.
    t = _uniform(g, (n, 2), low + jitter, high - 0.5 - jitter)
    k = torch.randint(0, 2, (n, 2), generator=g).float()
    k = torch.where(d != 0, (d < 0).float(), k)
    a = t + 0.5 * k
    b = a + 0.5 * d + _uniform(g, (n, 2), -jitter, jitter)  # the same jitter law on both axes
    distractors = _uniform(g, (n, m, 2), low, high - 0.5) + 0.5 * torch.randint(0, 2, (n, m, 2), generator=g)
    count = torch.randint(_DISTRACTORS[0], m + 1, (n, 1), generator=g)
    present = torch.cat([torch.arange(m) < count, torch.ones(n, 2, dtype=torch.bool)], dim=1)
    colors = torch.cat([_bright(g, (n, m), _DISTRACTOR_HUES), _red(g, (n, 1)), _blue(g, (n, 1))], dim=1)
    return Scenes(
        task="relational8",
        centers=torch.cat([distractors, a[:, None], b[:, None]], dim=1),
        colors=colors,
        present=present,
        labels=labels,
        **objects,
        **_background(g, n),
    )


_SAMPLERS = {"relational": _sample_relational, "absolute": _sample_absolute, "shape": _sample_shape,
             "relational8": _sample_relational8}


# ------------------------------------------------------------------------------ checks


def _check_task(task: object) -> str:
    if task in TASKS:
        return task  # type: ignore[return-value]
    raise DataError(f"unknown rendered task {task!r}: expected one of {', '.join(TASKS)}{did_you_mean(task, TASKS)}")
