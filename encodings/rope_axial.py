"""``rope_axial``: axial 2-D rotary embedding (Heo et al., ECCV 2024)."""

from dataclasses import dataclass

import torch

from harness.encodings._rotary import RotaryEncoding
from harness.encodings.base import Policy, register_encoding, rescale


@register_encoding("rope_axial")
class RoPEAxial(RotaryEncoding):
    """Axial 2-D RoPE: first half of the pairs turned by x, second half by y, theta_k = 100^(-4k/d)."""

    @dataclass(frozen=True)
    class Options:
        base: float = 100.0
        policy: Policy = "extrapolate"

        def validate(self, dims):
            if self.base <= 1:
                raise ValueError(f"option 'base' must be > 1, got {self.base}")

    fixed_tables = True
    relative = True  # rotations by angles linear in p commute: q_i.k_j depends on p_i - p_j
    head_dim_multiple = 4

    def angles(self, grid, device):
        y, x = grid.yx(device)
        p = self.opts.policy
        x = rescale(x, grid.cols, grid.train_cols, p)
        y = rescale(y, grid.rows, grid.train_rows, p)
        d = self.dims.head_dim
        theta = self.opts.base ** (-4 * torch.arange(d // 4, device=device, dtype=torch.float32) / d)
        return torch.cat([x[:, None] * theta, y[:, None] * theta], dim=1)[None, None]  # (1, 1, N, d/2)
