"""The scenes of the embedded dataset: procedurally rendered scenes whose labels depend on position.

A scene is a handful of continuous parameters in normalised image coordinates
(x to the right, y downwards, both in [0, 1]): a smooth background and one to six
objects. `render` evaluates the scene on the pixel-centre grid of any size, so
the same scene at 16, 32 or 64 pixels shows the same picture with fewer or more
pixels, with no resampling. Objects are signed-distance functions with a linear
anti-aliased edge one pixel wide, so their coverage is smooth at every resolution.

Two regimes of resolution change (`pixel_grid` gives the pixel centres of each), both a
pure function of the scene parameters and the size; training images are the same in both:

``zoom``
    The scene's unit square fills the image: at R x R the same scene at more or fewer
    pixels, so every offset in patches scales with R. At rows x cols (rows != cols) the unit
    square is stretched to the image, x by cols and y by rows pixels: objects become
    anisotropic and an offset in patches grows by cols / train along x and rows / train
    along y (the edge ramp is one pixel along the coarser axis).
``canvas``
    The training pixel scale (``train_size`` pixels per unit along both axes) on a larger
    image, rows and cols each at least ``train_size``: objects, offsets and background
    frequencies keep their size in pixels and the field of view grows. The scene's unit
    square is centred on the canvas, and the background's plane waves are evaluated over
    the whole canvas, so nothing marks where the training frame was (objects all lie in
    it, as they did in training). Centred rather than at a random offset: the canvas
    keeps the image's midlines, so ``absolute`` keeps its labels (the quadrant of the scene
    is the quadrant of the canvas), the test is deterministic, and the one thing that
    changes is what the regime is about, more tokens at the same pixel scale, not a
    translation of the scene. A canvas of the training size is the training image.

Tasks (`TASKS`), all with exactly balanced classes:

``relational`` (4 classes: left, right, above, below)
    A red object A and a blue object B of random shapes, rotations and sizes
    (bounding-disc radius 0.085 to 0.108 of the side). The label is where B lies
    relative to A, by the dominant axis of the offset B - A ("above" means a smaller
    y, higher in the image). Along that axis the offset is 0.5 +- 0.03 of the image
    side, across it at most 0.03, so the axis is never in doubt (within 4 degrees),
    and the objects' bounding discs are more than 1/4 of the image side apart: no
    patch of side up to 1/4 of the image holds pixels of both.
``absolute`` (4 classes: top-left, top-right, bottom-left, bottom-right)
    A red target object and zero to two blue distractors. The label is the quadrant
    of the target's centre. Every object's bounding disc keeps 0.03 of the image side
    away from the midlines and the border, so the quadrant is never in doubt; size,
    shape and colour are drawn independently of the label.
``shape`` (4 classes: disc, square, triangle, cross)
    One object of random bright colour (any hue), rotation, size and position; the
    label is its shape. Sizes are drawn as the radius of the bounding disc (0.15 to
    0.22 of the side), so how much of that disc a shape fills is part of its look.
    A position-free control: a bag of patches learns it.
``relational8`` (8 classes: right, above right, above, above left, left, below left,
below, below right)
    The harder relational task, with headroom: a red A and a blue B, smaller (bounding
    disc 0.06 to 0.08 of the side: 2 to 2.6 px at 32 px, about one 4 px patch), among two
    to four distractors of random shapes in other hues (yellow to cyan, 45 to 180 degrees),
    drawn under A and B. The label is the direction of B from A among the eight compass
    directions: the offset B - A is 0.5 (dx, dy) of the side with dx, dy in {-1, 0, 1},
    not both 0, plus a jitter uniform in +-0.03 on both axes alike, so the direction is
    never in doubt, and the targets' bounding discs are more than 1/4 of the side apart.
    A model must find two small objects among others of the same shapes and sizes and
    compare both of their coordinates.
    Measured with the tests' tiny ViT (dim 32, depth 2, 4 px patches, 4096 scenes, lr 3e-3,
    5 epochs at 32 px): none stays at 0.125-0.145 of validation accuracy (chance 0.125),
    rope_axial reaches 0.14, 0.36, 0.88, 0.95, 0.96 by epoch; sincos2d sits at 0.49 after
    5 epochs. The original ``relational`` task stays as it was (the same scenes, bit for bit).

A model without positional information (a bag of patches) cannot beat chance on
relational, relational8 and absolute when the patch grid has an even number of patches
per side (4 px patches at 16, 24, 32, 48, 64 px, ...). Every object centre is t + 0.5 k
per axis, with t drawn from one law for every class and the class choosing only the half
k of the image; for relational and relational8, the offset's jitter along and across its
axis is drawn alike and symmetric about 0, and relational8's distractors take k at random.
So the positions of all objects modulo half the side, their shapes, sizes, colours and
the background have one law for every class, and two classes differ only by which halves
the objects lie in: moving an object by half the side is, on an even grid, a move by a
whole number of patches, which changes where its patch is and not what it holds (up to
the background under it, whose law is the same everywhere: the waves' phases are uniform).
A bag of patches sees the multiset of patches only, so it sees no class. Swapping the left and right (or top and bottom)
halves of the image maps the scenes of one class to those of another with the same
law, and on an even grid that swap only permutes patches, keeping where each object
sits inside its patch; for relational, transposing the image relates the horizontal
and vertical classes, and since both axes are drawn alike each class's bag of patches
has the same law transposed. On an odd grid the half swap shifts objects by half a
patch, and a bag of patches does beat chance (4 px patches: relational 97% at 12 px,
63% at 20 px), so compare position-free baselines on even grids. A model that can
reassemble the patches like a jigsaw from the continuity of the background could in
principle still recover positions. The same holds in the canvas regime around an even
training grid: the half-side shifts are ``train_size / 2`` pixels wherever the scene sits.

Nuisance shared by all tasks, all resolution-independent: a grey background with a
slight random tint plus three low-frequency plane waves (0.5 to 2 cycles per image,
random direction and phase, mostly grey amplitude), random object colours within a
class-independent range, random rotations and sizes. Shapes are defined by their
area-equivalent radius s (area pi s^2), which `Scenes.sizes` holds.

`render` returns images normalised per channel with mean `MEAN` = 0.5 and standard
deviation `STD` = 0.25, i.e. ``(x - 0.5) / 0.25`` for pixel values x in [0, 1].

`RenderedDataset`, registered as the dataset ``rendered`` (:mod:`harness.data.embedded`,
torch-free with its options and tasks, so a spec is checked without torch), samples one task's
train, val and test scenes here and renders each split natively at whatever resolution it is
asked at. The sampling itself (:class:`Scenes`, :func:`sample_scenes`, each task's sampler and
its ranges) is :mod:`harness.data.scenes`, re-exported here; this module renders. The tasks'
names and class names are :mod:`harness.data.tasks`, also re-exported.
"""

from __future__ import annotations

import math
from dataclasses import fields

import torch

from harness.data.base import check_regime, integer, positive_integer
from harness.data.scenes import Scenes, num_classes, sample_scenes
from harness.data.shapes import DISC, SDFS
from harness.data.tasks import CLASS_NAMES, RENDERED_REGIMES, TASKS
from harness.schema import Size

__all__ = ["TASKS", "CLASS_NAMES", "MEAN", "STD", "Scenes", "num_classes", "pixel_grid", "render", "sample_scenes"]

MEAN = 0.5  # per-channel normalisation of rendered images: (x - MEAN) / STD
STD = 0.25


class _Rendered:
    """What :func:`check_regime` reads of the dataset ``rendered`` (its name, its regimes, its
    note), for a render asked for without it: its class (:mod:`harness.data.embedded`) builds on
    this module, which does not import it back. A test checks the two agree."""

    name = "rendered"
    regimes = RENDERED_REGIMES
    regime_note = ""


_PIXEL_BUDGET = 1 << 24  # render at most this many pixels (per channel) at once


def render(
    scenes: Scenes,
    size: "int | Size | tuple[int, int] | str",
    *,
    regime: str = "zoom",
    train_size: int | None = None,
    device: str | torch.device = "cpu",
    chunk: int = 4096,
    normalize: bool = True,
) -> torch.Tensor:
    """Render scenes natively at ``size`` (``R`` for R x R, or rows x cols) on ``device``.

    ``regime`` ``"zoom"``: the scene's unit square on the whole image; ``"canvas"``: the scene
    at ``train_size`` pixels per unit, centred on the larger image, its background extended
    (see :func:`pixel_grid`). Returns a (n, 3, rows, cols) float32 tensor, normalised with
    `MEAN` and `STD` (raw values in [0, 1] with ``normalize=False``). Scenes are rendered
    `chunk` at a time, and never more than 2**24 pixels per channel at once, to bound memory.
    """
    chunk = positive_integer(chunk, "chunk")
    dev = torch.device(device)
    xs, ys, scale = pixel_grid(size, regime=regime, train_size=train_size, device=dev)
    rows, cols = ys.numel(), xs.numel()
    n = len(scenes)
    out = torch.empty((n, 3, rows, cols), dtype=torch.float32, device=dev)
    step = max(1, min(chunk, _PIXEL_BUDGET // (rows * cols)))
    for start in range(0, n, step):
        params = {
            f.name: getattr(scenes, f.name)[start : start + step].to(dev)
            for f in fields(scenes)
            if f.name not in ("task", "labels")
        }
        out[start : start + step] = _render_chunk(xs, ys, scale, **params)
    if normalize:
        out.sub_(MEAN).div_(STD)
    return out


def pixel_grid(
    size: "int | Size | tuple[int, int] | str",
    *,
    regime: str = "zoom",
    train_size: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Where the pixel centres of an image of ``size`` lie in scene coordinates: ``(xs, ys,
    pixels_per_unit)``, xs (cols,) and ys (rows,) float32, and the scale of the objects'
    one-pixel anti-aliased edge.

    - ``zoom``: the unit square stretched over rows x cols, ``xs = (j + 1/2) / cols`` and
      ``ys = (i + 1/2) / rows``; the edge ramp is one pixel along the coarser axis
      (``min(rows, cols)`` pixels per unit).
    - ``canvas``: ``train_size`` pixels per unit along both axes, the unit square centred:
      ``xs = (j + 1/2 - (cols - train_size) / 2) / train_size``, likewise ``ys``. At
      ``size == train_size`` this is the zoom grid, value for value.
    """
    checked = check_regime(_Rendered, regime, size, train_size)
    rows, cols = checked.rows, checked.cols
    dev = torch.device(device)
    if regime == "zoom":
        xs = (torch.arange(cols, dtype=torch.float32, device=dev) + 0.5) / cols
        ys = (torch.arange(rows, dtype=torch.float32, device=dev) + 0.5) / rows
        return xs, ys, min(rows, cols)
    train = integer(train_size, "train_size")
    xs = (torch.arange(cols, dtype=torch.float32, device=dev) + (0.5 - (cols - train) / 2)) / train
    ys = (torch.arange(rows, dtype=torch.float32, device=dev) + (0.5 - (rows - train) / 2)) / train
    return xs, ys, train


# ---------------------------------------------------------------------------- rendering
def _render_chunk(
    xs: torch.Tensor,
    ys: torch.Tensor,
    scale: float,
    *,
    centers,
    sizes,
    shapes,
    angles,
    colors,
    present,
    background,
    wave_freqs,
    wave_phases,
    wave_amps,
) -> torch.Tensor:
    b = centers.shape[0]
    two_pi = 2 * math.pi
    # Background: base + sum_k amp_k sin(2 pi (fx x + fy y) + phase), separated as
    # sin(a + c) = sin(a) cos(c) + cos(a) sin(c) with a along x and c along y.
    a = two_pi * wave_freqs[..., 0, None] * xs + wave_phases[..., None]  # (b, w, C) along x
    c = two_pi * wave_freqs[..., 1, None] * ys  # (b, w, R) along y
    along_y = torch.cat([torch.cos(c), torch.sin(c)], dim=1)  # (b, 2w, R)
    along_x = torch.cat([torch.sin(a), torch.cos(a)], dim=1)  # (b, 2w, C)
    amps = torch.cat([wave_amps, wave_amps], dim=1).transpose(1, 2)  # (b, 3, 2w)
    weighted_y = (amps[..., None] * along_y[:, None]).transpose(-1, -2)  # (b, 3, R, 2w)
    img = background[:, :, None, None] + weighted_y @ along_x[:, None]  # (b, 3, R, C)

    rows, cols = ys.numel(), xs.numel()
    x = xs.view(1, 1, cols)
    y = ys.view(1, rows, 1)
    sdf = torch.empty((b, rows, cols), dtype=xs.dtype, device=xs.device)
    for slot in range(centers.shape[1]):
        for shape, sdf_fn in enumerate(SDFS):
            idx = torch.nonzero(shapes[:, slot] == shape).squeeze(1)
            if idx.numel() == 0:
                continue
            dx = x - centers[idx, slot, 0, None, None]  # (k, 1, C)
            dy = y - centers[idx, slot, 1, None, None]  # (k, R, 1)
            s = sizes[idx, slot, None, None]
            if shape == DISC:
                sdf[idx] = sdf_fn(dx, dy, s)
            else:
                cos = torch.cos(angles[idx, slot])[:, None, None]
                sin = torch.sin(angles[idx, slot])[:, None, None]
                sdf[idx] = sdf_fn(cos * dx + sin * dy, cos * dy - sin * dx, s)
        # Coverage ramps linearly from 1 to 0 over one pixel across the edge.
        alpha = (0.5 - sdf * scale).clamp_(0, 1) * present[:, slot, None, None]
        img += alpha[:, None] * (colors[:, slot, :, None, None] - img)
    return img.clamp_(0, 1)
