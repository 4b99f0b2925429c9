"""``sincos2d``: the fixed 2-D sine-cosine table of MAE, added to the patch tokens."""

from dataclasses import dataclass

import torch

from harness.encodings._precision import add_table
from harness.encodings.base import Policy, PositionalEncoding, register_encoding, rescale


@register_encoding("sincos2d")
class SinCos2D(PositionalEncoding):
    """Fixed 2-D sine-cosine table added to patch tokens (MAE): half the channels x, half y."""

    @dataclass(frozen=True)
    class Options:
        temperature: float = 10000.0
        policy: Policy = "extrapolate"

        def validate(self, dims):
            if self.temperature <= 0:
                raise ValueError(f"option 'temperature' must be > 0, got {self.temperature}")
            if dims.dim % 4:
                raise ValueError(f"needs a model dim divisible by 4; got {dims.dim}")

    fixed_tables = True

    def build(self, grid, device):
        """Table (N, D): [sin(x w), cos(x w), sin(y w), cos(y w)], w_k = T^(-k/(D/4)), k < D/4."""
        y, x = grid.yx(device)
        p = self.opts.policy
        x = rescale(x, grid.cols, grid.train_cols, p)
        y = rescale(y, grid.rows, grid.train_rows, p)
        quarter = self.dims.dim // 4
        omega = self.opts.temperature ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
        ox, oy = x[:, None] * omega, y[:, None] * omega  # (N, D/4)
        return torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], dim=1)

    def tokens(self, x, grid, state):
        return add_table(x, state)
