"""``rpb`` against a plain reference written from its definition (encodings/rpb.py's docstring).

The reference loops over every token pair in plain Python floats: the offset of patches i and j
is (y_i - y_j, x_i - x_j), rounded; on the training grid, and under ``extrapolate`` (clamped to
the trained range), it reads the table entry T[dy + H - 1, dx + W - 1]; under ``interpolate``
it evaluates an independent bicubic interpolant of the table (cubic convolution, a = -0.75,
border entries repeated, as PyTorch's bicubic) at the offset rescaled by the harness's
``interpolate`` policy, u (H - 1)/(H' - 1). The cls row and column are zero.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.encodings import EncodingConfigError, ModelDims, PatchGrid, build_encoding

DIMS = ModelDims(dim=32, depth=3, heads=4, train_rows=4, train_cols=4)
NONSQUARE = ModelDims(dim=32, depth=2, heads=2, train_rows=3, train_cols=5)
A = -0.75  # PyTorch's bicubic coefficient


def make_grid(rows, cols, dims=DIMS, offset=(0.0, 0.0)):
    return PatchGrid(rows=rows, cols=cols, train_rows=dims.train_rows, train_cols=dims.train_cols,
                     num_prefix=1, offset=offset)


def cubic_weight(s):
    """The cubic convolution kernel (Keys 1981) with a = A, at distance s."""
    s = abs(s)
    if s <= 1:
        return ((A + 2) * s - (A + 3)) * s * s + 1
    if s < 2:
        return ((A * s - 5 * A) * s + 8 * A) * s - 4 * A
    return 0.0


def bicubic_at(table, cy, cx):
    """A 2-D list ``table`` interpolated at (cy, cx) in index units: 4 x 4 neighbours, clamped
    to the border."""
    rows, cols = len(table), len(table[0])
    iy, ix = math.floor(cy), math.floor(cx)
    total = 0.0
    for m in range(-1, 3):
        wy = cubic_weight(cy - (iy + m))
        r = min(max(iy + m, 0), rows - 1)
        for n in range(-1, 3):
            wx = cubic_weight(cx - (ix + n))
            c = min(max(ix + n, 0), cols - 1)
            total += wy * wx * table[r][c]
    return total


def axis_scale(n, n_train, policy):
    """The harness's ``interpolate`` policy on one axis: (n_train - 1)/(n - 1) off the training size."""
    if policy == "interpolate" and n > 1 and n != n_train:
        return (n_train - 1) / (n - 1)
    return 1.0


def rpb_reference(table, grid, policy):
    """Bias (h, T, T) from the definition, one token pair at a time; ``table`` (h, 2H-1, 2W-1)."""
    heads = table.shape[0]
    H, W = (table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2
    tab = table.double().tolist()
    pos = [(y + grid.offset[0], x + grid.offset[1]) for y in range(grid.rows) for x in range(grid.cols)]
    sy = axis_scale(grid.rows, H, policy)
    sx = axis_scale(grid.cols, W, policy)
    T = grid.num_tokens
    out = torch.zeros(heads, T, T, dtype=torch.float64)
    for h in range(heads):
        for i, (yi, xi) in enumerate(pos):
            for j, (yj, xj) in enumerate(pos):
                dy, dx = round(yi - yj), round(xi - xj)
                if policy == "extrapolate":
                    dy, dx = min(max(dy, -(H - 1)), H - 1), min(max(dx, -(W - 1)), W - 1)
                    value = tab[h][dy + H - 1][dx + W - 1]
                else:
                    value = bicubic_at(tab[h], dy * sy + H - 1, dx * sx + W - 1)
                out[h, 1 + i, 1 + j] = value
    return out


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual.detach().double(), expected.double(), atol=atol, rtol=1e-5)


def layer_table(pe, layer):
    return pe.table[0 if pe.opts.shared else layer].detach()


# ---------------------------------------------------------------------------- the reference's own check
def test_bicubic_reference_matches_pytorch_bicubic_align_corners():
    """The loop reference reproduces F.interpolate(bicubic, align_corners=True) at its sample points."""
    torch.manual_seed(0)
    t = torch.randn(3, 5, 7, dtype=torch.float64)
    for size in ((9, 13), (3, 3), (11, 5), (1, 9)):
        want = F.interpolate(t[None], size=size, mode="bicubic", align_corners=True)[0]
        for h in range(3):
            for o in range(size[0]):
                for p in range(size[1]):
                    cy = o * (5 - 1) / (size[0] - 1) if size[0] > 1 else 0.0
                    cx = p * (7 - 1) / (size[1] - 1) if size[1] > 1 else 0.0
                    assert bicubic_at(t[h].tolist(), cy, cx) == pytest.approx(want[h, o, p].item(), abs=1e-12)


# ---------------------------------------------------------------------------- the definition
GRIDS = [(4, 4), (3, 5), (6, 6), (2, 2), (7, 3), (1, 5), (5, 1), (1, 1)]


@pytest.mark.parametrize("policy", ["interpolate", "extrapolate"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("rows,cols", GRIDS)
def test_rpb_against_pair_loop(rows, cols, shared, policy):
    torch.manual_seed(1)
    pe = build_encoding("rpb", DIMS, {"shared": shared, "policy": policy})
    assert pe.table.shape == (1 if shared else DIMS.depth, DIMS.heads, 7, 7)
    grid = make_grid(rows, cols)
    state = pe.state(grid, "cpu")
    for layer in range(DIMS.depth):
        bias = pe.attn_bias(grid, state, layer)
        assert bias.shape == (DIMS.heads, grid.num_tokens, grid.num_tokens) and bias.dtype == torch.float32
        close(bias, rpb_reference(layer_table(pe, layer), grid, policy))
        assert not bias[:, 0, :].any() and not bias[:, :, 0].any(), "the cls row and column must be zero"


@pytest.mark.parametrize("policy", ["interpolate", "extrapolate"])
@pytest.mark.parametrize("rows,cols", [(3, 5), (2, 3), (6, 8), (4, 4), (1, 7), (3, 1)])
def test_rpb_nonsquare_training_grid(rows, cols, policy):
    torch.manual_seed(2)
    pe = build_encoding("rpb", NONSQUARE, {"policy": policy})
    assert pe.table.shape == (2, 2, 5, 9)
    grid = make_grid(rows, cols, dims=NONSQUARE)
    state = pe.state(grid, "cpu")
    for layer in range(NONSQUARE.depth):
        close(pe.attn_bias(grid, state, layer), rpb_reference(layer_table(pe, layer), grid, policy))


@pytest.mark.parametrize("policy", ["interpolate", "extrapolate"])
def test_rpb_trained_with_a_single_row(policy):
    """H = 1: only offset 0 along y; every new row offset reads it (the y axis of the bias is constant)."""
    torch.manual_seed(3)
    dims = ModelDims(dim=16, depth=1, heads=2, train_rows=1, train_cols=4)
    pe = build_encoding("rpb", dims, {"policy": policy})
    assert pe.table.shape == (1, 2, 1, 7)
    for rows, cols in ((1, 4), (3, 4), (4, 6), (2, 2)):
        grid = make_grid(rows, cols, dims=dims)
        bias = pe.attn_bias(grid, pe.state(grid, "cpu"), 0)
        close(bias, rpb_reference(layer_table(pe, 0), grid, policy))
        patches = bias[:, 1:, 1:].reshape(2, rows, cols, rows, cols)
        close(patches, patches[:, :1, :, :1].expand_as(patches))  # independent of the rows


def test_rpb_is_the_table_itself_on_the_training_grid():
    """No resampling on the training grid: every entry is a table entry, bit for bit, under both policies."""
    torch.manual_seed(4)
    pe = build_encoding("rpb", NONSQUARE)
    grid = make_grid(3, 5, dims=NONSQUARE)
    for policy in ("interpolate", "extrapolate"):
        with pe.policy(policy):
            bias = pe.attn_bias(grid, pe.state(grid, "cpu"), 1)
        for i in range(15):
            for j in range(15):
                dy, dx = i // 5 - j // 5, i % 5 - j % 5
                assert bias[0, 1 + i, 1 + j] == pe.table[1, 0, dy + 2, dx + 4]


def test_rpb_extrapolate_saturates_at_the_table_edge():
    torch.manual_seed(5)
    pe = build_encoding("rpb", DIMS, {"policy": "extrapolate"})
    grid = make_grid(9, 9)
    bias = pe.attn_bias(grid, pe.state(grid, "cpu"), 2)[:, 1:, 1:].reshape(DIMS.heads, 9, 9, 9, 9)
    t = pe.table[2].detach()
    # query (8, 8), keys along row 8: dx = 8 - x, clamped to 3 for x <= 5
    for x in range(9):
        close(bias[:, 8, 8, 8, x], t[:, 3, 3 + min(8 - x, 3)])
    # query (0, 0) against key (8, 8): offset (-8, -8) -> the corner entry T[0, 0]
    close(bias[:, 0, 0, 8, 8], t[:, 0, 0])
    # the far offsets all share one value: the bias is flat beyond +-(H - 1)
    assert torch.equal(bias[:, 8, 8, 0, 0], bias[:, 8, 8, 5, 5])


def test_rpb_interpolate_ends_align_with_the_table():
    """Under interpolate the largest new offsets read the table's edge entries exactly, and
    the centre (offset 0) its centre."""
    torch.manual_seed(6)
    pe = build_encoding("rpb", DIMS)
    grid = make_grid(7, 10)
    bias = pe.attn_bias(grid, pe.state(grid, "cpu"), 0)[:, 1:, 1:].reshape(DIMS.heads, 7, 10, 7, 10)
    t = pe.table[0].detach()
    close(bias[:, 6, 9, 0, 0], t[:, 6, 6])  # offset (+6, +9) -> (+3, +3)
    close(bias[:, 0, 0, 6, 9], t[:, 0, 0])
    close(bias[:, 3, 4, 3, 4], t[:, 3, 3])


def test_rpb_shared_table_is_one_bias_for_every_layer():
    torch.manual_seed(7)
    shared = build_encoding("rpb", DIMS, {"shared": True})
    per_layer = build_encoding("rpb", DIMS)
    assert shared.num_trainable() == 4 * 7 * 7 and per_layer.num_trainable() == 3 * 4 * 7 * 7
    for rows, cols in ((4, 4), (6, 3)):
        grid = make_grid(rows, cols)
        s, p = shared.state(grid, "cpu"), per_layer.state(grid, "cpu")
        b0 = shared.attn_bias(grid, s, 0)
        for layer in range(1, DIMS.depth):
            assert torch.equal(shared.attn_bias(grid, s, layer), b0)
            assert not torch.allclose(per_layer.attn_bias(grid, p, layer), per_layer.attn_bias(grid, p, 0))


def test_rpb_offset_shift_changes_nothing():
    """Offsets come from PatchGrid.yx (offset included) and are rounded: a shift of every
    position leaves the bias exactly as it is (the kit's check_relative tests the logits)."""
    torch.manual_seed(8)
    for policy in ("interpolate", "extrapolate"):
        pe = build_encoding("rpb", DIMS, {"policy": policy})
        for rows, cols in ((4, 4), (3, 6)):
            base = pe.state(make_grid(rows, cols), "cpu")
            for shift in ((2.0, -3.0), (0.75, 1.5), (-0.5, 0.25)):
                grid = make_grid(rows, cols, offset=shift)
                moved = pe.state(grid, "cpu")
                assert torch.equal(moved, base)
                close(moved[0], rpb_reference(layer_table(pe, 0), grid, policy))


def test_rpb_gradient_reaches_the_table_entries_used():
    torch.manual_seed(9)
    pe = build_encoding("rpb", DIMS, {"policy": "extrapolate"})
    grid = make_grid(2, 2)  # offsets -1..1 only
    state = pe.state(grid, "cpu")
    sum(pe.attn_bias(grid, state, layer).sum() for layer in range(DIMS.depth)).backward()
    g = pe.table.grad
    # entry (dy, dx) is used by (2 - |dy|)(2 - |dx|) pairs, in every head and layer
    want = torch.zeros(7, 7)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            want[dy + 3, dx + 3] = (2 - abs(dy)) * (2 - abs(dx))
    close(g, want.expand_as(g))


def test_rpb_state_rebuilt_per_forward_index_cached():
    pe = build_encoding("rpb", DIMS)
    assert not pe.fixed_tables and pe.relative
    grid = make_grid(5, 3)
    a = pe.state(grid, "cpu")
    assert pe.state(grid, "cpu") is not a  # learned: rebuilt from the parameter every forward
    with torch.no_grad():
        pe.table.add_(1.0)
    close(pe.state(grid, "cpu")[:, :, 1:, 1:], a[:, :, 1:, 1:] + 1.0)
    assert len(pe._index) == 1
    with pe.policy("extrapolate"):
        pe.state(grid, "cpu")
    assert len(pe._index) == 2  # the other policy indexes another table shape


def test_rpb_options():
    pe = build_encoding("rpb", DIMS)
    assert pe.no_weight_decay() == {"table"}
    assert pe.opts.policy == "interpolate" and pe.opts.shared is False and pe.opts.init_std == 0.02
    assert 0.015 < pe.table.std().item() < 0.025
    with pytest.raises(EncodingConfigError, match="init_std"):
        build_encoding("rpb", DIMS, {"init_std": 0.0})
    with pytest.raises(EncodingConfigError):
        build_encoding("rpb", DIMS, {"policy": "interpolate_eva"})
