"""``string`` (Cayley-STRING, Schenck et al. 2025) against references written from its definition.

The references are deliberately naive (Python loops, float64) and follow the definition in the
module docstring, not the code:

- S = U - U^T with U strictly upper triangular, its entries in row-major order over i < j;
  P = (I - S)(I + S)^{-1};
- J_x, J_y: block diagonal, pair j = channels (2j, 2j+1), block f_j,axis * [[0, -1], [1, 0]]
  (the rotation (z0, z1) -> (z0 cos a - z1 sin a, z0 sin a + z1 cos a) is exp(a [[0, -1], [1, 0]]));
- STRING's generators L_x = P^T J_x P, L_y = P^T J_y P and R(p) = exp(x L_x + y L_y), p = (x, y) the
  patch's column and row plus ``grid.offset``, scaled per axis by the policy;
- every logit is q_i^T R(p_i)^T R(p_j) k_j, the cls token's included: it has no position, so its
  R is the identity (RoPE(p_cls) = I, R = P^T I P = I), and a logit between the cls token and a
  patch j is q_cls^T R(p_j) k_j (issue #21: the cls token was left as it was, so its logits were
  q_cls^T RoPE(p_j) P k_j, not STRING's, as soon as S != 0).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness.conformance import assert_relative
from harness.encodings import ModelDims, PatchGrid, build_encoding, get_encoding
from harness.models import ViTConfig, build_model

# d = 8 (4 heads) and d = 16 (2 heads); a 4 x 4 training grid
DIMS = [ModelDims(dim=32, depth=2, heads=4, train_rows=4, train_cols=4),
        ModelDims(dim=32, depth=2, heads=2, train_rows=4, train_cols=4)]
DIMS_IDS = ["d8", "d16"]
POLICIES = ["extrapolate", "interpolate"]
# the training grid, a non-square one, a smaller one and a larger one
GRIDS = [(4, 4), (3, 5), (2, 3), (7, 9)]


def make_grid(rows, cols, dims, offset=(0.0, 0.0)):
    return PatchGrid(rows=rows, cols=cols, train_rows=dims.train_rows, train_cols=dims.train_cols,
                     num_prefix=1, offset=offset)


def axis_scale(n, n_train, policy):
    if policy == "interpolate" and n > 1 and n != n_train:
        return (n_train - 1) / (n - 1)
    return 1.0


def positions(grid, dims, policy):
    """(x, y) of every patch in raster order: index plus offset, scaled per axis (plain floats)."""
    sx = axis_scale(grid.cols, dims.train_cols, policy)
    sy = axis_scale(grid.rows, dims.train_rows, policy)
    return [((c + grid.offset[1]) * sx, (r + grid.offset[0]) * sy) for r in range(grid.rows) for c in range(grid.cols)]


def perturbed(dims, policy="extrapolate", seed=0, skew_scale=0.5):
    """An encoding with S and the frequencies moved away from their initialisation (P != I)."""
    torch.manual_seed(seed)
    pe = build_encoding("string", dims, {"policy": policy})
    with torch.no_grad():
        pe.skew.copy_(torch.randn_like(pe.skew) * skew_scale)
        pe.freqs.copy_(torch.randn_like(pe.freqs) * 0.7)
    return pe


# ------------------------------------------------------------------ references from the definition
def skew_reference(pe, layer, head):
    d = pe.dims.head_dim
    vals = pe.skew.detach().double()[layer, head]
    U = torch.zeros(d, d, dtype=torch.float64)
    e = 0
    for i in range(d):
        for j in range(i + 1, d):
            U[i, j] = vals[e]
            e += 1
    assert e == vals.numel()
    return U - U.T


def basis_reference(pe, layer, head):
    S = skew_reference(pe, layer, head)
    eye = torch.eye(S.shape[0], dtype=torch.float64)
    return (eye - S) @ torch.linalg.inv(eye + S)


def rope_generator_reference(pe, layer, head, axis):
    """J_axis: block diagonal, block j = f_j,axis [[0, -1], [1, 0]] (axis 0: x, 1: y)."""
    d = pe.dims.head_dim
    f = pe.freqs.detach().double()[layer, head]  # (d/2, 2) = (f_x, f_y) per pair
    J = torch.zeros(d, d, dtype=torch.float64)
    for j in range(d // 2):
        J[2 * j, 2 * j + 1] = -f[j, axis]
        J[2 * j + 1, 2 * j] = f[j, axis]
    return J


def string_generators(pe, layer, head):
    P = basis_reference(pe, layer, head)
    return [P.T @ rope_generator_reference(pe, layer, head, axis) @ P for axis in (0, 1)]


def reference_logits(pe, grid, policy, q, k, layer):
    """(B, h, N, N) float64: q_i^T R(p_i)^T R(p_j) k_j with R(p) = exp(x L_x + y L_y), token by token."""
    B, h, T, d = q.shape
    pos = positions(grid, pe.dims, policy)
    out = torch.zeros(B, h, grid.num_patches, grid.num_patches, dtype=torch.float64)
    for head in range(h):
        Lx, Ly = string_generators(pe, layer, head)
        R = [torch.linalg.matrix_exp(x * Lx + y * Ly) for x, y in pos]
        rq = torch.stack([q[:, head, 1 + n].double() @ R[n].T for n in range(grid.num_patches)], 1)  # R q_i
        rk = torch.stack([k[:, head, 1 + n].double() @ R[n].T for n in range(grid.num_patches)], 1)
        out[:, head] = rq @ rk.transpose(-1, -2)
    return out


def relative_logits(pe, grid, policy, q, k, layer):
    """(B, h, N, N) float64: q_i^T R(p_j - p_i) k_j, the relative form."""
    B, h, T, d = q.shape
    pos = positions(grid, pe.dims, policy)
    out = torch.zeros(B, h, grid.num_patches, grid.num_patches, dtype=torch.float64)
    for head in range(h):
        Lx, Ly = string_generators(pe, layer, head)
        for i, (xi, yi) in enumerate(pos):
            for j, (xj, yj) in enumerate(pos):
                R = torch.linalg.matrix_exp((xj - xi) * Lx + (yj - yi) * Ly)
                for b in range(B):
                    out[b, head, i, j] = q[b, head, 1 + i].double() @ R @ k[b, head, 1 + j].double()
    return out


def module_logits(pe, grid, q, k, layer, state=None, cls=False):
    """The hook's logits q_i'.k_j' in float64: patch to patch (B, h, N, N), or with ``cls`` every
    token pair (B, h, T, T), the cls token first."""
    state = pe.state(grid, "cpu") if state is None else state
    q2, k2 = pe.qk(q, k, grid, state, layer)
    assert q2.shape == q.shape and k2.shape == k.shape
    p = 0 if cls else grid.num_prefix
    return q2[:, :, p:].double() @ k2[:, :, p:].double().transpose(-1, -2)


def full_reference_logits(pe, grid, policy, q, k, layer):
    """(B, h, T, T) float64: every logit q_a^T R_a^T R_b k_b of the T = 1 + N tokens, from the
    definition: R = exp(x L_x + y L_y) per patch, R = I for the cls token (no position)."""
    B, h, T, d = q.shape
    pos = positions(grid, pe.dims, policy)
    out = torch.zeros(B, h, T, T, dtype=torch.float64)
    for head in range(h):
        Lx, Ly = string_generators(pe, layer, head)
        R = [torch.eye(d, dtype=torch.float64)] + [torch.linalg.matrix_exp(x * Lx + y * Ly) for x, y in pos]
        rq = torch.stack([q[:, head, t].double() @ R[t].T for t in range(T)], 1)  # R_t q_t
        rk = torch.stack([k[:, head, t].double() @ R[t].T for t in range(T)], 1)
        out[:, head] = rq @ rk.transpose(-1, -2)
    return out


def random_qk(dims, grid, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, dims.heads, grid.num_tokens, dims.head_dim)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


# ============================================================================ (a) the definition
@pytest.mark.parametrize("dims", DIMS, ids=DIMS_IDS)
def test_generators_are_skew_symmetric_and_commute(dims):
    pe = perturbed(dims)
    for layer in range(dims.depth):
        for head in range(dims.heads):
            P = basis_reference(pe, layer, head)
            assert (P - torch.eye(dims.head_dim, dtype=torch.float64)).abs().max() > 0.1, "P is still I"
            Lx, Ly = string_generators(pe, layer, head)
            torch.testing.assert_close(Lx.T, -Lx, atol=1e-12, rtol=0)
            torch.testing.assert_close(Ly.T, -Ly, atol=1e-12, rtol=0)
            assert (Lx @ Ly - Ly @ Lx).abs().max() < 1e-12
            # not trivially: the generators are dense (P mixes the pairs) and differ
            assert (Lx - rope_generator_reference(pe, layer, head, 0)).abs().max() > 1e-2
            assert (Lx - Ly).abs().max() > 1e-2


@pytest.mark.parametrize("dims", DIMS, ids=DIMS_IDS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape,offset", [((4, 4), (0.0, 0.0)), ((3, 5), (1.0, -2.5)), ((2, 3), (0.0, 0.0)),
                                          ((6, 7), (0.0, 0.0))], ids=["4x4-train", "3x5-offset", "2x3", "6x7"])
def test_logits_against_matrix_exponential(dims, policy, shape, offset):
    """Every patch logit of every layer and head: q_i'.k_j' = q_i^T R(p_i)^T R(p_j) k_j, with
    R(p) = exp(x L_x + y L_y) computed per token in float64 from the generators."""
    pe = perturbed(dims, policy)
    grid = make_grid(*shape, dims, offset)
    state = pe.state(grid, "cpu")
    q, k = random_qk(dims, grid)
    for layer in range(dims.depth):
        got = module_logits(pe, grid, q, k, layer, state)
        want = reference_logits(pe, grid, policy, q, k, layer)
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("dims", DIMS, ids=DIMS_IDS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape,offset", [((4, 4), (0.0, 0.0)), ((3, 5), (1.0, -2.5)), ((6, 7), (0.0, 0.0))],
                         ids=["4x4-train", "3x5-offset", "6x7"])
def test_cls_logits_against_matrix_exponential(dims, policy, shape, offset):
    """Issue #21: the whole (1 + N) x (1 + N) logit matrix, the cls row, column and corner
    included, is STRING's with R_cls = I, for a learned S (P != I) and random q, k. The cls
    entries must differ from the logits of an untouched cls token, or the test shows nothing."""
    pe = perturbed(dims, policy)
    grid = make_grid(*shape, dims, offset)
    state = pe.state(grid, "cpu")
    q, k = random_qk(dims, grid, seed=3)
    for layer in range(dims.depth):
        got = module_logits(pe, grid, q, k, layer, state, cls=True)
        want = full_reference_logits(pe, grid, policy, q, k, layer)
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
        # the cls token passed through untouched would give q_cls^T RoPE(p_j) P k_j: far from STRING's
        q2, k2 = pe.qk(q, k, grid, state, layer)
        untouched = q[:, :, :1].double() @ k2[:, :, 1:].double().transpose(-1, -2)
        assert (untouched - want[:, :, :1, 1:]).abs().max() > 0.1


@pytest.mark.parametrize("dims", DIMS, ids=DIMS_IDS)
def test_reference_is_the_relative_form(dims):
    """From the definition alone: R(p_i)^T R(p_j) = R(p_j - p_i) (commuting generators), so the
    module's logits are also q_i^T R(p_j - p_i) k_j."""
    pe = perturbed(dims, "interpolate", seed=3)
    grid = make_grid(3, 5, dims, (0.5, -1.0))
    q, k = random_qk(dims, grid, batch=1, seed=1)
    for layer in range(dims.depth):
        want = relative_logits(pe, grid, "interpolate", q, k, layer)
        torch.testing.assert_close(reference_logits(pe, grid, "interpolate", q, k, layer), want, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(module_logits(pe, grid, q, k, layer), want, atol=2e-4, rtol=1e-4)


def test_each_layer_and_head_has_its_own_basis():
    dims = DIMS[0]
    pe = perturbed(dims)
    P = pe.state(make_grid(4, 4, dims), "cpu")[1]
    assert P.shape == (dims.depth, dims.heads, dims.head_dim, dims.head_dim)
    for layer in range(dims.depth):
        for head in range(dims.heads):
            torch.testing.assert_close(P[layer, head].double(), basis_reference(pe, layer, head), atol=1e-5, rtol=0)
    assert (P[0, 0] - P[1, 0]).abs().max() > 1e-2 and (P[0, 0] - P[0, 1]).abs().max() > 1e-2


# ============================================================================ (b) translation invariance
def assert_logits_depend_on_offsets_only(pe, grid, atol=1e-4):
    """With the same q and the same k at every token, the logit of patches i and j must be a
    function of their grid offset only: every pair of pairs with the same offset agrees."""
    d = pe.dims
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, d.heads, 1, d.head_dim, generator=g).expand(-1, -1, grid.num_tokens, -1)
    k = torch.randn(1, d.heads, 1, d.head_dim, generator=g).expand(-1, -1, grid.num_tokens, -1)
    cells = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    spread = 0.0
    for layer in range(d.depth):
        logits = module_logits(pe, grid, q, k, layer)[0]  # (h, N, N)
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i, (ri, ci) in enumerate(cells):
            for j, (rj, cj) in enumerate(cells):
                groups.setdefault((rj - ri, cj - ci), []).append((i, j))
        means = []
        for offset, pairs in groups.items():
            vals = torch.stack([logits[:, i, j] for i, j in pairs])  # (pairs, h)
            gap = (vals.max(0).values - vals.min(0).values).max().item()
            assert gap <= atol, f"layer {layer}, offset {offset}: logits of equal offsets differ by {gap:.3g}"
            means.append(vals.mean(0))
        means = torch.stack(means)
        spread = max(spread, (means.max(0).values - means.min(0).values).max().item())
    assert spread > 1e-2, "the logits do not depend on the offset at all"


@pytest.mark.parametrize("dims", DIMS, ids=DIMS_IDS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape", GRIDS, ids=[f"{r}x{c}" for r, c in GRIDS])
def test_logits_depend_on_offsets_only(dims, policy, shape):
    pe = perturbed(dims, policy, seed=1)
    grid = make_grid(*shape, dims)
    assert_logits_depend_on_offsets_only(pe, grid)
    # shifting every position by grid.offset changes no logit
    q, k = random_qk(dims, grid, seed=2)
    for layer in range(dims.depth):
        base = module_logits(pe, grid, q, k, layer)
        for offset in ((2.0, -3.0), (0.75, 1.5), (-7.25, 11.0)):
            moved = module_logits(pe, dataclasses.replace(grid, offset=offset), q, k, layer)
            torch.testing.assert_close(moved, base, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("policy", POLICIES)
def test_kit_relative_check_with_learned_basis(policy):
    assert_relative(perturbed(DIMS[0], policy, seed=2))
    assert_relative(perturbed(DIMS[1], policy, seed=2, skew_scale=2.0))


def test_offset_check_fails_for_an_absolute_encoding():
    """The offset check above can fail: LieRE with blocks of 8 (non-commuting generators)."""
    torch.manual_seed(0)
    liere = build_encoding("liere", DIMS[1])  # d = 16: two blocks of 8
    with pytest.raises(AssertionError, match="logits of equal offsets differ"):
        assert_logits_depend_on_offsets_only(liere, make_grid(4, 4, DIMS[1]))


# ============================================================================ (c) P is a rotation
@pytest.mark.parametrize("dims", DIMS, ids=DIMS_IDS)
@pytest.mark.parametrize("skew_scale", [0.5, 5.0])
def test_basis_is_a_rotation(dims, skew_scale):
    """P read through the hook (the patch at (0, 0) has RoPE(0) = I, so it gets P q; basis
    vectors give P's columns): equal to the definition's, orthogonal, det +1."""
    pe = perturbed(dims, seed=4, skew_scale=skew_scale)
    grid = make_grid(3, 5, dims)
    state = pe.state(grid, "cpu")
    d, T = dims.head_dim, grid.num_tokens
    basis = torch.eye(d)[:, None, None, :].expand(d, dims.heads, T, d).contiguous()  # batch c: e_c everywhere
    eye = torch.eye(d, dtype=torch.float64)
    for layer in range(dims.depth):
        q2, _ = pe.qk(basis, basis, grid, state, layer)
        for head in range(dims.heads):
            P = q2[:, head, 1].double().T  # column c = P e_c
            torch.testing.assert_close(P, basis_reference(pe, layer, head), atol=1e-5, rtol=0)
            torch.testing.assert_close(P.T @ P, eye, atol=1e-5, rtol=0)
            assert torch.linalg.det(P).item() == pytest.approx(1.0, abs=1e-5)
            assert (P - eye).abs().max() > 0.1
    # the float32 table itself
    P32 = state[1].double()
    torch.testing.assert_close(P32.transpose(-1, -2) @ P32, eye.expand_as(P32), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(P32), torch.ones(P32.shape[:2], dtype=torch.float64),
                               atol=1e-5, rtol=0)


# ============================================================================ initialisation and parameters
def test_init_is_rope_mixed():
    """S = 0 at init, so P = I and the encoding turns q and k exactly as rope_mixed with the same
    frequencies; the frequencies follow rope_mixed's initialisation."""
    dims = ModelDims(dim=64, depth=3, heads=4, train_rows=4, train_cols=4)  # d = 16
    torch.manual_seed(0)
    pe = build_encoding("string", dims)
    d = dims.head_dim
    assert pe.skew.shape == (dims.depth, dims.heads, d * (d - 1) // 2) and not pe.skew.any()
    assert pe.freqs.shape == (dims.depth, dims.heads, d // 2, 2)
    mags = [10.0 ** (-4 * k / d) for k in range(d // 4)]
    f = pe.freqs.detach().double()
    for layer in range(dims.depth):
        for head in range(dims.heads):
            alpha = math.atan2(float(f[layer, head, 0, 1]), float(f[layer, head, 0, 0]))
            for j in range(d // 2):
                m = mags[j % (d // 4)]
                want = (math.cos(alpha), math.sin(alpha)) if j < d // 4 else (-math.sin(alpha), math.cos(alpha))
                got = (float(f[layer, head, j, 0]), float(f[layer, head, j, 1]))
                assert got == pytest.approx((m * want[0], m * want[1]), abs=1e-6)
    grid = make_grid(3, 5, dims, (0.5, 1.0))
    state = pe.state(grid, "cpu")
    assert torch.equal(state[1], torch.eye(d).expand(dims.depth, dims.heads, d, d))
    mixed = build_encoding("rope_mixed", dims)
    with torch.no_grad():
        mixed.freqs.copy_(pe.freqs)
    mixed_state = mixed.state(grid, "cpu")
    q, k = random_qk(dims, grid)
    for layer in range(dims.depth):
        q2, k2 = pe.qk(q, k, grid, state, layer)
        mq, mk = mixed.qk(q, k, grid, mixed_state, layer)
        torch.testing.assert_close(q2, mq, atol=1e-6, rtol=0)
        torch.testing.assert_close(k2, mk, atol=1e-6, rtol=0)


def test_gradients_reach_s_at_init_and_no_weight_decay():
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, num_classes=3, dim=32, depth=2, heads=4, patch_kernel=4, patch_stride=4)
    model = build_model(cfg, "string")
    model(torch.randn(2, 3, 16, 16)).square().mean().backward()
    for name in ("skew", "freqs"):
        grad = getattr(model.pe, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.pe.no_weight_decay() == {"freqs", "skew"}
    assert {"pe.freqs", "pe.skew"} <= model.no_weight_decay()
    assert get_encoding("string").relative
    assert get_encoding("string").describe().policies == ("extrapolate", "interpolate")


def test_bf16_inputs_are_turned_in_float32_and_returned_in_bf16():
    dims = DIMS[1]
    pe = perturbed(dims)
    grid = make_grid(3, 5, dims)
    q, k = random_qk(dims, grid)
    qb, kb = q.bfloat16(), k.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = pe.state(grid, "cpu")
        q2, k2 = pe.qk(qb, kb, grid, state, 0)
    assert q2.dtype == torch.bfloat16 and state[0].dtype == torch.complex64 and state[1].dtype == torch.float32
    ref, _ = pe.qk(qb.float(), kb.float(), grid, pe.state(grid, "cpu"), 0)
    torch.testing.assert_close(q2.float(), ref.bfloat16().float(), atol=0, rtol=0)
