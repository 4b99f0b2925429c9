"""``rope1d``: RoFormer rotary embedding on the raster index of the patches."""

from dataclasses import dataclass

import torch

from harness.encodings._rotary import RotaryEncoding
from harness.encodings.base import Policy, register_encoding, rescale


@register_encoding("rope1d")
class RoPE1D(RotaryEncoding):
    """RoFormer rotary on the raster index t = y*W + x, theta_i = base^(-2i/d); pairs interleaved."""

    @dataclass(frozen=True)
    class Options:
        base: float = 10000.0
        policy: Policy = "extrapolate"

        def validate(self, dims):
            if self.base <= 1:
                raise ValueError(f"option 'base' must be > 1, got {self.base}")

    fixed_tables = True
    relative = True  # q_i.k_j turns by (t_i - t_j) theta, t_i - t_j = (y_i - y_j) W + (x_i - x_j)

    def angles(self, grid, device):
        y, x = grid.yx(device)
        t = rescale(y * grid.cols + x, grid.num_patches, self.dims.train_rows * self.dims.train_cols, self.opts.policy)
        d = self.dims.head_dim
        theta = self.opts.base ** (-2 * torch.arange(d // 2, device=device, dtype=torch.float32) / d)
        return (t[:, None] * theta)[None, None]  # (1, 1, N, d/2)
