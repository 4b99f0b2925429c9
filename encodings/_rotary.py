"""Shared machinery of the rotary encodings (RoPE family).

Pair layout: interleaved, pair j = channels (2j, 2j+1) of a head, turned by angle a_j:
(x0, x1) -> (x0 cos a - x1 sin a, x0 sin a + x1 cos a), computed as one complex multiplication
(x0 + i x1)(cos a + i sin a). Prefix tokens (cls) get angle 0: their table entries are exactly
1 + 0i, so they pass through unchanged.

Precision: the angles and the table are computed in float32, with autocast off and no TF32
(``build``, see ``_precision``), and the rotation runs in float32 (complex64) whatever the dtype
of q and k; the result is cast back to q's dtype. Under bf16 autocast an angle computed in bf16
would be off by up to ~0.1 rad.

Under ``torch.compile`` (``train.compile: true``): TorchInductor cannot generate code for complex
operators (it warns, and the rotation falls out of the fused graph), so while the model is being
compiled (``torch.compiler.is_compiling()``) the table is real, (..., T, d/2, 2) float32 holding
(cos a, sin a), built inside the compiled graph (never taken from the eager cache), and the
rotation is the same formula in real arithmetic (``rotate_pairs``). :func:`rotate` picks the
form from the table's dtype; ``tests/test_rotary_compile.py`` checks that both forms give the
same values and gradients for every rotary encoding. One difference remains: in a compiled graph
the table is built with autocast off but under the process's float32 matmul precision (switching
it to "highest" inside the graph would break the graph), so on CUDA with TF32 on, the few angle
products that are matmuls (``rope_mixed``, ``string``: positions times learned frequencies)
keep 10 mantissa bits of their inputs; ``bench/gpu_check.sh`` compares compiled and eager training.
"""

from __future__ import annotations

import torch

from harness.encodings._precision import autocast_off
from harness.encodings.base import PatchGrid, PositionalEncoding

__all__ = ["RotaryEncoding", "compiling", "cis_table", "rotate", "rotate_complex", "rotate_pairs", "rotate_real"]


def compiling() -> bool:
    """Whether this code is being traced by ``torch.compile`` (then the real-arithmetic path)."""
    return torch.compiler.is_compiling()


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


def rotate_real(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``rotate_complex`` in real arithmetic, for compiled models: ``table`` (..., T, d/2, 2) float32
    holds (cos a, sin a) of each pair."""
    return rotate_pairs(x, table[..., 0], table[..., 1])


def cis_table(a: torch.Tensor) -> torch.Tensor:
    """The rotation table of angles ``a`` (..., d/2): cos a + i sin a (complex64) in eager mode;
    under ``torch.compile`` the real form (..., d/2, 2) = (cos a, sin a) float32, which Inductor fuses."""
    if compiling():
        return torch.stack((a.cos(), a.sin()), dim=-1)
    return torch.polar(torch.ones_like(a), a)


def rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate the interleaved pairs of ``x`` by ``table``: complex (eager) or real (compiled) form."""
    return rotate_complex(x, table) if table.is_complex() else rotate_real(x, table)


class RotaryEncoding(PositionalEncoding):
    """Base of the rotary encodings: a subclass gives the angles, this class turns q and k."""

    head_dim_multiple = 2

    def angles(self, grid: PatchGrid, device: torch.device) -> torch.Tensor:
        """Angles (L or 1, h or 1, N, d/2) in float32 for the N patches of ``grid``."""
        raise NotImplementedError

    def state(self, grid: PatchGrid, device: torch.device | str):
        """As the base class's, except under ``torch.compile``: the real table, built in the
        compiled graph every forward (a cached eager table is complex: Inductor cannot fuse it)."""
        if compiling():
            with autocast_off(device):
                return self.build(grid, torch.device(device))
        return super().state(grid, device)

    def build(self, grid: PatchGrid, device: torch.device) -> torch.Tensor:
        """The table cos a + i sin a, (L|1, h|1, T, d/2) complex64 (compiled: (..., d/2, 2) float32,
        see :func:`cis_table`); prefix tokens get a = 0."""
        a = self.angles(grid, device).float()  # (L|1, h|1, N, d/2)
        a = torch.nn.functional.pad(a, (0, 0, grid.num_prefix, 0))  # prefix tokens: angle 0, cis exactly 1
        return cis_table(a)

    def qk(self, q, k, grid, state, layer):
        cis = state[layer if state.shape[0] > 1 else 0]  # (h|1, T, d/2) complex, or (h|1, T, d/2, 2) real
        return rotate(q, cis), rotate(k, cis)
