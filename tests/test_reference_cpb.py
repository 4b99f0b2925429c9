"""``cpb`` (Swin-V2 continuous position bias) against a plain reference written from the definition.

The reference loops over every layer, head and ordered pair of patches (i, j): the integer
offset p_i - p_j (query minus key, as Swin-V2's ``relative_coords``), normalised per axis as
Swin-V2 does (u = d / (n_ref - 1) * 8, c = sign(u) log2(|u| + 1) / log2(8); n_ref the training
size under ``extrapolate``, the current size under ``interpolate``, n_ref - 1 taken as 1 on a
single-patch axis), then layer l's MLP scale * sigmoid(W2 relu(W1 c + b1)), in float64 with
Python's math and numpy, independent of the module's vectorised code. The cls token's row,
column and corner are its own learned entries per layer and head (as BEiT's three): cls to
patch (row 0), patch to cls (column 0), cls to cls (the corner).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.conformance import assert_float32_under_autocast, assert_relative
from harness.encodings import ModelDims, PatchGrid, build_encoding
from harness.models import ViTConfig, build_model

DIMS = ModelDims(dim=32, depth=2, heads=4, train_rows=4, train_cols=4)
# a non-square training grid: an axis swap in the normalisation shows
DIMS_3x5 = ModelDims(dim=32, depth=2, heads=4, train_rows=3, train_cols=5)


def make_grid(rows, cols, dims=DIMS, offset=(0.0, 0.0)):
    return PatchGrid(rows=rows, cols=cols, train_rows=dims.train_rows, train_cols=dims.train_cols,
                     num_prefix=1, offset=offset)


def randomise(pe, seed=0):
    """Weights far from the init (where every bias is ~8), so that the MLP's shape matters."""
    g = torch.Generator().manual_seed(seed)
    k = pe.opts.hidden
    with torch.no_grad():
        pe.cpb_w1.copy_(torch.randn(pe.cpb_w1.shape, generator=g))
        pe.cpb_b1.copy_(0.5 * torch.randn(pe.cpb_b1.shape, generator=g))
        pe.cpb_w2.copy_(torch.randn(pe.cpb_w2.shape, generator=g) * (3.0 / math.sqrt(k)))
        pe.cpb_cls.copy_(pe.opts.scale * torch.rand(pe.cpb_cls.shape, generator=g))
    return pe


def swin_coordinate(d, n_ref):
    """One axis of Swin-V2's normalised offset, from the paper's formula (plain floats)."""
    u = d / max(n_ref - 1, 1) * 8.0
    if u == 0:
        return 0.0
    return math.copysign(math.log2(abs(u) + 1.0) / math.log2(8.0), u)


def reference_bias(pe, grid, policy):
    """(L, h, T, T) float64 from the definition, one pair at a time, the cls token's included."""
    W1 = pe.cpb_w1.detach().double().numpy()  # (L, hidden, 2): input order (c_y, c_x)
    b1 = pe.cpb_b1.detach().double().numpy()
    W2 = pe.cpb_w2.detach().double().numpy()  # (L, h, hidden)
    cls = pe.cpb_cls.detach().double().numpy()  # (L, h, 3): cls to patch, patch to cls, cls to cls
    L, h = W2.shape[:2]
    ref_rows, ref_cols = ((grid.rows, grid.cols) if policy == "interpolate"
                          else (grid.train_rows, grid.train_cols))
    pos = [(y + grid.offset[0], x + grid.offset[1]) for y in range(grid.rows) for x in range(grid.cols)]
    T = grid.num_tokens
    out = np.zeros((L, h, T, T))
    for layer in range(L):
        for i, (yi, xi) in enumerate(pos):
            for j, (yj, xj) in enumerate(pos):
                dy, dx = round(yi - yj), round(xi - xj)
                c = np.array([swin_coordinate(dy, ref_rows), swin_coordinate(dx, ref_cols)])
                hidden = np.maximum(W1[layer] @ c + b1[layer], 0.0)
                logit = W2[layer] @ hidden
                for head in range(h):
                    out[layer, head, 1 + i, 1 + j] = pe.opts.scale / (1.0 + math.exp(-logit[head]))
        for head in range(h):
            for j in range(1, T):
                out[layer, head, 0, j] = cls[layer, head, 0]  # the cls query, every patch key
                out[layer, head, j, 0] = cls[layer, head, 1]  # every patch query, the cls key
            out[layer, head, 0, 0] = cls[layer, head, 2]
    return torch.from_numpy(out)


def biases(pe, grid):
    state = pe.state(grid, "cpu")
    return torch.stack([pe.attn_bias(grid, state, layer) for layer in range(pe.dims.depth)])


GRIDS = [
    ((4, 4), (0.0, 0.0)),  # the training grid
    ((3, 5), (0.0, 0.0)),  # non-square, smaller rows, larger cols
    ((3, 5), (1.0, -2.5)),  # shifted: the offsets (and the bias) are unchanged
    ((6, 7), (0.0, 0.0)),  # larger
    ((2, 3), (0.0, 0.0)),  # smaller
    ((1, 5), (0.0, 0.0)),  # a single row: n_ref - 1 = 0 under interpolate
]


@pytest.mark.parametrize("policy", ["extrapolate", "interpolate"])
@pytest.mark.parametrize("shape,offset", GRIDS, ids=[f"{r}x{c}{'-shift' if o != (0.0, 0.0) else ''}"
                                                     for (r, c), o in GRIDS])
def test_cpb_against_pairwise_loop(policy, shape, offset):
    torch.manual_seed(0)
    pe = randomise(build_encoding("cpb", DIMS, {"policy": policy, "hidden": 64}))
    grid = make_grid(*shape, offset=offset)
    got = biases(pe, grid)
    assert got.dtype == torch.float32 and got.shape == (DIMS.depth, DIMS.heads, grid.num_tokens, grid.num_tokens)
    want = reference_bias(pe, grid, policy)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-5)
    assert want[..., 1:, 1:].std() > 0.5, "the reference is too flat to test anything"


@pytest.mark.parametrize("policy", ["extrapolate", "interpolate"])
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (2, 7), (6, 9)])
def test_cpb_non_square_training_grid_default_options(policy, shape):
    """A 3x5 training grid (rows and columns normalised by different n_ref), the default
    hidden 512, and a non-default scale."""
    torch.manual_seed(1)
    pe = randomise(build_encoding("cpb", DIMS_3x5, {"policy": policy, "scale": 8.0}), seed=1)
    assert pe.opts.hidden == 512
    grid = make_grid(*shape, dims=DIMS_3x5)
    torch.testing.assert_close(biases(pe, grid).double(), reference_bias(pe, grid, policy), atol=2e-5, rtol=1e-5)


def test_cpb_single_patch_training_axis():
    """A training grid of one row: n_ref - 1 = 0 is taken as 1 (extrapolate: u = 8 dy)."""
    dims = ModelDims(dim=32, depth=2, heads=4, train_rows=1, train_cols=4)
    for policy in ("extrapolate", "interpolate"):
        pe = randomise(build_encoding("cpb", dims, {"policy": policy, "hidden": 32}), seed=2)
        for shape in ((1, 4), (3, 4), (2, 6)):
            grid = make_grid(*shape, dims=dims)
            got = biases(pe, grid)
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got.double(), reference_bias(pe, grid, policy), atol=2e-5, rtol=1e-5)


def test_cpb_patch_biases_inside_the_sigmoid_range():
    pe = randomise(build_encoding("cpb", DIMS, {"hidden": 32}))
    for shape in ((4, 4), (3, 5), (6, 7)):
        b = biases(pe, make_grid(*shape))
        assert (b[..., 1:, 1:] > 0).all()  # scale * sigmoid: inside (0, scale)
        assert (b[..., 1:, 1:] < pe.opts.scale).all()


@pytest.mark.parametrize("scale", [16.0, 4.0])
def test_cpb_cls_key_not_suppressed_at_init(scale):
    """Issue #21: at init every patch bias is ~scale/2 (8 by default). With a cls column of 0, a
    patch query gave the cls key about e^-8 of a patch key's softmax weight (for equal q.k).
    With the cls entries at scale/2 the whole bias matrix is nearly constant at init, so no
    token's weight is moved: in every row the cls entry is within 0.25 of the row's patch entries."""
    torch.manual_seed(7)
    dims = ModelDims(dim=64, depth=3, heads=4, train_rows=8, train_cols=8)
    pe = build_encoding("cpb", dims, {"scale": scale})
    for shape in ((8, 8), (5, 11), (12, 12)):
        b = biases(pe, make_grid(*shape, dims=dims)).double()  # (L, h, T, T)
        patches = b[..., 1:, 1:]
        assert (patches - scale / 2).abs().max() < 0.25 * scale / 16
        # the softmax of the bias alone (q.k = 0): the cls key's weight over the mean patch key's
        weights = torch.softmax(b, dim=-1)
        ratio = weights[..., 1:, 0] / weights[..., 1:, 1:].mean(-1)  # every patch query
        assert (ratio.log().abs() < 0.25).all(), f"cls key weight ratio {ratio.min().item():.3g}"
        ratio = weights[..., 0, 0] / weights[..., 0, 1:].mean(-1)  # the cls query
        assert (ratio.log().abs() < 0.25).all()


def test_cpb_inputs_follow_swin_v2():
    """The MLP's inputs: Swin-V2's log-spaced coordinates; the largest training offset (n - 1)
    maps to log2(9) / log2(8) on the training grid (both policies) and on every grid under
    ``interpolate``; ``extrapolate`` goes beyond it on a larger grid. Inputs dy-major, (c_y, c_x)."""
    edge = math.log2(9.0) / 3.0
    ext = build_encoding("cpb", DIMS_3x5, {"policy": "extrapolate"})
    itp = build_encoding("cpb", DIMS_3x5, {"policy": "interpolate"})
    train = make_grid(3, 5, dims=DIMS_3x5)
    big = make_grid(7, 11, dims=DIMS_3x5)
    small = make_grid(2, 3, dims=DIMS_3x5)
    # the training grid: the same inputs
    assert torch.equal(ext.inputs(train), itp.inputs(train))
    c = ext.inputs(train).double()
    assert c.shape == (5 * 9, 2)
    for row, (dy, dx) in enumerate((dy, dx) for dy in range(-2, 3) for dx in range(-4, 5)):
        want = (swin_coordinate(dy, 3), swin_coordinate(dx, 5))
        assert c[row].tolist() == pytest.approx(want, abs=1e-6), (dy, dx)
    assert c.abs().max().item() == pytest.approx(edge, abs=1e-6)
    # off the training grid the two differ
    for grid in (big, small):
        assert not torch.allclose(ext.inputs(grid), itp.inputs(grid))
        assert itp.inputs(grid).abs().amax(0).tolist() == pytest.approx([edge, edge], abs=1e-6)
    e = ext.inputs(big).abs().amax(0)
    assert e[0].item() == pytest.approx(swin_coordinate(6, 3), abs=1e-6)  # dy = 6 with n_ref = 3
    assert e[1].item() == pytest.approx(swin_coordinate(10, 5), abs=1e-6)
    assert (e > edge + 0.2).all()
    assert (ext.inputs(small).abs().amax(0) < edge).all()  # a smaller grid: offsets short of the range


def test_cpb_policies_agree_on_the_training_grid_and_differ_off_it():
    torch.manual_seed(3)
    ext = randomise(build_encoding("cpb", DIMS, {"policy": "extrapolate", "hidden": 64}), seed=3)
    itp = randomise(build_encoding("cpb", DIMS, {"policy": "interpolate", "hidden": 64}), seed=3)
    assert torch.equal(biases(ext, make_grid(4, 4)), biases(itp, make_grid(4, 4)))
    for shape in ((3, 5), (6, 7), (2, 3)):
        assert (biases(ext, make_grid(*shape)) - biases(itp, make_grid(*shape))).abs().max() > 1e-2
    # the policy context of the base class switches the same weights
    with ext.policy("interpolate"):
        assert torch.equal(biases(ext, make_grid(6, 7)), biases(itp, make_grid(6, 7)))


def test_cpb_each_layer_has_its_own_mlp():
    pe = randomise(build_encoding("cpb", DIMS, {"hidden": 64}), seed=4)
    b = biases(pe, make_grid(3, 5))
    assert (b[0] - b[1]).abs().max() > 1e-2
    with torch.no_grad():
        pe.cpb_w2[1].zero_()  # layer 1's output layer: its bias becomes scale * sigmoid(0), layer 0's unchanged
    b2 = biases(pe, make_grid(3, 5))
    assert torch.equal(b2[0], b[0])
    torch.testing.assert_close(b2[1, :, 1:, 1:], torch.full_like(b2[1, :, 1:, 1:], pe.opts.scale / 2))


def test_cpb_initialisation_and_weight_decay():
    """Swin-V2's init (its _init_weights reaches cpb_mlp): weights trunc-normal std 0.02 (cut at
    +-2), first bias zero; every bias then ~ scale / 2, and the cls entries exactly scale / 2.
    All parameters skip weight decay."""
    torch.manual_seed(5)
    dims = ModelDims(dim=64, depth=3, heads=4, train_rows=8, train_cols=8)
    pe = build_encoding("cpb", dims)
    assert pe.cpb_w1.shape == (3, 512, 2) and pe.cpb_b1.shape == (3, 512) and pe.cpb_w2.shape == (3, 4, 512)
    for w in (pe.cpb_w1, pe.cpb_w2):
        # trunc_normal_(std=0.02) cuts at +-2 (absolute, as Swin-V2's timm call): in effect N(0, 0.02^2)
        assert w.detach().std().item() == pytest.approx(0.02, rel=0.1)
        assert w.detach().mean().abs().item() < 0.004
    assert not pe.cpb_b1.any()
    assert pe.cpb_cls.shape == (3, 4, 3) and torch.equal(pe.cpb_cls.detach(), torch.full((3, 4, 3), 8.0))
    b = biases(pe, make_grid(8, 8, dims=dims))[..., 1:, 1:]
    assert (b - 8.0).abs().max() < 0.25  # ~0.03 typical, 0.09 at most here
    assert pe.no_weight_decay() == {n for n, _ in pe.named_parameters()}
    assert pe.num_trainable() == 3 * (512 * 2 + 512 + 4 * 512 + 4 * 3)
    model = build_model(ViTConfig(image_size=16, num_classes=3, dim=32, depth=2, heads=4, patch_kernel=4,
                                  patch_stride=4), "cpb")
    assert {"pe.cpb_w1", "pe.cpb_b1", "pe.cpb_w2", "pe.cpb_cls"} <= model.no_weight_decay()


def test_cpb_table_once_per_forward_on_distinct_offsets():
    """The state holds one table (L, h, U + 3) of the U = (2H-1)(2W-1) distinct offsets plus the
    three cls entries; the pair index is cached per grid; a forward builds the table once."""
    pe = randomise(build_encoding("cpb", DIMS, {"hidden": 16}))
    grid = make_grid(3, 5)
    state = pe.state(grid, "cpu")
    assert state.table.shape == (DIMS.depth, DIMS.heads, 5 * 9 + 3)
    assert torch.equal(state.table[..., -3:], pe.cpb_cls.detach())
    assert state.index.shape == (grid.num_tokens, grid.num_tokens) and state.index.dtype == torch.long
    assert pe.state(grid, "cpu").index is state.index  # cached
    assert pe.state(grid, "cpu").table is not state.table  # learned: rebuilt

    torch.manual_seed(6)
    model = build_model(ViTConfig(image_size=16, num_classes=3, dim=32, depth=2, heads=4, patch_kernel=4,
                                  patch_stride=4), "cpb", {"hidden": 16})
    calls = []
    orig = model.pe.build
    model.pe.build = lambda g, d: calls.append((g.rows, g.cols)) or orig(g, d)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    model(torch.randn(1, 3, 24, 20))
    assert calls == [(4, 4), (6, 5)]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pe.parameters())


@pytest.mark.parametrize("policy", ["extrapolate", "interpolate"])
def test_cpb_relative_and_float32_under_autocast(policy):
    """The kit's checks, with weights far from the init (where the bias is nearly constant)."""
    assert_relative(randomise(build_encoding("cpb", DIMS, {"policy": policy, "hidden": 64})))
    assert_float32_under_autocast(lambda: randomise(build_encoding("cpb", DIMS, {"policy": policy, "hidden": 64})))


def test_cpb_weights_saved_before_the_cls_entries_load_with_them_zero():
    """A kept model of an earlier run has no ``pe.cpb_cls``: it loads (strictly) with the cls
    entries 0, the cls row and column it was trained with, everything else as saved; a state
    dict missing anything else still fails to load."""
    cfg = ViTConfig(image_size=16, num_classes=3, dim=32, depth=2, heads=4, patch_kernel=4, patch_stride=4)
    torch.manual_seed(8)
    old = build_model(cfg, "cpb", {"hidden": 16})
    randomise(old.pe, seed=8)
    state = {k: v for k, v in old.state_dict().items() if k != "pe.cpb_cls"}
    torch.manual_seed(9)
    new = build_model(cfg, "cpb", {"hidden": 16})
    assert (new.pe.cpb_cls == 8.0).all()
    new.load_state_dict(state)
    assert not new.pe.cpb_cls.any()
    for name, value in state.items():
        assert torch.equal(new.state_dict()[name], value), name
    b = biases(new.pe, make_grid(3, 5))
    assert not b[..., 0, :].any() and not b[..., :, 0].any()  # the earlier definition: cls row and column 0
    torch.testing.assert_close(b[..., 1:, 1:], biases(old.pe, make_grid(3, 5))[..., 1:, 1:], atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="pe.cpb_w2"):
        new.load_state_dict({k: v for k, v in state.items() if k != "pe.cpb_w2"})
