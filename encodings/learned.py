"""``learned``: a learned absolute table, resampled bicubically for a new grid (ViT, DeiT, timm)."""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.encodings._precision import add_table
from harness.encodings.base import PositionalEncoding, register_encoding


@register_encoding("learned")
class LearnedAbsolute(PositionalEncoding):
    """Learned absolute table, one vector per training patch, resampled bicubically for new grids."""

    @dataclass(frozen=True)
    class Options:
        init_std: float = 0.02
        interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
        antialias: bool = True
        policy: Literal["interpolate"] = "interpolate"

        def validate(self, dims):
            if self.init_std <= 0:
                raise ValueError(f"option 'init_std' must be > 0, got {self.init_std}")
            if self.antialias and self.interpolation == "nearest":
                raise ValueError("option 'antialias' needs interpolation 'bilinear' or 'bicubic'")


    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        self.table = nn.Parameter(torch.empty(1, dims.train_rows * dims.train_cols, dims.dim))
        nn.init.trunc_normal_(self.table, std=self.opts.init_std)

    def build(self, grid, device):
        """The table on ``grid``: the parameter itself, or resampled (as timm's resample_abs_pos_embed)."""
        if grid.is_train_grid:
            return self.table
        d, (h, w) = self.dims, (self.dims.train_rows, self.dims.train_cols)
        t = self.table.reshape(1, h, w, d.dim).permute(0, 3, 1, 2).float()  # (1, D, h, w)
        t = F.interpolate(
            t, size=(grid.rows, grid.cols), mode=self.opts.interpolation, antialias=self.opts.antialias,
            **({} if self.opts.interpolation == "nearest" else {"align_corners": False}),
        )
        return t.permute(0, 2, 3, 1).reshape(1, grid.num_patches, d.dim)

    def tokens(self, x, grid, state):
        return add_table(x, state)

    def no_weight_decay(self):
        return {"table"}
