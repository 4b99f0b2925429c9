"""``alibi2d``: ALiBi with Euclidean distances between patches, one bias shared by all layers."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.encodings.base import Policy, PositionalEncoding, register_encoding, rescale


def alibi_slopes(heads: int, max_bias: float = 8.0) -> list[float]:
    """The ALiBi slopes: 2^(-max_bias*k/h), k = 1..h, for h a power of two; otherwise the c
    slopes for c (the largest power of two below h), then every other slope for 2c."""

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-max_bias * k / n) for k in range(1, n + 1)]

    if heads & (heads - 1) == 0:
        return power_of_two(heads)
    c = 2 ** math.floor(math.log2(heads))
    return power_of_two(c) + alibi_slopes(2 * c, max_bias)[0::2][: heads - c]


@register_encoding("alibi2d")
class ALiBi2D(PositionalEncoding):
    """ALiBi 2-D: bias -m_h * Euclidean patch distance, cls at distance 0, per-head slopes."""

    @dataclass(frozen=True)
    class Options:
        max_bias: float = 8.0
        policy: Policy = "extrapolate"

        def validate(self, dims):
            if self.max_bias <= 0:
                raise ValueError(f"option 'max_bias' must be > 0, got {self.max_bias}")

    fixed_tables = True
    relative = True  # the bias is a function of ||p_i - p_j||

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        slopes = torch.tensor(alibi_slopes(dims.heads, self.opts.max_bias), dtype=torch.float32)
        self.register_buffer("slopes", slopes, persistent=False)

    def build(self, grid, device):
        """Bias (h, T, T): -m_h * ||p_i - p_j||, zero in the cls row and column."""
        y, x = grid.yx(device)
        p = self.opts.policy
        pos = torch.stack([rescale(y, grid.rows, grid.train_rows, p), rescale(x, grid.cols, grid.train_cols, p)], 1)
        dist = torch.cdist(pos[None].double(), pos[None].double())[0].float()  # (N, N)
        bias = -self.slopes.to(device)[:, None, None] * dist  # (h, N, N)
        return F.pad(bias, (grid.num_prefix, 0, grid.num_prefix, 0))

    def attn_bias(self, grid, state, layer):
        return state  # the same tensor for every layer
