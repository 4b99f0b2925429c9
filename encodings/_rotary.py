"""Shared machinery of the rotary encodings (RoPE family).

Pair layout: interleaved, pair j = channels (2j, 2j+1) of a head, turned by angle a_j:
(x0, x1) -> (x0 cos a - x1 sin a, x0 sin a + x1 cos a), computed as one complex multiplication
(x0 + i x1)(cos a + i sin a). Prefix tokens (cls) get angle 0: their table entries are exactly
1 + 0i, so they pass through unchanged.

Precision: the angles and the table are computed in float32, with autocast off and no TF32
(``build``, see ``_precision``), and the rotation runs in float32 (complex64) whatever the dtype
of q and k; the result is cast back to q's dtype. Under bf16 autocast an angle computed in bf16
would be off by up to ~0.1 rad.
"""

from __future__ import annotations

import torch

from harness.encodings.base import PatchGrid, PositionalEncoding

__all__ = ["RotaryEncoding", "rotate_complex", "rotate_pairs"]


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x`` (..., T, d) by tables (..., T, d/2), in float32.

    The plain form of the rotation, kept as the reference the fast path is tested against.
    """
    xf = x.float()
    x0, x1 = xf[..., 0::2], xf[..., 1::2]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return out.to(x.dtype)


def rotate_complex(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """The same rotation as ``rotate_pairs``, as one complex multiplication: pair (x0, x1) is
    the complex number x0 + i x1, and ``cis`` = cos a + i sin a (..., T, d/2), complex64."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * cis).flatten(-2).to(x.dtype)


class RotaryEncoding(PositionalEncoding):
    """Base of the rotary encodings: a subclass gives the angles, this class turns q and k."""

    head_dim_multiple = 2

    def angles(self, grid: PatchGrid, device: torch.device) -> torch.Tensor:
        """Angles (L or 1, h or 1, N, d/2) in float32 for the N patches of ``grid``."""
        raise NotImplementedError

    def build(self, grid: PatchGrid, device: torch.device) -> torch.Tensor:
        """The table cos a + i sin a, (L|1, h|1, T, d/2) complex64; prefix tokens get a = 0."""
        a = self.angles(grid, device).float()  # (L|1, h|1, N, d/2)
        a = torch.nn.functional.pad(a, (0, 0, grid.num_prefix, 0))  # prefix tokens: angle 0, cis exactly 1
        return torch.polar(torch.ones_like(a), a)

    def qk(self, q, k, grid, state, layer):
        cis = state[layer if state.shape[0] > 1 else 0]  # (h|1, T, d/2)
        return rotate_complex(q, cis), rotate_complex(k, cis)
