"""``liere``: Lie-group rotary position encoding (Ostmeier et al., ICML 2025)."""

import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.encodings.base import Policy, PositionalEncoding, register_encoding, rescale


@register_encoding("liere")
class LieRE(PositionalEncoding):
    """LieRE: R(p) = exp(x G_x + y G_y), learned skew-symmetric generators per layer, head and block."""

    @dataclass(frozen=True)
    class Options:
        block_size: int = 8
        init_max: float = 2 * math.pi
        policy: Policy = "extrapolate"

        def validate(self, dims):
            if self.block_size < 2:
                raise ValueError(f"option 'block_size' must be >= 2, got {self.block_size}")
            if dims.head_dim % self.block_size:
                raise ValueError(
                    f"option 'block_size' {self.block_size} must divide the head dimension {dims.head_dim}"
                )
            if self.init_max <= 0:
                raise ValueError(f"option 'init_max' must be > 0, got {self.init_max}")

    # not relative: exp(x G_x + y G_y) is a function of p_i - p_j only when the generators commute
    # (block_size 2); the default blocks of 8 do not
    relative = False

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        b = self.opts.block_size
        nb = dims.head_dim // b
        # the strictly upper-triangular entries of U, for G_x and G_y, init U(0, init_max)
        self.generators = nn.Parameter(torch.rand(2, dims.depth, dims.heads, nb, b * (b - 1) // 2) * self.opts.init_max)
        self.register_buffer("_upper", torch.triu_indices(b, b, offset=1), persistent=False)

    def skew(self) -> torch.Tensor:
        """Generators G = U - U^T, shape (2, L, h, nb, b, b) for (x, y)."""
        b = self.opts.block_size
        u = self.generators.new_zeros(*self.generators.shape[:-1], b, b)
        u[..., self._upper[0], self._upper[1]] = self.generators
        return u - u.transpose(-1, -2)

    def build(self, grid, device):
        """Rotations (L, h, T, nb, b, b); identity for prefix tokens."""
        y, x = grid.yx(device)
        p = self.opts.policy
        x = rescale(x, grid.cols, grid.train_cols, p) / max(grid.train_cols - 1, 1)
        y = rescale(y, grid.rows, grid.train_rows, p) / max(grid.train_rows - 1, 1)
        g = self.skew().float()
        a = torch.einsum("n,lhkij->lhnkij", x, g[0]) + torch.einsum("n,lhkij->lhnkij", y, g[1])
        rot = torch.linalg.matrix_exp(a)  # (L, h, N, nb, b, b), float32
        eye = torch.eye(self.opts.block_size, device=device).expand(*rot.shape[:2], grid.num_prefix, *rot.shape[3:])
        return torch.cat([eye, rot], dim=2)

    def qk(self, q, k, grid, state, layer):
        rot = state[layer]  # (h, T, nb, b, b)
        return _rotate_blocks(q, rot), _rotate_blocks(k, rot)


def _rotate_blocks(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    B, h, T, d = x.shape
    nb, b = rot.shape[2], rot.shape[3]
    out = torch.einsum("htnij,bhtnj->bhtni", rot, x.float().view(B, h, T, nb, b))
    return out.reshape(B, h, T, d).to(x.dtype)
