"""Shared machinery of the rotary encodings (RoPE family).

Pair layout: interleaved, pair j = channels (2j, 2j+1) of a head, turned by angle a_j:
(x0, x1) -> (x0 cos a - x1 sin a, x0 sin a + x1 cos a). Prefix tokens (cls) get angle 0:
their rows of the cos/sin tables are exactly 1 and 0, so they pass through unchanged.
"""

from __future__ import annotations

import torch

from harness.encodings.base import PatchGrid, PositionalEncoding

__all__ = ["RotaryEncoding", "rotate_pairs"]


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x`` (..., T, d) by tables (..., T, d/2), in float32."""
    xf = x.float()
    x0, x1 = xf[..., 0::2], xf[..., 1::2]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return out.to(x.dtype)


class RotaryEncoding(PositionalEncoding):
    """Base of the rotary encodings: a subclass gives the angles, this class turns q and k."""

    head_dim_multiple = 2

    def angles(self, grid: PatchGrid, device: torch.device) -> torch.Tensor:
        """Angles (L or 1, h or 1, N, d/2) in float32 for the N patches of ``grid``."""
        raise NotImplementedError

    def build(self, grid: PatchGrid, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.angles(grid, device).float()  # (L|1, h|1, N, d/2)
        a = torch.nn.functional.pad(a, (0, 0, grid.num_prefix, 0))  # prefix tokens: angle 0
        return a.cos(), a.sin()

    def qk(self, q, k, grid, state, layer):
        cos, sin = state
        i = layer if cos.shape[0] > 1 else 0
        cos, sin = cos[i], sin[i]  # (h|1, T, d/2)
        return rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
