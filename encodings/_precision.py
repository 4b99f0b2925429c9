"""Position tables in float32, whatever autocast and TF32 are doing.

Under bf16 autocast (the CUDA training path; CPU autocast behaves the same) a matrix product
such as the ``einsum`` of positions and frequencies runs in bf16: rotation angles of a few
radians come out 0.04-0.14 rad wrong, and a fixed table built that way is cached and reused.
With TF32 matmuls on (the trainer's CUDA setting) a float32 ``einsum`` keeps only 10 mantissa
bits of its inputs: 0.1 rad off on angles of 100 rad. So every table (angles, biases,
embeddings, LieRE's matrix exponential) is built with autocast off and float32 matmuls at full
precision, as naver's rope-vit builds its tables with autocast off; the hooks then apply it in
float32 and cast the result back to the dtype of the activations (one rounding instead of two).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

__all__ = ["add_table", "autocast_off", "in_float32"]


def autocast_off(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context in which autocast is off for ``device``'s type: every op runs in the dtype of
    its inputs (nothing to switch off for a device type without autocast, or where autocast is
    not on).

    Autocast is switched off only where it is on: ``torch.export`` records an
    ``autocast(enabled=False)`` region as a ``wrap_with_autocast`` node even when autocast was
    off already, and a region that returns nothing (``build`` of an encoding without tables:
    ``none``, ``learned``, ``cpe``) leaves that node without the ``val`` its verifier wants, so
    ``torch.export.load`` refused the exported model (``SpecViolationError: Node.meta
    wrap_with_autocast is missing val field``; the kept models of MLflow's PyTorch flavour)."""
    kind = torch.device(device).type
    if not torch.amp.is_autocast_available(kind) or not torch.is_autocast_enabled(kind):
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, enabled=False)


def in_float32(device: torch.device | str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with autocast off for ``device``'s type and float32 matmuls at full
    precision (no TF32; the previous setting is restored after)."""
    with autocast_off(device):
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            return fn(*args)
        finally:
            torch.set_float32_matmul_precision(precision)


def add_table(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``x + table`` computed in the wider of the two dtypes (float32 for bf16 activations and a
    float32 table) and rounded once to ``x``'s dtype; the plain sum when the dtypes agree."""
    return (x + table).to(x.dtype)
