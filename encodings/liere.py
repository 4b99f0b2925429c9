"""``liere``: Lie-group rotary position encoding (Ostmeier et al., ICML 2025).

R(p) = exp(x G_x + y G_y) per layer, head and block of ``block_size`` = b channels, with learned
skew-symmetric generators G = U - U^T; q and k of patch i are turned by R(p_i), so the logit of
patches i and j is q_i^T R(p_i)^T R(p_j) k_j. The table (the matrix exponential) is computed in
float32 (autocast off, no TF32); the rotation runs in float32 with autocast off and is cast
back to q's dtype.

Relative or absolute? Only for b = 2 is LieRE relative: every 2x2 skew-symmetric matrix is a
multiple of the same J, the two generators commute, and R(p_i)^T R(p_j) = R(p_j - p_i) exactly
(a RoPE-mixed form with learned frequencies). For b > 2 (the default b = 8) the generators do not
commute in general, exp(A)^T exp(B) != exp(B - A), and R(p_i)^T R(p_j) depends on p_i and p_j, not
only on their offset: R(p) is an absolute, position-dependent rotation of q and k, and the class
declares ``relative = False``. The gap is not small. At the default initialisation (U ~ U(0, 2 pi),
positions in [0, 1]) with b = 8 on the main study's 8x8 grid (head dim 16), the normalised
Frobenius gap ||R_i^T R_j - R(p_j - p_i)||_F / ||R(p_j - p_i)||_F averages 0.8 over patch pairs
(0.37 for neighbours one patch apart, 0.54 two apart, 0.88 four or more apart), and the attention
logits q^T R_i^T R_j k deviate from the relative form q^T R(p_j - p_i) k by 0.92 of their own RMS
for random q and k (tests/test_reference.py measures both from the definition). Training may move
the generators, but nothing makes them commute.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.encodings._precision import autocast_off
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

    # not relative: R(p_i)^T R(p_j) is a function of p_j - p_i only when the generators commute
    # (block_size 2); for larger blocks R(p) is an absolute rotation (see the module docstring)
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
    """R x per block in float32 with autocast off (under autocast the einsum would run in bf16),
    cast back to x's dtype. (Under TF32 the product keeps 10 mantissa bits of R and x: a relative
    error of 2^-11, a quarter of the bf16 rounding of the result.)"""
    B, h, T, d = x.shape
    nb, b = rot.shape[2], rot.shape[3]
    with autocast_off(x.device):
        out = torch.einsum("htnij,bhtnj->bhtni", rot, x.float().view(B, h, T, nb, b))
    return out.reshape(B, h, T, d).to(x.dtype)
