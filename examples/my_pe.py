"""my_pe: an example encoding plugin, a learned per-head Manhattan-distance bias."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import option
from harness.encodings import Policy, PositionalEncoding, register_encoding, rescale


@register_encoding("my_pe")
class ManhattanBias(PositionalEncoding):
    """Learned per-head bias -(a_h |dx| + b_h |dy|) on the attention logits; cls at distance 0."""

    @dataclass(frozen=True)
    class Options:  # typed, with defaults and bounds: checked when the encoding is built
        init_slope: float = option(0.5, gt=0)
        policy: Policy = "extrapolate"  # how a grid other than the training grid is treated

    relative = True  # the bias depends on p_i - p_j only (the conformance kit tests it)

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        self.slopes = nn.Parameter(torch.full((dims.heads, 2), self.opts.init_slope))  # (h, 2): x, y

    def build(self, grid, device):  # this grid's tables, once per forward
        y, x = grid.yx(device)
        x = rescale(x, grid.cols, grid.train_cols, self.opts.policy)
        y = rescale(y, grid.rows, grid.train_rows, self.opts.policy)
        dist = torch.stack([(x[:, None] - x).abs(), (y[:, None] - y).abs()], dim=-1)  # (N, N, 2)
        bias = -torch.einsum("ijc,hc->hij", dist, self.slopes)  # (h, N, N)
        return F.pad(bias, (grid.num_prefix, 0, grid.num_prefix, 0))  # cls row and column: 0

    def attn_bias(self, grid, state, layer):  # or tokens(x, grid, state), qk(q, k, grid, state, layer)
        return state

    def no_weight_decay(self):
        return {"slopes"}
