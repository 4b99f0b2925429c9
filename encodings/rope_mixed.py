"""``rope_mixed``: rotary embedding with learned 2-D frequencies per layer and head (Heo et al., ECCV 2024)."""

import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.encodings._rotary import RotaryEncoding
from harness.encodings.base import Policy, register_encoding, rescale


def mixed_frequencies(dims, base: float) -> torch.Tensor:
    """RoPE-Mixed's initial frequencies (L, h, d/2, 2) = (f_x, f_y) per pair: magnitudes
    base^(-4k/d), one random angle alpha ~ U[0, 2 pi) per (layer, head), f_j = m_j (cos, -sin)
    for the first d/4 pairs and m_j (sin, cos) for the rest (draws from torch's generator)."""
    d, q = dims.head_dim, dims.head_dim // 4
    mag = base ** (-4 * torch.arange(q, dtype=torch.float32) / d)  # (d/4,)
    alpha = torch.rand(dims.depth, dims.heads, 1) * (2 * math.pi)  # one angle per (layer, head)
    fx = torch.cat([mag * alpha.cos(), mag * -alpha.sin()], dim=-1)  # (L, h, d/2)
    fy = torch.cat([mag * alpha.sin(), mag * alpha.cos()], dim=-1)
    return torch.stack([fx, fy], dim=-1)


@register_encoding("rope_mixed")
class RoPEMixed(RotaryEncoding):
    """RoPE-Mixed: learned 2-D frequencies per layer and head, magnitudes 10^(-4k/d), random initial angle."""

    @dataclass(frozen=True)
    class Options:
        base: float = 10.0
        policy: Policy = "extrapolate"

        def validate(self, dims):
            if self.base <= 1:
                raise ValueError(f"option 'base' must be > 1, got {self.base}")

    head_dim_multiple = 4
    relative = True  # angles f_j . p, linear in p

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        self.freqs = nn.Parameter(mixed_frequencies(dims, self.opts.base))

    def angles(self, grid, device):
        y, x = grid.yx(device)
        p = self.opts.policy
        pos = torch.stack([rescale(x, grid.cols, grid.train_cols, p), rescale(y, grid.rows, grid.train_rows, p)], 1)
        return torch.einsum("nc,lhjc->lhnj", pos, self.freqs.float())  # (L, h, N, d/2), f_j . p

    def no_weight_decay(self):
        return {"freqs"}
