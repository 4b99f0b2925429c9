"""The training step and what it is made of: the device and its numerics (:func:`resolve_device`,
:func:`prepare_device`, :func:`autocast`: bf16 autocast and TF32 matmuls on CUDA), the learning
rate of each step (:func:`lr_at`: linear warm-up, then cosine decay), AdamW's parameter groups
(:func:`param_groups`), the augmentation (:func:`flip_crop`, in batch, on the device) and
:class:`TrainStep`, which puts them together into one optimisation step.

The training loop that runs the step is :mod:`harness.training.train`; ``harness bench`` times
this same step.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import TrainConfig, TrainConfigError
from harness.errors import HarnessError

__all__ = ["TrainStep", "autocast", "flip_crop", "lr_at", "param_groups", "prepare_device", "resolve_device"]


def resolve_device(name: str, *, option: str = "train.device",
                   error: type[HarnessError] = TrainConfigError) -> torch.device:
    """``auto``: CUDA when available, else the CPU. ``cuda`` without CUDA is an error.

    ``option`` names the setting in messages (``--device`` for the CLI) and ``error`` is the
    exception type raised.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise error(f"{option} must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise error(f"{option} is 'cuda' but CUDA is not available here (use 'auto' or 'cpu')")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_device(device: torch.device, threads: int = 0) -> torch.dtype | None:
    """The recipe's numerics on ``device``: ``threads`` CPU threads (when > 0), TF32 matmuls on
    CUDA. Returns the autocast dtype: bfloat16 on CUDA, None (float32) on the CPU."""
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type != "cuda":
        return None
    torch.set_float32_matmul_precision("high")  # TF32 matmuls
    torch.backends.cudnn.allow_tf32 = True
    return torch.bfloat16  # bf16 autocast on CUDA only


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of (0-based) ``step``: linear warm-up to ``lr``, then cosine to ``min_lr``.

    Warm-up steps 0 .. w-1 use lr * (step + 1) / w; after it the cosine runs from ``lr`` at
    step w to ``min_lr`` at the last step, total_steps - 1.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = total_steps - 1 - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))

class TrainStep:
    """One optimisation step of the recipe, ready to call: ``step(x, y, lr) -> loss``.

    Holds the model, the network that runs (``torch.compile`` of it when ``cfg.compile``) and
    AdamW over :func:`param_groups` (fused on CUDA). A call sets the learning rate, augments
    ``x`` (``cfg.augment``, drawn from ``gen``), runs the forward pass under autocast
    (``amp_dtype``), the label-smoothed cross-entropy in float32, the backward pass, global-norm
    clipping, the AdamW step, and clears the gradients. ``harness bench`` times this same step.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None,
                 gen: torch.Generator | None = None) -> None:
        self.model, self.cfg, self.device, self.amp_dtype, self.gen = model, cfg, device, amp_dtype, gen
        self.net = torch.compile(model) if cfg.compile else model  # `model` keeps the plain state_dict
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                           fused=device.type == "cuda")

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.cfg.augment == "flip_crop":
            x = flip_crop(x, self.gen)
        with autocast(self.device, self.amp_dtype):
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for every trainable parameter except the 1-d ones (biases, norms) and
    the names ``model.no_weight_decay()`` lists (one rule for our ViT and timm's)."""
    named = dict(model.named_parameters())
    skip = {n for n, p in named.items() if p.ndim <= 1}
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay()) & set(named)
    decay = [p for n, p in named.items() if p.requires_grad and n not in skip]
    no_decay = [p for n, p in named.items() if p.requires_grad and n in skip]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on CUDA; nothing on the CPU or when ``dtype`` is None."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def flip_crop(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random crop after reflect-padding by 1/8 of the side, in batch."""
    B, C, H, W = x.shape
    dev = x.device
    flip = torch.rand(B, generator=gen, device=dev) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    ph, pw = H // 8, W // 8
    if ph == 0 and pw == 0:
        return x
    padded = F.pad(x, (pw, pw, ph, ph), mode="reflect")  # (B, C, H + 2ph, W + 2pw)
    dy = torch.randint(0, 2 * ph + 1, (B,), generator=gen, device=dev)
    dx = torch.randint(0, 2 * pw + 1, (B,), generator=gen, device=dev)
    rows = (dy[:, None] + torch.arange(H, device=dev))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(W, device=dev))[:, None, None, :]  # (B, 1, 1, W)
    b = torch.arange(B, device=dev)[:, None, None, None]
    c = torch.arange(C, device=dev)[None, :, None, None]
    return padded[b, c, rows, cols]  # (B, C, H, W)
