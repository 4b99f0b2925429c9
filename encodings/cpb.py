"""``cpb``: Swin Transformer V2's continuous position bias, a per-layer MLP of log-spaced offsets
(Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022, §3.3).

Definition. Grid of H x W patches, N = H*W, h heads, depth L. Patch i sits at p_i = (y_i, x_i)
(``grid.yx``, ``grid.offset`` included); the offset of a pair is the integer (dy, dx) =
round(p_i - p_j) (query minus key, as Swin-V2's ``relative_coords``), one of the (2H-1)(2W-1)
offsets of the grid. Each offset is normalised per axis with a reference size n_ref::

    u = d / (n_ref - 1) * 8                              (Swin-V2: "normalize to -8, 8")
    c = sign(u) * log2(|u| + 1) / log2(8)                (log-spaced coordinates)

and fed, as c = (c_y, c_x), to layer l's MLP::

    B_l(d) = scale * sigmoid(W2_l relu(W1_l c + b1_l))   W1_l: (hidden, 2), b1_l: (hidden,),
                                                         W2_l: (h, hidden), no second bias

with ``hidden`` = 512, ``scale`` = 16 and ``span`` = 8 (the 8 above) by default (Swin-V2's ``cpb_mlp`` and ``16 * sigmoid``).
bias[l, head, 1+i, 1+j] = B_l(round(p_i - p_j))[head]: a function of p_i - p_j only (relative).
The bias is added to the scaled logits q.k / sqrt(d) before the softmax, in every layer with
that layer's own MLP.

The cls token has no position, so no offset: as BEiT does (Bao et al., ICLR 2022: its relative
position bias table ends with three entries per head), it gets three learned entries per layer
and head, ``cpb_cls`` (L, h, 3), used as they are (no MLP, no sigmoid; ``cls_untouched =
False``)::

    bias[l, head, 0, 1+j] = cls[l, head, 0]   (cls query, patch key)
    bias[l, head, 1+i, 0] = cls[l, head, 1]   (patch query, cls key)
    bias[l, head, 0, 0]   = cls[l, head, 2]   (cls to cls)

the same on every grid. Swin-V2, where the MLP comes from, has no cls token. Why not 0 (what
this encoding first did; ``rpb``, whose biases start near 0, keeps it): the MLP's biases are
positive, near scale / 2 = 8 at init (below), so a cls column of 0 gave the cls key about e^-8
of a patch key's softmax weight in every patch's row (issue #21): the patches could hardly read
the cls token, and only a large learned shift of every patch bias could change that. "A
constant bias does not change the softmax" holds only for a row whose every entry gets it.

Not included: Swin-V2's scaled cosine attention (cos(q, k) / tau with a learned per-head logit
scale) and its post-norm blocks. The shared ViT keeps dot-product attention q.k / sqrt(d) and
pre-norm blocks, so here the patch bias, which lies in (0, 16), is added to dot-product logits (in
Swin-V2 the cosine logits are at most 1 / 0.01 = 100). Swin-V2 also attends within windows;
here attention is global over the whole grid, so the MLP sees the offsets of the whole grid.

Initialisation: as Swin-V2's code (microsoft/Swin-Transformer and timm both apply their
``_init_weights`` to every ``nn.Linear``, ``cpb_mlp`` included): W1 and W2 truncated normal
with std 0.02 (``trunc_normal_``'s default cut at +-2 in absolute value, 100 std: in effect a
plain normal), b1 = 0. Not PyTorch's default ``nn.Linear`` init. At this init every bias is
close to scale * sigmoid(0) = 8 (within ~0.1), nearly the same for every offset; the MLP learns
the shape. The cls entries start at that same value, scale * sigmoid(0) = scale / 2, so at init
every entry of the bias matrix, the cls row and column included, is within ~0.1 of one constant,
which changes no softmax: the model starts as if it had no bias at all, and the cls token gets
the same weight as a patch (BEiT starts its table, cls entries included, at 0, where its patch
biases start too). The shared ViT re-initialises every ``nn.Linear`` the same way, but it does
not reach these parameters: they are plain tensors, stacked over layers so that one batched
product evaluates all L MLPs.

Computation: once per forward (``build``, autocast off, float32) the L MLPs are evaluated on
the U = (2H-1)(2W-1) distinct offsets, giving a table (L, h, U + 3) whose last three columns are
the cls entries; each layer's bias (h, T, T) is one gather of its row by an integer index
(T, T), built from the grid and cached per grid shape, prefix count, offset and device (the cls
row, column and corner point at columns U, U + 1 and U + 2; every prefix token, if a model had
more than one, shares them).

New grid (``policy``):

- ``extrapolate`` (default; Swin-V2's transfer to a larger window): n_ref = the training grid's
  size per axis (Swin-V2's ``pretrained_window_size``). Offsets beyond the training range give
  |u| > 8, so the MLP is queried at inputs it never saw in training, log-compressed (c =
  log2(|u| + 1) / 3 grows slowly: 1.06 at the training grid's largest offset, 1.5 at
  2.7 times that).
- ``interpolate``: n_ref = the current grid's size per axis (Swin-V2 without
  ``pretrained_window_size``): the largest offset of every grid maps to |u| = 8, so the inputs
  stay in the trained range, spaced more finely on a larger grid and more coarsely on a smaller
  one.

The two agree on the training grid. An axis with n_ref = 1 (a single patch) uses n_ref - 1 := 1
instead of dividing by 0 (Swin-V2's code would give 0/0 = NaN): under ``interpolate`` its only
offset is 0, which maps to 0 whatever the divisor; under ``extrapolate`` with a single training
patch on that axis, an offset d maps to u = 8 d.

Weight decay: W1, b1 and W2 are excluded (``no_weight_decay``), as Swin-V2 lists ``cpb_mlp``
among its no-weight-decay keywords (with ``logit_scale`` and ``relative_position_bias_table``);
so are the cls entries, as BEiT's table that holds them (decay would pull them towards 0, the
suppressed cls column this design removes).

Weights saved before the cls entries existed (a kept model of an earlier run, ``harness
evaluate``) have no ``cpb_cls``: they load with it 0, the cls row and column they were trained
with, so they evaluate as the model they are. A checkpoint of such a run does not resume: its
optimizer state has no entry for ``cpb_cls``, so it is set aside as damaged and the run trains
again from scratch under this definition.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harness.config import option
from harness.encodings.base import PositionalEncoding, memoised, register_encoding

#: Swin-V2's normalisation: the reference offset n_ref - 1 maps to u = 8, then log2(|u| + 1) / log2(8)
#: (the default of the ``span`` option)
SPAN = 8.0


@dataclass(frozen=True)
class CPBState:
    """One forward's tables: ``table`` (L, h, U + 3) float32, the bias of every layer, head and
    offset, its last three columns the cls entries; ``index`` (T, T) int64, the column of each
    token pair."""

    table: torch.Tensor
    index: torch.Tensor


def normalised_offsets(rows: int, cols: int, ref_rows: int, ref_cols: int,
                       device: torch.device | str | None = None, span: float = SPAN) -> torch.Tensor:
    """The MLP's inputs (U, 2) = (c_y, c_x) for the U = (2 rows - 1)(2 cols - 1) offsets
    (dy, dx), dy-major: offset (dy, dx) is row (dy + rows - 1)(2 cols - 1) + dx + cols - 1."""
    dy = torch.arange(-(rows - 1), rows, device=device, dtype=torch.float32)
    dx = torch.arange(-(cols - 1), cols, device=device, dtype=torch.float32)
    u = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)  # (U, 2)
    ref = torch.tensor([max(ref_rows - 1, 1), max(ref_cols - 1, 1)], device=device, dtype=torch.float32)
    u = u / ref * span
    return torch.sign(u) * torch.log2(u.abs() + 1.0) / math.log2(span)


@register_encoding("cpb")
class ContinuousPositionBias(PositionalEncoding):
    """Swin-V2 continuous position bias: per-layer MLP of log-spaced offsets, 16*sigmoid, added to the logits."""

    @dataclass(frozen=True)
    class Options:
        hidden: int = option(512, gt=0)
        scale: float = option(16.0, gt=0)
        span: float = option(SPAN, gt=1)  # the reference offset maps to u = span (Swin-V2: 8)
        policy: Literal["extrapolate", "interpolate"] = "extrapolate"

    relative = True  # the bias of a pair is a function of round(p_i - p_j)
    fixed_tables = False  # the MLPs are learned: the table is rebuilt every forward
    cls_untouched = False  # the cls row, column and corner are learned entries (BEiT's three)

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        L, h, k = dims.depth, dims.heads, self.opts.hidden
        self.cpb_w1 = nn.Parameter(torch.empty(L, k, 2))  # layer l's first Linear(2, hidden): weight
        self.cpb_b1 = nn.Parameter(torch.zeros(L, k))  # and its bias
        self.cpb_w2 = nn.Parameter(torch.empty(L, h, k))  # layer l's Linear(hidden, heads, bias=False)
        nn.init.trunc_normal_(self.cpb_w1, std=0.02)
        nn.init.trunc_normal_(self.cpb_w2, std=0.02)
        # cls to patch, patch to cls, cls to cls per layer and head: scale * sigmoid(0), the MLP's value at init
        self.cpb_cls = nn.Parameter(torch.full((L, h, 3), self.opts.scale / 2))
        self._index: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Weights saved before ``cpb_cls`` existed load with it 0: the cls row and column they
        were trained with (see the module docstring)."""
        if prefix + "cpb_w1" in state_dict and prefix + "cpb_cls" not in state_dict:
            state_dict[prefix + "cpb_cls"] = torch.zeros_like(self.cpb_cls)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reference_size(self, grid) -> tuple[int, int]:
        """n_ref per axis (rows, cols): the training grid (``extrapolate``) or ``grid`` (``interpolate``)."""
        if self.opts.policy == "interpolate":
            return grid.rows, grid.cols
        return grid.train_rows, grid.train_cols

    def inputs(self, grid, device=None) -> torch.Tensor:
        """The MLP's inputs (U, 2) on ``grid`` under this encoding's policy."""
        return normalised_offsets(grid.rows, grid.cols, *self.reference_size(grid), device=device,
                                  span=self.opts.span)

    def pair_index(self, grid, device) -> torch.Tensor:
        """(T, T) int64: the table column of every token pair, U, U + 1 and U + 2 (the cls
        entries) in the cls row, column and corner; cached per grid shape, prefix count, offset
        and device."""
        key = (grid.rows, grid.cols, grid.num_prefix, grid.offset, str(device))
        return memoised(self._index, key, lambda: self._make_index(grid, device), self.cache_size)

    @staticmethod
    def _make_index(grid, device) -> torch.Tensor:
        y, x = grid.yx(device)
        dy = (y[:, None] - y[None, :]).round().long() + (grid.rows - 1)  # p_i - p_j, shifted to >= 0
        dx = (x[:, None] - x[None, :]).round().long() + (grid.cols - 1)
        n_off = (2 * grid.rows - 1) * (2 * grid.cols - 1)
        index = torch.full((grid.num_tokens, grid.num_tokens), n_off, dtype=torch.long, device=device)
        p = grid.num_prefix
        index[p:, :p] = n_off + 1  # patch query, cls key
        index[:p, :p] = n_off + 2  # cls to cls
        index[p:, p:] = dy * (2 * grid.cols - 1) + dx
        return index

    def build(self, grid, device):
        """Every layer's MLP on the grid's distinct offsets, then the cls entries: table (L, h, U + 3)."""
        c = self.inputs(grid, device)  # (U, 2)
        hid = torch.relu(torch.einsum("uc,lkc->luk", c, self.cpb_w1.float()) + self.cpb_b1.float()[:, None])
        out = torch.einsum("luk,lhk->lhu", hid, self.cpb_w2.float())  # (L, h, U)
        table = torch.cat([self.opts.scale * torch.sigmoid(out), self.cpb_cls.float()], dim=-1)
        return CPBState(table, self.pair_index(grid, device))

    def attn_bias(self, grid, state, layer):
        """Layer ``layer``'s bias (h, T, T): its table row gathered by the pair index."""
        T = grid.num_tokens
        return state.table[layer].index_select(1, state.index.view(-1)).view(-1, T, T)

    def no_weight_decay(self):
        return {"cpb_w1", "cpb_b1", "cpb_w2", "cpb_cls"}
