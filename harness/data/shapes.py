"""The four shapes of the rendered dataset as signed distance functions.

The size parameter s of every shape is its area-equivalent radius: the shape has area
pi * s**2, so the four classes of the ``shape`` task differ by form alone, not by area.
``EXTENT[k] * s`` is the radius of shape k's bounding disc (the samplers of
:mod:`harness.data.rendered` keep it inside the image).
"""

from __future__ import annotations

import math

import torch

__all__ = ["CROSS", "DISC", "EXTENT", "NUM_SHAPES", "SDFS", "SQUARE", "TRIANGLE"]

DISC, SQUARE, TRIANGLE, CROSS = range(4)  # the shape task's labels
NUM_SHAPES = 4
_SQUARE_HALF = math.sqrt(math.pi) / 2  # half side of a square of area pi
_TRIANGLE_HALF = math.sqrt(math.pi / math.sqrt(3.0))  # half side of an equilateral triangle of area pi
_CROSS_ARM = math.sqrt(9 * math.pi / 20)  # arm half-length L of a plus of area pi, arm half-width L/3
EXTENT = (
    1.0,
    _SQUARE_HALF * math.sqrt(2.0),
    _TRIANGLE_HALF * 2 / math.sqrt(3.0),
    _CROSS_ARM * math.sqrt(10.0) / 3,
)


# Signed distances in normalised units, negative inside; (qx, qy) are coordinates in
# the object's frame, s its size, broadcast against them.


def _sdf_disc(qx: torch.Tensor, qy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(qx * qx + qy * qy) - s


def _sdf_square(qx: torch.Tensor, qy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    half = s * _SQUARE_HALF
    dx, dy = qx.abs() - half, qy.abs() - half
    outside = torch.sqrt(dx.clamp_min(0) ** 2 + dy.clamp_min(0) ** 2)
    return outside + torch.maximum(dx, dy).clamp_max(0)


def _sdf_triangle(qx: torch.Tensor, qy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    # Equilateral triangle centred on its centroid (after Inigo Quilez's sdEquilateralTriangle).
    r = s * _TRIANGLE_HALF  # half side
    k = math.sqrt(3.0)
    px = qx.abs() - r
    py = qy + r / k
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - torch.maximum(px.clamp_max(0), -2 * r)
    return -torch.sqrt(px * px + py * py) * torch.sign(py)


def _sdf_cross(qx: torch.Tensor, qy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    # Plus sign with arms of half-length L and half-width L/3 (after Inigo Quilez's sdCross).
    arm = s * _CROSS_ARM
    width = arm / 3
    ax, ay = qx.abs(), qy.abs()
    px, py = torch.maximum(ax, ay), torch.minimum(ax, ay)
    dx, dy = px - arm, py - width
    k = torch.maximum(dx, dy)
    wx = torch.where(k > 0, dx, width - px).clamp_min(0)
    wy = torch.where(k > 0, dy, -k).clamp_min(0)
    return torch.sign(k) * torch.sqrt(wx * wx + wy * wy)


SDFS = (_sdf_disc, _sdf_square, _sdf_triangle, _sdf_cross)
