"""The conformance kit: checks every registered encoding must pass, built-in or plugin.

A plugin's own test suite can run it too::

    import pytest
    from harness.conformance import CHECKS

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_my_encoding(check):
        check("my_encoding")

Each check takes an encoding name (and options) and raises ``AssertionError`` on failure.
The model is tiny (16 px training images, 4x4 patches: a 4x4 training grid).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from harness.encodings.base import PatchGrid, build_encoding
from harness.encodings.registry import _REGISTRY, _info_from_class, get_encoding
from harness.models.vit import ViTConfig, build_model

__all__ = ["CHECKS", "TINY", "check_all", "input_sizes"]

#: the tiny model of the kit: 4x4 training grid, 2 layers, 4 heads of dim 8
TINY = ViTConfig(image_size=16, in_chans=3, num_classes=5, dim=32, depth=2, heads=4, mlp_ratio=2.0,
                 patch_kernel=4, patch_stride=4)
#: an overlapping stem: kernel 4, stride 2 -> a 7x7 training grid
OVERLAP = dataclasses.replace(TINY, patch_stride=2)


def input_sizes(cfg: ViTConfig) -> list[tuple[int, int]]:
    """Input sizes giving the training grid, a smaller one, a non-square one and a larger one."""
    k, s, r = cfg.patch_kernel, cfg.patch_stride, cfg.image_size
    return [(r, r), (k + s, k + s), (k + 2 * s, k + 4 * s), (2 * r, 2 * r)]


def _policies(name: str) -> list[dict[str, Any]]:
    info = _REGISTRY[name]
    return [{"policy": p} for p in info.policies] or [{}]


def _model(name: str, cfg: ViTConfig, options: dict[str, Any], seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg, name, options)


def check_metadata(name: str) -> None:
    """What the listing shows without importing the module equals what the class says."""
    cls = get_encoding(name)
    info = _REGISTRY[name]
    live = _info_from_class(name, cls, info.source)
    for field in ("hooks", "policies", "default_policy", "param_count", "option_defaults", "description"):
        assert getattr(info, field) == getattr(live, field), (
            f"{name}: listing metadata {field} = {getattr(info, field)!r}, class says {getattr(live, field)!r}"
        )
    assert live.description, f"{name}: the class needs a one-line docstring (the listing shows it)"


def check_param_count(name: str) -> None:
    """The declared ``param_count`` formula equals the trainable parameters actually built."""
    for cfg in (TINY, OVERLAP, dataclasses.replace(TINY, dim=48, heads=2, depth=3, image_size=20)):
        pe = build_encoding(name, cfg.dims)
        actual = sum(p.numel() for p in pe.parameters() if p.requires_grad)
        declared = _REGISTRY[name].count_parameters(cfg.dims.as_dict())
        assert declared == actual, f"{name}: param_count says {declared}, the module has {actual} ({cfg})"


def check_forward_backward(name: str) -> None:
    """Forward and backward at several grids (square, non-square, smaller, larger; overlapping
    patches), for every policy: finite logits, finite gradients, every encoding parameter reached."""
    for cfg in (TINY, OVERLAP):
        for options in _policies(name):
            model = _model(name, cfg, options)
            for h, w in input_sizes(cfg):
                model.zero_grad(set_to_none=True)
                x = torch.randn(2, cfg.in_chans, h, w)
                out = model(x)
                assert out.shape == (2, cfg.num_classes), f"{name}{options} at {h}x{w}: output {tuple(out.shape)}"
                assert torch.isfinite(out).all(), f"{name}{options} at {h}x{w}: non-finite output"
                out.square().mean().backward()
                for pname, p in model.named_parameters():
                    assert p.grad is not None, f"{name}{options} at {h}x{w}: no gradient for {pname}"
                    assert torch.isfinite(p.grad).all(), f"{name}{options} at {h}x{w}: non-finite grad {pname}"
                for pname, p in model.pe.named_parameters():
                    assert p.grad.abs().sum() > 0, f"{name}{options} at {h}x{w}: zero gradient for pe.{pname}"


def check_deterministic(name: str) -> None:
    """The same seed builds the same model and gives the same outputs."""
    x = torch.randn(3, TINY.in_chans, 24, 20)
    a = _model(name, TINY, {}, seed=7)(x)
    b = _model(name, TINY, {}, seed=7)(x)
    assert torch.equal(a, b), f"{name}: two models built under seed 7 disagree"


def check_cls_untouched(name: str) -> None:
    """The cls token gets no position: its q and k are not rotated, its bias row and column are
    zero, and token hooks see the patch tokens only."""
    cls = get_encoding(name)
    pe = build_encoding(name, TINY.dims)
    for rows, cols in ((4, 4), (3, 5), (6, 6)):
        g = PatchGrid(rows, cols, 4, 4, 4, 4, 1)
        state = pe.state(g, "cpu")
        x = torch.randn(2, g.num_patches, TINY.dim)
        assert pe.tokens(x, g, state).shape == x.shape, f"{name}: tokens hook changed the shape"
        q = torch.randn(2, TINY.heads, g.num_tokens, TINY.dims.head_dim)
        k = torch.randn_like(q)
        for layer in range(TINY.depth):
            q2, k2 = pe.qk(q, k, g, state, layer)
            assert q2.shape == q.shape and k2.shape == k.shape, f"{name}: qk hook changed the shape"
            assert torch.equal(q2[:, :, 0], q[:, :, 0]) and torch.equal(k2[:, :, 0], k[:, :, 0]), (
                f"{name}: the cls token's q/k changed in layer {layer}"
            )
            bias = pe.attn_bias(g, state, layer)
            if bias is not None:
                assert bias.shape[-2:] == (g.num_tokens, g.num_tokens), f"{name}: bias shape {tuple(bias.shape)}"
                assert not bias[..., 0, :].any() and not bias[..., :, 0].any(), f"{name}: cls row/column not zero"
    assert cls is type(pe)


def check_fixed_tables_cached(name: str) -> None:
    """Fixed tables are built once per grid shape and shared; learned ones are rebuilt per forward."""
    pe = build_encoding(name, TINY.dims)
    g1, g2 = PatchGrid(4, 4, 4, 4, 4, 4, 1), PatchGrid(3, 5, 4, 4, 4, 4, 1)
    s1 = pe.state(g1, "cpu")
    if pe.fixed_tables:
        assert pe.state(g1, "cpu") is s1, f"{name}: fixed tables are rebuilt for the same grid"
        assert not list(pe.parameters()), (
            f"{name}: declares fixed_tables but has trainable parameters (its tables would go stale)"
        )
    s2 = pe.state(g2, "cpu")
    assert s2 is not s1 or s1 is None


CHECKS: list[Callable[[str], None]] = [
    check_metadata,
    check_param_count,
    check_forward_backward,
    check_deterministic,
    check_cls_untouched,
    check_fixed_tables_cached,
]


def check_all(name: str) -> None:
    """Run every check on encoding ``name``."""
    for check in CHECKS:
        check(name)
