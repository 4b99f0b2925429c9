"""``rpb``: the learned relative position bias of Swin (Liu et al., ICCV 2021) and BEiT (Bao et al., ICLR 2022).

Definition. The model is trained on an H x W patch grid (``dims.train_rows`` x ``dims.train_cols``).
Each layer l (or, with ``shared=True``, all layers together) holds a learned table
T[l, h] of (2H - 1) x (2W - 1) entries per head h, one per 2-D offset the training grid has.
For patches i and j at (y_i, x_i) and (y_j, x_j) (``PatchGrid.yx``, ``offset`` included), the
offset (dy, dx) = (y_i - y_j, x_i - x_j) is rounded to integers and

    bias[l, h, i, j] = T[l, h, dy + H - 1, dx + W - 1]

is added to the scaled logits q_i.k_j / sqrt(d) before the softmax (the ``attn_bias`` hook).
The bias depends on the offset only (``relative = True``). The cls token has no position: its
row and column of the bias are zero. This differs from BEiT, which adds three more learned
entries per head (cls to patch, patch to cls, cls to cls); Swin has no cls token.

Options: ``shared`` (False: one table per layer, as Swin and BEiT by default; True: one table
for every layer, BEiT's "shared relative position bias"); ``init_std`` (0.02): the table starts
trunc-normal with that std, truncated at +-2 absolute, as Swin's ``trunc_normal_(std=.02)``
(BEiT starts from zeros); ``policy``. The table (``table``, shape (L or 1, h, 2H-1, 2W-1)) is
excluded from weight decay, as Swin lists ``relative_position_bias_table`` in ``no_weight_decay``.
The bias is built once per forward from the parameter, in float32 with autocast off; the
integer index tensors are cached per grid shape.

On a new grid of H' x W' patches (offsets up to +-(H'-1), +-(W'-1)):

- ``interpolate`` (the default, what Swin and BEiT fine-tuning at a new window or resolution
  does): each head's table is resampled bicubically to (2H'-1) x (2W'-1) with
  ``F.interpolate(mode="bicubic", align_corners=True)`` (PyTorch's cubic convolution, a = -0.75,
  border entries repeated), then indexed as above. With aligned corners, output index o samples
  input coordinate o (2H-2)/(2H'-2), so new offset u = o - (H'-1) reads old offset
  u (H-1)/(H'-1): exactly the harness's ``interpolate`` policy applied to the offsets (it is
  linear, so rescaling positions and then subtracting is the same); the largest new offsets land
  on the table's edges. An axis of the size it was trained with is not resampled, so the
  training grid uses the table itself. An axis with H' = 1 has the single offset 0: it reads
  the table's centre (offset 0), as the policy leaves index 0 at 0 (F.interpolate would sample
  the first entry, offset -(H-1), so that axis is sliced, not resampled). A model trained with
  H = 1 has only offset 0 along that axis; every new offset maps to it (u * 0), so that axis of
  the bias is constant. Swin's own fine-tuning code calls ``F.interpolate(mode="bicubic")`` at
  its default ``align_corners=False`` (u maps to about u (2H-1)/(2H'-1)); BEiT interpolates
  along a geometric progression of offsets. Neither matches a harness policy, so not used here.
- ``extrapolate``: offsets keep one unit per patch; those beyond the trained range are clamped
  to it, dy -> clamp(dy, -(H-1), H-1) (and dx likewise), so the bias saturates: every offset
  beyond +-(H-1) gets the table's edge entry.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.encodings.base import PositionalEncoding, memoised, register_encoding


@register_encoding("rpb")
class RelativePositionBias(PositionalEncoding):
    """Learned relative position bias (Swin, BEiT): a table per head of (2H-1)(2W-1) offsets, per layer or shared."""

    @dataclass(frozen=True)
    class Options:
        shared: bool = False
        init_std: float = 0.02
        policy: Literal["extrapolate", "interpolate"] = "interpolate"

        def validate(self, dims):
            if self.init_std <= 0:
                raise ValueError(f"option 'init_std' must be > 0, got {self.init_std}")

    relative = True  # the bias is a function of the rounded offset p_i - p_j

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        H, W = dims.train_rows, dims.train_cols
        layers = 1 if self.opts.shared else dims.depth
        self.table = nn.Parameter(torch.empty(layers, dims.heads, 2 * H - 1, 2 * W - 1))
        nn.init.trunc_normal_(self.table, std=self.opts.init_std)
        self._index: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def _resampled(self, grid) -> torch.Tensor:
        """The table, resampled under ``interpolate`` to the offsets of ``grid``: (L or 1, h, 2H'-1, 2W'-1)."""
        t = self.table.float()
        H, W = self.dims.train_rows, self.dims.train_cols
        if grid.rows == 1 and H > 1:
            t = t[:, :, H - 1:H]  # the single offset 0
        if grid.cols == 1 and W > 1:
            t = t[:, :, :, W - 1:W]
        size = (2 * grid.rows - 1, 2 * grid.cols - 1)
        if t.shape[-2:] != size:
            t = F.interpolate(t, size=size, mode="bicubic", align_corners=True)
        return t

    def _offsets_index(self, grid, device, rows: int, cols: int) -> torch.Tensor:
        """(T, T) long: the flat index into a (rows, cols) table of every token pair's offset,
        ``rows * cols`` (a zero entry) for pairs with a prefix token; cached per grid."""
        key = (grid.rows, grid.cols, grid.num_prefix, grid.offset, rows, cols, str(device))
        return memoised(self._index, key, lambda: self._make_index(grid, device, rows, cols), self.cache_size)

    @staticmethod
    def _make_index(grid, device, rows: int, cols: int) -> torch.Tensor:
        y, x = grid.yx(device)
        dy = torch.round(y[:, None] - y[None, :]).long()  # (N, N) = y_i - y_j
        dx = torch.round(x[:, None] - x[None, :]).long()
        hy, hx = (rows - 1) // 2, (cols - 1) // 2  # the table's offset-0 entry
        dy, dx = dy.clamp(-hy, hy), dx.clamp(-hx, hx)  # extrapolate: saturate (a no-op otherwise)
        flat = (dy + hy) * cols + (dx + hx)
        p = grid.num_prefix
        return F.pad(flat, (p, 0, p, 0), value=rows * cols)  # (T, T), prefix -> the zero entry

    def build(self, grid, device):
        """Bias (L or 1, h, T, T) float32: the table entry of every pair's offset, zero for the cls token."""
        if self.opts.policy == "interpolate":
            t = self._resampled(grid)
        else:
            t = self.table.float()
        layers, heads, rows, cols = t.shape
        index = self._offsets_index(grid, device, rows, cols)
        flat = torch.cat([t.reshape(layers * heads, rows * cols), t.new_zeros(layers * heads, 1)], dim=1)
        bias = flat.index_select(1, index.reshape(-1))  # one gather per forward
        return bias.view(layers, heads, grid.num_tokens, grid.num_tokens)

    def attn_bias(self, grid, state, layer):
        return state[0 if self.opts.shared else layer]  # (h, T, T)

    def no_weight_decay(self):
        return {"table"}
