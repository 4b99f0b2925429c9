"""``cpe`` (CPVT's Position Encoding Generator) against a plain reference written from the definition
(encodings/cpe.py's docstring), not from the code:

    X'[c, y, x] = X[c, y, x] + beta_c + sum over (i, j) in the k x k window of w_c[i, j] * X[c, y + i - r, x + j - r]

with r = k // 2, the sum taken only over the window positions that lie inside the grid (zero
padding), patch n = y * W + x in raster order, the cls token untouched. Plain Python loops in
float64 over every batch item, channel, patch and kernel offset; the PEG's own weights are read
from the module (``pegs.i.weight`` (D, 1, k, k), ``pegs.i.bias`` (D,)).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.conformance import TINY, assert_float32_under_autocast
from harness.encodings import EncodingConfigError, ModelDims, PatchGrid, build_encoding, get_encoding
from harness.models import build_model

DIMS = ModelDims(dim=8, depth=3, heads=2, train_rows=4, train_cols=4)


def make_grid(rows, cols, dims=DIMS):
    return PatchGrid(rows=rows, cols=cols, train_rows=dims.train_rows, train_cols=dims.train_cols, num_prefix=1)


def randomise(pe, seed=0):
    """Arbitrary (trained-looking) weights and biases, so that no term of the sum is hidden by the init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pe.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def peg_reference(patches, weight, bias, rows, cols):
    """patches (B, N, D) in raster order -> patches + depthwise zero-padded conv, float64, loops only."""
    x = patches.detach().double().tolist()
    w = weight.detach().double().tolist()  # (D, 1, k, k)
    b = bias.detach().double().tolist()
    B, D, k = len(x), len(w), len(w[0][0])
    r = k // 2
    out = [[[0.0] * D for _ in range(rows * cols)] for _ in range(B)]
    for n in range(B):
        for c in range(D):
            for y in range(rows):
                for xx in range(cols):
                    s = b[c]
                    for i in range(k):
                        for j in range(k):
                            yy, xj = y + i - r, xx + j - r
                            if 0 <= yy < rows and 0 <= xj < cols:  # outside the grid: the zero padding
                                s += w[c][0][i][j] * x[n][yy * cols + xj][c]
                    out[n][y * cols + xx][c] = x[n][y * cols + xx][c] + s  # the residual
    return torch.tensor(out, dtype=torch.float64)


def close(actual, expected, atol=1e-5, rtol=1e-5):
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol)


# ============================================================================ the PEG itself
GRIDS = [(4, 4), (3, 5), (5, 2), (1, 6), (6, 1), (1, 1)]


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("rows,cols", GRIDS, ids=[f"{r}x{c}" for r, c in GRIDS])
def test_after_block_against_loops(rows, cols, kernel):
    """The hook after block 0 (the default position) on square, non-square, 1-row and 1-column grids
    (kernel 5 on a 1-row grid: most of the window is padding); the cls token passes bit for bit."""
    torch.manual_seed(0)
    pe = build_encoding("cpe", DIMS, {"kernel": kernel})
    randomise(pe)
    assert pe.pegs[0].weight.shape == (DIMS.dim, 1, kernel, kernel) and pe.pegs[0].bias.shape == (DIMS.dim,)
    grid = make_grid(rows, cols)
    seq = torch.randn(2, grid.num_tokens, DIMS.dim)
    out = pe.after_block(seq, grid, pe.state(grid, "cpu"), 0)
    assert out.shape == seq.shape and out.dtype == seq.dtype
    assert torch.equal(out[:, 0], seq[:, 0]), "the cls token changed"
    close(out[:, 1:], peg_reference(seq[:, 1:], pe.pegs[0].weight, pe.pegs[0].bias, rows, cols))
    for layer in (1, 2):  # no PEG there by default
        assert pe.after_block(seq, grid, None, layer) is seq


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("rows,cols", [(3, 5), (1, 4), (4, 4)])
def test_tokens_hook_before_block_0_against_loops(rows, cols, kernel):
    """blocks = (-1,): the PEG on the patch tokens before the first block (no cls token there yet)."""
    torch.manual_seed(1)
    pe = build_encoding("cpe", DIMS, {"kernel": kernel, "blocks": [-1]})
    randomise(pe, seed=1)
    grid = make_grid(rows, cols)
    x = torch.randn(3, grid.num_patches, DIMS.dim)
    out = pe.tokens(x, grid, None)
    close(out, peg_reference(x, pe.pegs[0].weight, pe.pegs[0].bias, rows, cols))
    for layer in range(DIMS.depth):
        assert pe.after_block(torch.ones(1, grid.num_tokens, DIMS.dim), grid, None, layer).eq(1).all()


def test_each_position_has_its_own_weights():
    """blocks = (2, -1, 0): three PEGs, pegs.i belongs to blocks[i], in the order given."""
    torch.manual_seed(2)
    pe = build_encoding("cpe", DIMS, {"blocks": [2, -1, 0]})
    randomise(pe, seed=2)
    assert len(pe.pegs) == 3
    grid = make_grid(3, 4)
    seq = torch.randn(2, grid.num_tokens, DIMS.dim)
    for layer, i in ((2, 0), (0, 2)):
        out = pe.after_block(seq, grid, None, layer)
        close(out[:, 1:], peg_reference(seq[:, 1:], pe.pegs[i].weight, pe.pegs[i].bias, 3, 4))
        assert torch.equal(out[:, 0], seq[:, 0])
    close(pe.tokens(seq[:, 1:], grid, None), peg_reference(seq[:, 1:], pe.pegs[1].weight, pe.pegs[1].bias, 3, 4))
    assert pe.after_block(seq, grid, None, 1) is seq


def test_the_cls_token_gets_nothing_from_the_patches():
    """Not only its value: no gradient flows from the PEG's output into the cls token's input
    other than the identity, and the PEG's parameters get no gradient from the cls output."""
    pe = build_encoding("cpe", DIMS)
    randomise(pe)
    grid = make_grid(3, 3)
    seq = torch.randn(2, grid.num_tokens, DIMS.dim, requires_grad=True)
    out = pe.after_block(seq, grid, None, 0)
    out[:, 0].sum().backward()
    assert torch.equal(seq.grad[:, 0], torch.ones_like(seq.grad[:, 0])) and not seq.grad[:, 1:].any()
    assert all(p.grad is None or not p.grad.any() for p in pe.parameters())


def test_position_comes_from_the_border_only():
    """Identical patch tokens: the PEG changes every interior patch by the same vector and the
    border patches by others (zero padding); with k = 1 nothing depends on position."""
    pe = build_encoding("cpe", DIMS)
    randomise(pe)
    grid = make_grid(5, 6)
    seq = torch.ones(1, grid.num_tokens, DIMS.dim)
    delta = (pe.after_block(seq, grid, None, 0) - seq)[0, 1:].reshape(5, 6, DIMS.dim)
    interior = delta[1:-1, 1:-1].reshape(-1, DIMS.dim)
    assert torch.allclose(interior, interior[:1].expand_as(interior), atol=1e-6)
    assert (delta[0, 0] - interior[0]).abs().max() > 1e-3 and (delta[0, 3] - delta[4, 3]).abs().max() > 1e-3
    pe1 = build_encoding("cpe", DIMS, {"kernel": 1})
    randomise(pe1)
    d1 = (pe1.after_block(seq, grid, None, 0) - seq)[0, 1:]
    assert torch.allclose(d1, d1[:1].expand_as(d1), atol=1e-6)
    assert not get_encoding("cpe").relative


# ============================================================================ where it sits in the ViT
def hand_forward(model, images, pegs_at):
    """The ViT's forward written out by hand, blocks run with the ``none`` encoding (cpe acts
    through no hook inside a block) and the PEG applied from the reference at ``pegs_at``:
    {position: index into model.pe.pegs}, position -1 = on the stem's patch tokens."""
    none = build_encoding("none", model.pe.dims)
    B, _, H, W = images.shape
    grid = model.grid(H, W)
    x = model.stem(images).flatten(2).transpose(1, 2)  # (B, N, D), raster order
    pegs = model.pe.pegs

    def peg(patches, i):
        return peg_reference(patches, pegs[i].weight, pegs[i].bias, grid.rows, grid.cols).float()

    if -1 in pegs_at:
        x = peg(x, pegs_at[-1])
    x = torch.cat([model.cls_token.expand(B, -1, -1), x], dim=1)
    for layer, block in enumerate(model.blocks):
        x = block(x, none, grid, None, layer)
        if layer in pegs_at:
            x = torch.cat([x[:, :1], peg(x[:, 1:], pegs_at[layer])], dim=1)
    return model.head(model.norm(x)[:, 0])


SIZES = [(16, 16), (12, 20), (4, 24), (24, 8)]  # grids 4x4 (training), 3x5, 1x6 (one row), 6x2


@pytest.mark.parametrize("h,w", SIZES, ids=[f"{h}x{w}px" for h, w in SIZES])
def test_default_position_is_after_block_0(h, w):
    cfg = dataclasses.replace(TINY, depth=3)
    torch.manual_seed(3)
    model = build_model(cfg, "cpe").eval()
    assert model.pe.opts.blocks == (0,) and len(model.pe.pegs) == 1
    randomise(model.pe, seed=3)
    images = torch.randn(2, cfg.in_chans, h, w)
    with torch.no_grad():
        got = model(images)
        close(got, hand_forward(model, images, {0: 0}), atol=1e-4, rtol=1e-4)
        # negative controls: the same PEG elsewhere gives another output
        for other in ({-1: 0}, {1: 0}):
            assert (got - hand_forward(model, images, other)).abs().max() > 1e-3


@pytest.mark.parametrize("h,w", [(16, 16), (12, 20)])
def test_before_block_0_and_after_block_1(h, w):
    cfg = dataclasses.replace(TINY, depth=3)
    torch.manual_seed(4)
    model = build_model(cfg, "cpe", {"blocks": [-1, 1], "kernel": 5})
    randomise(model.pe, seed=4)
    images = torch.randn(2, cfg.in_chans, h, w)
    with torch.no_grad():
        got = model(images)
        close(got, hand_forward(model, images, {-1: 0, 1: 1}), atol=1e-4, rtol=1e-4)
        assert (got - hand_forward(model, images, {0: 0, 1: 1})).abs().max() > 1e-3
        assert (got - hand_forward(model, images, {-1: 1, 1: 0})).abs().max() > 1e-3  # weights not swapped


# ============================================================================ options, init, weight decay
@pytest.mark.parametrize("options,match", [
    ({"kernel": 2}, "'kernel' must be an odd integer >= 1.*got 2"),
    ({"kernel": 0}, "'kernel' must be an odd integer >= 1.*got 0"),
    ({"kernel": -3}, "'kernel' must be an odd integer >= 1"),
    ({"kernel": 3.0}, "kernel.*expected an integer"),
    ({"blocks": [3]}, r"'blocks': entries must lie in \[-1, 2\].*3 blocks.*\[3\]"),
    ({"blocks": [-2, 0]}, r"'blocks': entries must lie in \[-1, 2\]"),
    ({"blocks": [0, 1, 0]}, r"'blocks': duplicate entries \[0\]"),
    ({"blocks": []}, "'blocks' needs at least one entry"),
    ({"blocks": 0}, "blocks.*expected a list of an integer"),
    ({"init": "xavier"}, "init.*one of 'torch', 'fan_out'"),
    ({"kernal": 3}, "unknown.*kernal.*kernel"),
])
def test_bad_options_are_clear_errors(options, match):
    with pytest.raises(EncodingConfigError, match=match) as info:
        build_encoding("cpe", DIMS, options)
    assert "'cpe'" in str(info.value)


def test_blocks_are_checked_against_the_model_depth():
    build_encoding("cpe", DIMS, {"blocks": [-1, 0, 1, 2]})
    with pytest.raises(EncodingConfigError, match=r"\[-1, 1\]"):
        build_encoding("cpe", dataclasses.replace(DIMS, depth=2), {"blocks": [2]})


def test_default_init_is_pytorch_conv2d():
    """PyTorch's Conv2d default (Kaiming-uniform a = sqrt 5): fan_in = k^2, weight and bias in
    U(-1/k, 1/k); the same draws as an nn.Conv2d built from the same seed."""
    dims = ModelDims(dim=64, depth=2, heads=2, train_rows=4, train_cols=4)
    for k in (3, 5):
        torch.manual_seed(5)
        pe = build_encoding("cpe", dims, {"kernel": k})
        torch.manual_seed(5)
        ref = torch.nn.Conv2d(64, 64, k, padding=k // 2, groups=64)
        assert torch.equal(pe.pegs[0].weight, ref.weight) and torch.equal(pe.pegs[0].bias, ref.bias)
        assert pe.pegs[0].weight.abs().max() <= 1 / k and pe.pegs[0].bias.abs().max() <= 1 / k


def test_fan_out_init_is_the_released_code():
    """Twins/CPVT's released code: N(0, 2 / fan_out), fan_out = k^2 (depthwise), bias 0."""
    dims = ModelDims(dim=512, depth=2, heads=2, train_rows=4, train_cols=4)
    torch.manual_seed(6)
    pe = build_encoding("cpe", dims, {"init": "fan_out", "kernel": 3})
    w = pe.pegs[0].weight
    assert not pe.pegs[0].bias.any()
    assert w.std().item() == pytest.approx(2 ** 0.5 / 3, rel=0.05) and abs(w.mean().item()) < 0.02


def test_no_weight_decay_names_every_peg_parameter():
    pe = build_encoding("cpe", DIMS, {"blocks": [-1, 1]})
    names = {n for n, _ in pe.named_parameters()}
    assert pe.no_weight_decay() == names == {"pegs.0.weight", "pegs.0.bias", "pegs.1.weight", "pegs.1.bias"}
    model = build_model(TINY, "cpe")
    assert {"pe.pegs.0.weight", "pe.pegs.0.bias"} <= model.no_weight_decay()


def test_no_policy_and_nothing_cached():
    about = get_encoding("cpe").describe()
    assert about.policies == () and about.hooks == ("tokens", "after_block")
    assert about.options == {"kernel": 3, "blocks": (0,), "init": "torch"}
    pe = build_encoding("cpe", DIMS)
    assert not pe.fixed_tables and pe.state(make_grid(3, 3), "cpu") is None


# ============================================================================ precision
def test_float32_under_bf16_autocast_before_block_0():
    """With blocks = (-1,) the tokens hook does act: the kit's autocast check (tokens within one
    bf16 rounding of the float32 result) holds, since the PEG runs in float32."""
    def make():
        torch.manual_seed(7)
        pe = build_encoding("cpe", DIMS, {"blocks": [-1]})
        randomise(pe, seed=7)
        return pe
    assert_float32_under_autocast(make)


def test_after_block_keeps_the_activation_dtype_under_autocast():
    pe = build_encoding("cpe", DIMS)
    randomise(pe)
    grid = make_grid(3, 5)
    seq = torch.randn(2, grid.num_tokens, DIMS.dim).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pe.after_block(seq, grid, None, 0)
    assert out.dtype == torch.bfloat16 and torch.equal(out[:, 0], seq[:, 0])
    ref = peg_reference(seq[:, 1:].float(), pe.pegs[0].weight, pe.pegs[0].bias, 3, 5)
    # a float32 PEG rounded once: within one bf16 rounding (2^-8 relative) of the exact value
    close(out[:, 1:], ref, atol=1e-6, rtol=2.0 ** -8)
