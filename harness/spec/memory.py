"""Floors of the memory a study needs, checked against this machine's before anything is
built: :func:`harness.spec.load_spec` refuses image sizes (and model sizes) that cannot fit.
Floors, not estimates: what is counted is certainly needed; the real need is higher."""

from __future__ import annotations

import os
from pathlib import Path

from harness.config import ViTConfig

__all__ = ["gib", "memory_bytes", "model_bytes", "size_bytes"]


def memory_bytes() -> int:
    """The memory this machine gives the process: its RAM, or a lower cgroup limit."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 1 << 50
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**60 else f"{n / 2**30:.2e} GiB"


def model_bytes(model: ViTConfig) -> int:
    """A floor of the training memory of the model's parameters: float32 weights, gradients and
    AdamW's two moments (4 copies)."""
    d, hidden = model.dim, int(model.dim * model.mlp_ratio)
    per_block = 4 * d * d + 2 * d * hidden + 9 * d + hidden
    params = model.depth * per_block + model.in_chans * model.patch_kernel ** 2 * d + d * (model.num_classes + 2)
    return 16 * params


def size_bytes(model: ViTConfig, rows: int, cols: int, images: int, batch: int, bias_heads: int,
                training: bool) -> tuple[int, int]:
    """Tokens per image at ``rows`` x ``cols`` pixels, and a floor of the memory a pass over them
    needs: ``images`` float32 images held at that size (the split); the activations of one
    ``batch`` (evaluating: the residual stream and the larger of q, k, v and the MLP's hidden
    layer, alive at once; training: q, k, v and the hidden layer of every block, kept for the
    backward pass); ``bias_heads`` attention bias maps of tokens x tokens (an attention-bias
    encoding's table)."""
    tokens = model.grid_size(rows) * model.grid_size(cols) + 1
    pixels = model.in_chans * rows * cols
    d, hidden = model.dim, int(model.dim * model.mlp_ratio)
    per_token = model.depth * (3 * d + hidden) if training else d + max(3 * d, hidden)
    return tokens, 4 * (images * pixels + batch * tokens * per_token + bias_heads * tokens * tokens)
