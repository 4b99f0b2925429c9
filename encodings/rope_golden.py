"""``rope_golden``: "golden gate" rotary embedding (Xiong, 2025)."""

import math
from dataclasses import dataclass

import torch

from harness.encodings._rotary import RotaryEncoding
from harness.encodings.base import Policy, register_encoding, rescale

GOLDEN_RATIO = (1 + math.sqrt(5)) / 2


@register_encoding("rope_golden")
class RoPEGolden(RotaryEncoding):
    """Golden gate RoPE: pair f of head h turns along direction (h*F + f)*pi/phi, log-spaced magnitudes."""

    @dataclass(frozen=True)
    class Options:
        min_freq: float = 0.2
        max_freq: float = 20.0
        zero_fraction: float = 0.125
        policy: Policy = "interpolate"

        def validate(self, dims):
            if not 0 < self.min_freq <= self.max_freq:
                raise ValueError(f"options need 0 < min_freq <= max_freq, got {self.min_freq}, {self.max_freq}")
            if not 0 <= self.zero_fraction < 1:
                raise ValueError(f"option 'zero_fraction' must be in [0, 1), got {self.zero_fraction}")

    fixed_tables = True
    relative = True  # angles linear in p (centred and scaled by constants of the grid)

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        o, F = self.opts, dims.head_dim // 2
        n_zero = round(o.zero_fraction * F)
        omega = torch.cat([
            torch.zeros(n_zero, dtype=torch.float64),
            o.min_freq * (o.max_freq / o.min_freq) ** torch.linspace(0, 1, F - n_zero, dtype=torch.float64),
        ])  # (F,)
        index = torch.arange(dims.heads, dtype=torch.float64)[:, None] * F + torch.arange(F)  # h*F + f
        phi = index * (math.pi / GOLDEN_RATIO)  # (h, F)
        freqs = torch.stack([omega * phi.cos(), omega * phi.sin()], dim=-1)  # (h, F, 2): omega_f * u
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def angles(self, grid, device):
        """Positions centred and scaled so the training grid's longer side spans [-1, 1]."""
        y, x = grid.yx(device)
        n = max(grid.train_rows, grid.train_cols)
        unit = 2.0 / (n - 1) if n > 1 else 1.0
        p = self.opts.policy
        xc = rescale(x - (grid.cols - 1) / 2, grid.cols, grid.train_cols, p) * unit
        yc = rescale(y - (grid.rows - 1) / 2, grid.rows, grid.train_rows, p) * unit
        pos = torch.stack([xc, yc], dim=1)  # (N, 2)
        return torch.einsum("nc,hfc->hnf", pos, self.freqs.to(device))[None]  # (1, h, N, F)
