"""FLOPs of one step: worked out from the model's dimensions, and counted while it runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter

from harness.config import ViTConfig

__all__ = ["analytic_flops", "count_flops"]


def analytic_flops(cfg: ViTConfig, resolution: int | None = None, batch: int = 1) -> dict[str, int]:
    """The matmul FLOPs of our ViT on square ``resolution`` px images, ``batch`` of them.

    2 FLOPs per multiply-add, matmuls only (the patch stem's convolution, qkv, the attention
    scores q.k^T and values a.v, the output projection, the two MLP layers, the head on one
    token); biases, norms, softmax, GELU and the encoding's own work are not counted. Keys:
    the parts (all layers together), ``forward`` and ``train_step`` = 3 x forward (the usual
    model-FLOPs convention: the backward pass costs twice the forward).

    ``FlopCounterMode`` counts what actually runs, which differs by two small terms: the stem's
    backward skips the input gradient (2x stem, not 3x) and a fused attention backward
    recomputes the scores (3.5x attention, not 3x). They nearly cancel (see the tests).
    """
    r = cfg.image_size if resolution is None else resolution
    g = cfg.grid_size(r)
    n = g * g  # patches
    t = n + 1  # tokens with the cls token
    d, hidden, depth = cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.depth
    per_image = {
        "stem": 2 * n * d * cfg.in_chans * cfg.patch_kernel ** 2,
        "qkv": depth * 2 * t * d * 3 * d,
        "attn_scores": depth * 2 * t * t * d,  # heads x (t x t x head_dim)
        "attn_values": depth * 2 * t * t * d,
        "proj": depth * 2 * t * d * d,
        "mlp": depth * 2 * 2 * t * d * hidden,
        "head": 2 * d * cfg.num_classes,
    }
    out = {k: v * batch for k, v in per_image.items()}
    out["forward"] = sum(out.values())
    out["train_step"] = 3 * out["forward"]
    return out


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs counted by ``FlopCounterMode`` while ``fn()`` runs: (total, per aten op)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_cpu_flash_attention()) as counter:
        fn()
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def _cpu_flash_attention() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for the CPU flash-attention kernels, which ``FlopCounterMode`` misses."""
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        def fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        def bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return mapping
