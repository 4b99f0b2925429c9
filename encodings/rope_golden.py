"""``rope_golden``: "golden gate" rotary embedding (Xiong, 2025).

Pair f of head h turns by omega_f * <u, p>, with the fixed unit direction u = (cos phi, sin phi),
phi = (h*F + f) * pi / golden ratio (F = d/2 pairs per head): successive pairs and heads point in
directions spread evenly over the half-circle. The magnitudes omega are log-spaced from
``min_freq`` to ``max_freq``; a fraction ``zero_fraction`` of the pairs (the first ones) get
omega = 0 and carry no position. Positions are centred and scaled so that the training grid's
longer side spans [-1, 1]. No parameters.

Source: J. Xiong, "On N-dimensional rotary positional embeddings" (blog post and code, July 2025,
https://jerryxio.ng/posts/nd-rope). The author's settings depend on the grid, so they are named
presets here (option ``preset``):

- ``cifar``: his CIFAR runs, an 8x8 patch grid: magnitudes 1..100, no zero frequencies;
- ``imagenet``: his ImageNet runs, a 14x14 patch grid: magnitudes 0.2..20, a quarter of them zero;
- ``auto`` (the default): the preset of the nearer published grid, ``cifar`` when the training
  grid's longer side has at most 10 patches (8x8 and geometrically closer to 8 than to 14),
  ``imagenet`` above.

``min_freq``, ``max_freq`` and ``zero_fraction``, when given, override the preset's value one by
one (the settings before issue #10, 0.2..20 with 1/8 zero, matched no published setting for an
8x8 grid: ``min_freq: 0.2, max_freq: 20, zero_fraction: 0.125`` gives them back).
"""

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from harness.config import option
from harness.encodings._rotary import RotaryEncoding
from harness.encodings.base import Policy, register_encoding, rescale

GOLDEN_RATIO = (1 + math.sqrt(5)) / 2


class GoldenSettings(NamedTuple):
    """The frequency settings of golden gate RoPE."""

    min_freq: float
    max_freq: float
    zero_fraction: float


#: the author's published settings, by the grid they were used on
PRESETS: dict[str, GoldenSettings] = {
    "cifar": GoldenSettings(min_freq=1.0, max_freq=100.0, zero_fraction=0.0),  # 8x8 grid
    "imagenet": GoldenSettings(min_freq=0.2, max_freq=20.0, zero_fraction=0.25),  # 14x14 grid
}
#: ``auto`` picks ``cifar`` up to this many patches on the training grid's longer side
AUTO_CIFAR_MAX_SIDE = 10


def golden_settings(opts, train_rows: int, train_cols: int) -> GoldenSettings:
    """The settings ``opts`` (a ``RoPEGolden.Options``) resolve to on a training grid of
    ``train_rows`` x ``train_cols``: the preset (``auto`` by grid size), then explicit options."""
    name = opts.preset
    if name == "auto":
        name = "cifar" if max(train_rows, train_cols) <= AUTO_CIFAR_MAX_SIDE else "imagenet"
    base = PRESETS[name]
    return GoldenSettings(
        min_freq=base.min_freq if opts.min_freq is None else opts.min_freq,
        max_freq=base.max_freq if opts.max_freq is None else opts.max_freq,
        zero_fraction=base.zero_fraction if opts.zero_fraction is None else opts.zero_fraction,
    )


@register_encoding("rope_golden")
class RoPEGolden(RotaryEncoding):
    """Golden gate RoPE: pair f of head h turns along direction (h*F + f)*pi/phi, log-spaced magnitudes."""

    @dataclass(frozen=True)
    class Options:
        preset: Literal["auto", "cifar", "imagenet"] = "auto"
        min_freq: float | None = option(None, gt=0)  # None: the preset's
        max_freq: float | None = option(None, gt=0)
        zero_fraction: float | None = option(None, ge=0, lt=1)
        policy: Policy = "interpolate"

        def validate(self, dims):
            s = golden_settings(self, dims.train_rows, dims.train_cols)
            if not 0 < s.min_freq <= s.max_freq:
                raise ValueError(f"options need 0 < min_freq <= max_freq, got {s.min_freq}, {s.max_freq} "
                                 f"(preset {self.preset!r} and the options given)")

    fixed_tables = True
    relative = True  # angles linear in p (centred and scaled by constants of the grid)

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        s, F = golden_settings(self.opts, dims.train_rows, dims.train_cols), dims.head_dim // 2
        self.settings = s
        n_zero = round(s.zero_fraction * F)
        omega = torch.cat([
            torch.zeros(n_zero, dtype=torch.float64),
            s.min_freq * (s.max_freq / s.min_freq) ** torch.linspace(0, 1, F - n_zero, dtype=torch.float64),
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
