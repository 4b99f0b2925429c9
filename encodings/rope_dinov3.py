"""``rope_dinov3``: DINOv3's rotary embedding, with coordinates normalised to [-1, 1] and
augmented in training (Siméoni et al., "DINOv3", arXiv:2508.10104, 2025).

Definition (following ``dinov3/layers/rope_position_encoding.py``, ``RopePositionEmbedding``):

- Coordinates. A patch at row i, column j of an H x W grid (indices from ``PatchGrid.yx``,
  offset included) gets c = 2 (i + 0.5) / D - 1 per axis, with the normaliser D chosen by
  ``normalize``: ``separate`` (DINOv3's default) D_y = H, D_x = W, so each axis spans [-1, 1]
  (centres at ±(1 - 1/n)); ``max``: D = max(H, W) on both axes; ``min``: D = min(H, W) on both.
  (With ``max``/``min`` on a non-square grid the shorter/longer axis starts at -1 and ends
  short of/beyond +1, as in DINOv3.)
- Augmentation, in training mode only (``self.training``), once per forward pass, in DINOv3's
  order, on (c_y, c_x):
  1. shift: c += U(-shift, shift), one draw per axis (y then x); off when ``shift`` = 0;
  2. jitter: c *= exp(U(-log jitter, log jitter)), one draw per axis (y then x); off when
     ``jitter`` = 1;
  3. rescale: c *= exp(U(-log rescale, log rescale)), one draw shared by both axes; off when
     ``rescale`` = 1.
  The draws come from ``self.uniform`` (the trainer's seeded ``pe.generator`` when set, else
  torch's global generator): ``uniform(2)`` for the shift, ``uniform(2)`` for the jitter,
  ``uniform(1)`` for the rescale, each made only when that augmentation is on (as DINOv3 draws
  only the ones that are not None). In eval mode nothing is drawn or applied.
- Periods P_k = base^(2k / (d/2)), k < d/4 (d = head dim, ``base`` = 100); angle 2π c / P_k.
- Channels. DINOv3 forms the d/2 angles [2π c_y / P_0 .. 2π c_y / P_{d/4-1},
  2π c_x / P_0 .. 2π c_x / P_{d/4-1}] (y first), tiles them to d and rotates half-split pairs
  (m, m + d/2) by angle m (``rope_rotate_half``). Here pair m is the interleaved pair
  (2m, 2m+1) (``_rotary``), turned by the same angle m: pairs 0 .. d/4-1 turn by y, pairs
  d/4 .. d/2-1 by x. The two layouts are equal up to the fixed channel permutation
  m -> 2m, m + d/2 -> 2m + 1, which the learned q/k projections absorb. Shared by every head
  and layer; the cls token is not turned (DINOv3 applies RoPE to the patch tokens only).

New grid (``policy``):

- ``interpolate`` (default, DINOv3's behaviour): the normalisation above on the new grid, so
  each grid spans [-1, 1] whatever its size (zoom: the spacing shrinks as the grid grows).
- ``extrapolate``: training spacing, centred: the normaliser of the training grid D_t and,
  along an axis of n patches trained with n_t, c = 2 (i + 0.5 + (n_t - n)/2) / D_t - 1; with
  ``separate`` this is c = (2 (i + 0.5) - n) / n_t, so the range grows beyond [-1, 1] with the
  grid. The new grid is centred where the training grid's axis was.
  Both policies give the same coordinates on the training grid.

Relative: the angles are linear in the patch index (plus a constant per axis) and the
augmentation multiplies and shifts them by one draw per forward, so q_i.k_j depends on
p_i - p_j only (for given draws). No parameters (no weight decay); the periods are a
non-persistent buffer. ``fixed_tables`` is False: the augmentation makes the tables differ
per forward in training.

DINOv3's defaults (``dinov3/configs/ssl_default_config.yaml``): base 100, normalize
``separate``, shift/jitter/rescale null. The training values used here come from the released
models' configs (``dinov3/configs/train/dinov3_vit7b16_pretrain.yaml`` and
``dinov3_vitl16_lvd1689m_distilled.yaml``; the hub backbones too): shift and jitter off,
rescale 2 ("RoPE-box jittering", scale in [0.5, 2]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from harness.config import option
from harness.encodings._rotary import RotaryEncoding
from harness.encodings.base import register_encoding


@register_encoding("rope_dinov3")
class RoPEDINOv3(RotaryEncoding):
    """DINOv3 RoPE: axial, coordinates normalised to [-1, 1], periods 100^(4k/d), shift/jitter/rescale in training."""

    @dataclass(frozen=True)
    class Options:
        base: float = option(100.0, gt=0)
        normalize: Literal["separate", "max", "min"] = "separate"
        shift: float = option(0.0, ge=0)  # 0: off
        jitter: float = option(1.0, ge=1)  # 1: off
        rescale: float = option(2.0, ge=1)  # 1: off; 2: DINOv3's released models
        policy: Literal["interpolate", "extrapolate"] = "interpolate"

    fixed_tables = False  # training-time augmentation: new coordinates every forward
    relative = True  # angles affine in p, one draw per forward: q_i.k_j depends on p_i - p_j
    head_dim_multiple = 4

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        d = dims.head_dim
        k = torch.arange(d // 4, dtype=torch.float64)
        periods = self.opts.base ** (2 * k / (d // 2))  # (d/4,)
        self.register_buffer("periods", periods.float(), persistent=False)

    def _normalisers(self, rows: int, cols: int) -> tuple[float, float]:
        """(D_y, D_x) of a rows x cols grid under ``normalize``."""
        mode = self.opts.normalize
        if mode == "separate":
            return float(rows), float(cols)
        m = max(rows, cols) if mode == "max" else min(rows, cols)
        return float(m), float(m)

    def coords(self, grid, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised coordinates (c_y, c_x), each (N,) float32, before augmentation."""
        y, x = grid.yx(device)
        if self.opts.policy == "interpolate":
            dy, dx = self._normalisers(grid.rows, grid.cols)
        else:  # extrapolate: training spacing, centred where the training grid's axis was
            dy, dx = self._normalisers(grid.train_rows, grid.train_cols)
            y = y + (grid.train_rows - grid.rows) / 2
            x = x + (grid.train_cols - grid.cols) / 2
        return 2.0 * ((y + 0.5) / dy) - 1.0, 2.0 * ((x + 0.5) / dx) - 1.0

    def augment(self, cy: torch.Tensor, cx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """DINOv3's shift, jitter and rescale, in that order (training mode only)."""
        o = self.opts
        if o.shift > 0:
            s = self.uniform(2, low=-o.shift, high=o.shift, device=device)  # (y, x)
            cy, cx = cy + s[0], cx + s[1]
        if o.jitter > 1:
            lj = math.log(o.jitter)
            j = self.uniform(2, low=-lj, high=lj, device=device).exp()  # (y, x)
            cy, cx = cy * j[0], cx * j[1]
        if o.rescale > 1:
            lr = math.log(o.rescale)
            r = self.uniform(1, low=-lr, high=lr, device=device).exp()  # one for both axes
            cy, cx = cy * r, cx * r
        return cy, cx

    def angles(self, grid, device):
        cy, cx = self.coords(grid, device)
        if self.training:
            cy, cx = self.augment(cy, cx, device)
        periods = self.periods.to(device)
        ay = 2 * math.pi * cy[:, None] / periods  # (N, d/4)
        ax = 2 * math.pi * cx[:, None] / periods
        return torch.cat([ay, ax], dim=1)[None, None]  # (1, 1, N, d/2): y pairs first, as DINOv3
