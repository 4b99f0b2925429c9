"""The one Vision Transformer every encoding plugs into.

Convolutional patch stem (kernel, stride, no padding; stride < kernel gives overlapping
patches), a learned cls token, pre-norm blocks (LayerNorm, attention, LayerNorm, GELU MLP),
a final LayerNorm and a linear head on the cls token (or on the mean of the patch tokens).
Attention goes through ``scaled_dot_product_attention``. The encoding acts through its four
hooks; the model never asks which encoding it holds.

What the hooks return is checked (shape, dtype, device, finite values) the first time the model
meets a grid (per policy, mode, device and autocast dtype; never while ``torch.compile`` traces
it), so the check costs nothing per step: a plugin that breaks the contract fails its trial
(:class:`EncodingContractError`, a ``TrialFailed``) with a message naming the encoding and the
hook, instead of a traceback deep in the model or, worse, a model that trains on wrong tokens.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ModelConfigError, ViTConfig
from harness.encodings.base import PatchGrid, PositionalEncoding, build_encoding
from harness.errors import TrialFailed
from harness.variants import temperature_factor

__all__ = ["EncodingContractError", "ModelConfigError", "ViT", "ViTConfig", "build_model"]


class EncodingContractError(TrialFailed):
    """An encoding's hook returned something the model cannot use (a wrong shape, dtype or
    device, non-finite values): the trial fails (its run FAILED with this reason), the study
    goes on with its other cells."""


def _contract(pe: PositionalEncoding, hook: str, grid: PatchGrid, layer: int | None,
              problem: str) -> EncodingContractError:
    where = f" in layer {layer}" if layer is not None else ""
    return EncodingContractError(f"encoding {pe.name!r} breaks the hook contract: {hook}{where} {problem} "
                                 f"(on a {grid.rows}x{grid.cols} patch grid)")


def _check_like(pe: PositionalEncoding, hook: str, grid: PatchGrid, layer: int | None, out: Any,
                like: torch.Tensor, what: str) -> None:
    """``out``, returned by ``hook``, must be a tensor of ``like``'s shape, dtype and device
    (``what`` describes it), with finite values."""
    if not isinstance(out, torch.Tensor):
        raise _contract(pe, hook, grid, layer, f"returned {type(out).__name__}, not a tensor {what}")
    if out.shape != like.shape:
        raise _contract(pe, hook, grid, layer,
                        f"returned shape {tuple(out.shape)}, expected {tuple(like.shape)} {what}")
    if out.dtype != like.dtype or out.device != like.device:
        raise _contract(pe, hook, grid, layer, f"returned {out.dtype} on {out.device} for {like.dtype} on "
                        f"{like.device} {what} (keep the input's dtype and device)")
    if not torch.isfinite(out).all():
        raise _contract(pe, hook, grid, layer, "returned non-finite values (nan or inf)")


def _check_qk(pe: PositionalEncoding, grid: PatchGrid, layer: int, out: Any, q: torch.Tensor, k: torch.Tensor) -> None:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise _contract(pe, "qk", grid, layer, f"returned {type(out).__name__}, not the pair (q, k)")
    _check_like(pe, "qk", grid, layer, out[0], q, "(q: batch, heads, tokens, head dim)")
    _check_like(pe, "qk", grid, layer, out[1], k, "(k: batch, heads, tokens, head dim)")


def _check_bias(pe: PositionalEncoding, grid: PatchGrid, layer: int, bias: Any, q: torch.Tensor) -> None:
    """None, or a floating (h or 1, T, T) tensor on q's device; -inf (a mask) is allowed, nan and +inf are not."""
    if bias is None:
        return
    _, h, t, _ = q.shape
    if not isinstance(bias, torch.Tensor):
        raise _contract(pe, "attn_bias", grid, layer, f"returned {type(bias).__name__}, not a tensor or None")
    if bias.ndim != 3 or bias.shape[0] not in (1, h) or tuple(bias.shape[1:]) != (t, t):
        raise _contract(pe, "attn_bias", grid, layer,
                        f"returned shape {tuple(bias.shape)}, expected {(h, t, t)} (heads, tokens, tokens)")
    if not bias.is_floating_point() or bias.device != q.device:
        raise _contract(pe, "attn_bias", grid, layer,
                        f"returned {bias.dtype} on {bias.device}, expected a floating bias on {q.device}")
    if torch.isnan(bias).any() or (bias == float("inf")).any():
        raise _contract(pe, "attn_bias", grid, layer, "returned nan or +inf values")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, pe: PositionalEncoding, grid: PatchGrid, state: Any, layer: int, temperature: float = 1.0,
                check: bool = False):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, T, d) each
        out = pe.qk(q, k, grid, state, layer)
        if check:  # the first forward on this grid only
            _check_qk(pe, grid, layer, out, q, k)
        q, k = out
        bias = pe.attn_bias(grid, state, layer)  # (h, T, T) or None
        if check:
            _check_bias(pe, grid, layer, bias, q)
        if bias is not None:
            # broadcast over the batch as a view (stride 0, no copy): on the CPU, SDPA takes its
            # fused kernel for a (B, h, T, T) mask but falls back to the plain math path for an
            # (h, T, T) one, 3-5x slower at 65-257 tokens (measured, torch 2.14)
            bias = bias.to(q.dtype).expand(B, -1, -1, -1)
        # the temperature scales q.k / sqrt(d), not the bias (the default scale when it is 1)
        scale = None if temperature == 1.0 else temperature / math.sqrt(D // self.heads)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)  # (B, h, T, d)
        return self.proj(x.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = MLP(cfg.dim, int(cfg.dim * cfg.mlp_ratio))

    def forward(self, x, pe, grid, state, layer, temperature=1.0, check=False):
        x = x + self.attn(self.norm1(x), pe, grid, state, layer, temperature, check)
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, pe: PositionalEncoding) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Conv2d(cfg.in_chans, cfg.dim, kernel_size=cfg.patch_kernel, stride=cfg.patch_stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pe = pe
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        #: the attention temperature rule (``harness.variants.TEMPERATURES``); "none" in training
        self.temperature = "none"
        #: the forwards whose hook outputs passed the contract check: (grid, policy, mode, device, autocast)
        self._checked: set[tuple] = set()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def grid(self, height: int, width: int) -> PatchGrid:
        """The patch grid of an input of ``height`` x ``width`` pixels."""
        cfg, train = self.cfg, self.pe.dims
        rows = cfg.grid_size(height, "input height")
        cols = cfg.grid_size(width, "input width")
        return PatchGrid(rows, cols, train.train_rows, train.train_cols, cfg.patch_kernel, cfg.patch_stride, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, C, H, W = images.shape
        if C != self.cfg.in_chans:
            raise ModelConfigError(f"input has {C} channels, the model expects {self.cfg.in_chans}")
        grid = self.grid(H, W)
        # the hooks' outputs are checked once per grid (and policy, mode, device, autocast dtype),
        # never inside torch.compile: no cost per step
        key = None if torch.compiler.is_compiling() else self._check_key(grid, images.device)
        check = key is not None and key not in self._checked
        state = self.pe.state(grid, images.device)  # tables for this forward, shared by all layers
        x = self.stem(images).flatten(2).transpose(1, 2)  # (B, N, D)
        out = self.pe.tokens(x, grid, state)
        if check:
            _check_like(self.pe, "tokens", grid, None, out, x, "(the patch tokens: batch, patches, dim)")
        x = torch.cat([self.cls_token.expand(B, -1, -1), out], dim=1)  # (B, T, D)
        temperature = temperature_factor(self.temperature, grid.num_patches, grid.train_rows * grid.train_cols)
        for i, block in enumerate(self.blocks):
            x = block(x, self.pe, grid, state, i, temperature, check)
            out = self.pe.after_block(x, grid, state, i)
            if check:
                _check_like(self.pe, "after_block", grid, i, out, x, "(the tokens: batch, cls + patches, dim)")
            x = out
        if check:
            self._checked.add(key)
        x = self.norm(x)
        x = x[:, 0] if self.cfg.pool == "cls" else x[:, 1:].mean(dim=1)
        return self.head(x)

    def _check_key(self, grid: PatchGrid, device: torch.device) -> tuple:
        """What the hooks' outputs may depend on besides the weights: the grid, the new-grid
        policy, train or eval mode, the device and the autocast dtype."""
        amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        return (grid.rows, grid.cols, grid.offset, getattr(self.pe.opts, "policy", None), self.training,
                str(device), amp)

    @contextlib.contextmanager
    def variant(self, policy: str | None = None, temperature: str = "none") -> Iterator[None]:
        """Evaluate the same weights under a new-grid ``policy`` (None: the encoding's own) and
        an attention ``temperature`` rule."""
        own = self.temperature
        self.temperature = temperature
        try:
            with self.pe.policy(policy):
                yield
        finally:
            self.temperature = own

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay: biases, norms, cls token, the encoding's own."""
        names = {n for n, p in self.named_parameters() if p.ndim <= 1 or n == "cls_token"}
        return names | {f"pe.{n}" for n in self.pe.no_weight_decay()}


def build_model(cfg: ViTConfig, encoding: str, options: dict[str, Any] | None = None) -> ViT:
    """A ViT of size ``cfg`` with the encoding registered as ``encoding``."""
    return ViT(cfg, build_encoding(encoding, cfg.dims, options))
