"""The conformance kit: checks every registered encoding must pass, built-in or plugin.

A plugin's own test suite can run it too::

    import pytest
    from harness.conformance import CHECKS

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_my_encoding(check):
        check("my_encoding")

Each check takes an encoding name and raises ``AssertionError`` on failure. Besides what
every encoding must do, the kit tests what an encoding declares: ``relative = True`` (the
logits depend on position offsets only), ``fixed_tables = True`` (tables cached per grid) and
``cls_untouched`` (True: the cls token left as it is; False: what it gets has no position).
Every encoding must also keep its tables in float32 under bf16 autocast (``check_float32_under_autocast``).
The model is tiny (16 px training images, 4x4 patches: a 4x4 training grid).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from typing import Any, Callable

import torch

from harness.config import ViTConfig
from harness.encodings.base import HOOKS, PatchGrid, PositionalEncoding, build_encoding, get_encoding
from harness.errors import HarnessError
from harness.models.vit import build_model

__all__ = ["BF16_UNIT", "CHECKS", "TINY", "assert_float32_under_autocast", "assert_relative", "check_all",
           "input_sizes", "tables_of"]

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
    return [{"policy": p} for p in get_encoding(name).describe().policies] or [{}]


def _model(name: str, cfg: ViTConfig, options: dict[str, Any], seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg, name, options)


def check_metadata(name: str) -> None:
    """What the class declares is well formed: a one-line docstring (the listing shows it);
    ``Options`` a frozen dataclass whose every field has a default, and the defaults pass the
    encoding's own checks; a ``policy`` option's default among its choices; ``relative`` and
    ``fixed_tables`` and ``cls_untouched`` booleans; every overridden hook callable with the base hook's arguments;
    ``no_weight_decay`` naming parameters that exist."""
    cls = get_encoding(name)
    assert cls.name == name, f"{name}: registered under {name!r} but its class says name = {cls.name!r}"
    doc = (cls.__doc__ or "").strip()
    assert doc, f"{name}: the class needs a docstring (its first line is the listing's description)"
    opts = cls.Options
    assert dataclasses.is_dataclass(opts) and opts.__dataclass_params__.frozen, (
        f"{name}: Options must be a frozen dataclass (@dataclass(frozen=True))"
    )
    for f in dataclasses.fields(opts):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, (
            f"{name}: option {f.name!r} has no default (a study may leave every option unset)"
        )
    summary = cls.describe()
    if "policy" in summary.options:
        policy = typing.get_type_hints(opts)["policy"]
        assert typing.get_origin(policy) is typing.Literal and summary.policies, (
            f"{name}: option 'policy' must be typed Literal[...] of the policies it supports, got {policy!r}"
        )
        assert summary.default_policy in summary.policies, (
            f"{name}: the default policy {summary.default_policy!r} is not one of {summary.policies}"
        )
    for attr in ("relative", "fixed_tables", "cls_untouched"):
        assert isinstance(getattr(cls, attr), bool), (
            f"{name}: {attr} must be True or False, got {getattr(cls, attr)!r}"
        )
    assert isinstance(cls.head_dim_multiple, int) and cls.head_dim_multiple >= 1, (
        f"{name}: head_dim_multiple must be a positive integer, got {cls.head_dim_multiple!r}"
    )
    for hook in (*HOOKS, "build"):
        impl, spec = getattr(cls, hook), getattr(PositionalEncoding, hook)
        assert callable(impl), f"{name}: {hook} must be a method, got {impl!r}"
        wanted = list(inspect.signature(spec).parameters)
        got = list(inspect.signature(impl).parameters)
        assert len(got) == len(wanted), (
            f"{name}: {hook}{inspect.signature(impl)} must take the arguments of "
            f"PositionalEncoding.{hook}{inspect.signature(spec)}"
        )
    try:
        pe = cls(TINY.dims)
    except HarnessError as exc:
        raise AssertionError(f"{name}: the default options fail the encoding's own checks: {exc}") from None
    params = {n for n, _ in pe.named_parameters()}
    assert set(pe.no_weight_decay()) <= params, (
        f"{name}: no_weight_decay names {sorted(set(pe.no_weight_decay()) - params)}, which are not parameters "
        f"(parameters: {sorted(params)})"
    )


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
    """The cls token gets no position. Where the encoding declares ``cls_untouched`` (the
    default), its q and k are not changed and its bias row and column are zero; where it does
    not (its definition acts on the cls token, as ``string`` and ``cpb`` do), what it gets does
    not depend on the grid: given the same cls q and k, its q and k after the hook are the same
    on every grid shape and offset whatever the patch tokens hold, and its bias row (cls to
    patch), column (patch to cls) and corner are one value each per head, the same on every grid.
    Either way token hooks see the patch tokens only, and the hook between blocks leaves it as it is."""
    cls = get_encoding(name)
    pe = build_encoding(name, TINY.dims)
    gen = torch.Generator().manual_seed(0)
    cls_q = torch.randn(2, TINY.heads, 1, TINY.dims.head_dim, generator=gen)
    cls_k = torch.randn(2, TINY.heads, 1, TINY.dims.head_dim, generator=gen)
    first: list | None = None  # per layer: the cls token's (q, k, bias entries) on the first grid
    for rows, cols, offset in ((4, 4, (0.0, 0.0)), (3, 5, (0.0, 0.0)), (6, 6, (0.0, 0.0)), (3, 5, (2.0, -3.0))):
        g = PatchGrid(rows, cols, 4, 4, 4, 4, 1, offset)
        where = f"{name} on a {rows}x{cols} grid at offset {offset}"
        state = pe.state(g, "cpu")
        x = torch.randn(2, g.num_patches, TINY.dim)
        assert pe.tokens(x, g, state).shape == x.shape, f"{name}: tokens hook changed the shape"
        q = torch.cat([cls_q, torch.randn(2, TINY.heads, g.num_patches, TINY.dims.head_dim, generator=gen)], 2)
        k = torch.cat([cls_k, torch.randn(2, TINY.heads, g.num_patches, TINY.dims.head_dim, generator=gen)], 2)
        seen = []
        for layer in range(TINY.depth):
            q2, k2 = pe.qk(q, k, g, state, layer)
            assert q2.shape == q.shape and k2.shape == k.shape, f"{name}: qk hook changed the shape"
            bias = pe.attn_bias(g, state, layer)
            if bias is not None:
                assert bias.shape[-2:] == (g.num_tokens, g.num_tokens), f"{name}: bias shape {tuple(bias.shape)}"
            if cls.cls_untouched:
                assert torch.equal(q2[:, :, 0], q[:, :, 0]) and torch.equal(k2[:, :, 0], k[:, :, 0]), (
                    f"{name}: the cls token's q/k changed in layer {layer} (declare cls_untouched = False "
                    f"if the definition acts on it)"
                )
                if bias is not None:
                    assert not bias[..., 0, :].any() and not bias[..., :, 0].any(), (
                        f"{name}: cls row/column not zero (declare cls_untouched = False if the definition "
                        f"gives it entries)")
            else:
                entries = None
                if bias is not None:
                    row, col = bias[..., 0, 1:], bias[..., 1:, 0]  # (h, N): cls to patch, patch to cls
                    flat = all(torch.equal(e, e[..., :1].expand_as(e)) for e in (row, col))
                    assert flat, (f"{where}: layer {layer}: the cls token's bias row or column varies over the "
                                  f"patches (it has no position)")
                    entries = torch.stack([row[..., 0], col[..., 0], bias[..., 0, 0]], -1)
                seen.append((q2[:, :, 0], k2[:, :, 0], entries))
            seq = torch.randn(2, g.num_tokens, TINY.dim)
            after = pe.after_block(seq, g, state, layer)
            assert after.shape == seq.shape, f"{name}: after_block hook changed the shape"
            assert torch.equal(after[:, 0], seq[:, 0]), f"{name}: the cls token changed after block {layer}"
        if cls.cls_untouched:
            continue
        if first is None:
            first = seen
        for layer, (now, then) in enumerate(zip(seen, first)):
            for what, a, b in zip(("q", "k", "bias entries"), now, then):
                if b is not None:
                    torch.testing.assert_close(a, b, msg=lambda m: (
                        f"{where}: layer {layer}: the cls token's {what} differ from those on a 4x4 grid "
                        f"(it has no position); {m}"))
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


# ------------------------------------------------------------------------------ relative positions
def _hook_outputs(pe: PositionalEncoding, grid: PatchGrid, x: torch.Tensor, q: torch.Tensor,
                  k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The patch tokens after the tokens hook (B, N, D) and, per layer, after the hook between
    blocks (given the cls token and ``x``), and every layer's patch-to-patch attention logits
    q.k / sqrt(d) + bias (L, B, h, N, N), in float64 (the cls token has no position: its logits
    with a patch depend on where that patch is). Random draws come from a generator seeded
    afresh, so two calls draw the same numbers."""
    own, pe.generator = pe.generator, torch.Generator().manual_seed(0)
    try:
        state = pe.state(grid, "cpu")
        tokens = [pe.tokens(x, grid, state).double()]
        seq = torch.cat([q.new_ones(x.shape[0], grid.num_prefix, x.shape[-1]), x], dim=1)
        logits = []
        for layer in range(pe.dims.depth):
            q2, k2 = pe.qk(q, k, grid, state, layer)
            logit = q2.double() @ k2.double().transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, T, T)
            bias = pe.attn_bias(grid, state, layer)
            logits.append(logit if bias is None else logit + bias.double())
            tokens.append(pe.after_block(seq, grid, state, layer).double())
    finally:
        pe.generator = own
    p = grid.num_prefix
    return torch.cat(tokens, dim=1), torch.stack(logits)[..., p:, p:]


def assert_relative(pe: PositionalEncoding, shifts=((2.0, -3.0), (0.75, 1.5)), atol: float = 1e-4) -> None:
    """Shifting every patch position by the same offset (``PatchGrid.offset``) changes neither
    the tokens (after the tokens hook and after every block's hook) nor any patch-to-patch
    attention logit of ``pe``, on grids of several shapes."""
    d = pe.dims
    gen = torch.Generator().manual_seed(0)
    for rows, cols in ((d.train_rows, d.train_cols), (3, 5), (6, 2)):
        g0 = PatchGrid(rows, cols, d.train_rows, d.train_cols)
        x = torch.randn(2, g0.num_patches, d.dim, generator=gen)
        q = torch.randn(2, d.heads, g0.num_tokens, d.head_dim, generator=gen)
        k = torch.randn(2, d.heads, g0.num_tokens, d.head_dim, generator=gen)
        tokens, logits = _hook_outputs(pe, g0, x, q, k)
        for shift in shifts:
            moved_tokens, moved_logits = _hook_outputs(pe, dataclasses.replace(g0, offset=shift), x, q, k)
            where = f"{pe.name} {dataclasses.asdict(pe.opts)} on a {rows}x{cols} grid shifted by {shift}"
            torch.testing.assert_close(moved_tokens, tokens, atol=atol, rtol=0,
                                       msg=lambda m: f"{where}: the tokens changed; {m}")
            torch.testing.assert_close(moved_logits, logits, atol=atol, rtol=0,
                                       msg=lambda m: f"{where}: the attention logits changed; {m}")


def check_relative(name: str) -> None:
    """An encoding that declares ``relative = True``: for every policy, shifting all positions
    by one offset leaves its tokens and attention logits unchanged (nothing to test otherwise)."""
    if not get_encoding(name).relative:
        return
    for options in _policies(name):
        torch.manual_seed(7)
        assert_relative(build_encoding(name, TINY.dims, options))


# ------------------------------------------------------------------------------ bf16 autocast
#: the unit roundoff of bfloat16 (8 significant bits): rounding to bf16 moves a value by at most
#: this fraction of itself
BF16_UNIT = 2.0 ** -8


def tables_of(state: Any) -> list[torch.Tensor]:
    """The floating-point tensors of an encoding's ``state`` (a tensor, or tuples, lists, dicts
    and dataclasses of them), in a fixed order."""
    if isinstance(state, torch.Tensor):
        return [state] if state.is_floating_point() or state.is_complex() else []
    if isinstance(state, (tuple, list)):
        return [t for item in state for t in tables_of(item)]
    if isinstance(state, dict):
        return [t for key in sorted(state, key=str) for t in tables_of(state[key])]
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return [t for f in dataclasses.fields(state) for t in tables_of(getattr(state, f.name))]
    return []


def _hooks_at(pe: PositionalEncoding, grid: PatchGrid, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
    """The state, the tokens hook's output and, per layer, (q, k, bias) after the hooks. Random
    draws come from a generator seeded afresh, so two calls draw the same numbers."""
    own, pe.generator = pe.generator, torch.Generator().manual_seed(0)
    try:
        state = pe.state(grid, "cpu")
        tokens = pe.tokens(x, grid, state)
        layers = []
        for layer in range(pe.dims.depth):
            q2, k2 = pe.qk(q, k, grid, state, layer)
            layers.append((q2, k2, pe.attn_bias(grid, state, layer)))
    finally:
        pe.generator = own
    return state, tokens, layers


def assert_float32_under_autocast(make: Callable[[], PositionalEncoding], grids=None) -> None:
    """Build two encodings with ``make()`` (the same weights), run one under CPU bf16 autocast
    (which reproduces the CUDA path) and the other in float32, on bf16-representable inputs, and
    check, on grids of several shapes (the training grid, a smaller non-square one and a larger
    one, where angles and distances grow):

    - the tables (``state``): the dtypes of the float32 build, never a 16-bit float, and equal to
      it within float32 tolerance: autocast computes and caches no table in bf16;
    - the hooks keep the dtype of the activations (bf16 in, bf16 out);
    - every attention logit q_i.k_j / sqrt(d) + bias is within one bf16 rounding of the rotated
      q and k of the float32 value: |delta| <= (2u + u^2) sum_c |q_ic k_jc| / sqrt(d) (u = 2^-8,
      q and k the float32 ones after the hook), plus 1e-5; an angle computed in bf16 (off by
      ~u * angle) breaks it;
    - every token is within 2u (|x| + |t|) + 1e-6 of the float32 x + t (t: the table added).
    """
    pe, ref = make(), make()
    d = pe.dims
    u = BF16_UNIT
    gen = torch.Generator().manual_seed(0)
    grids = grids or [(d.train_rows, d.train_cols), (max(d.train_rows - 1, 1), d.train_cols + 1),
                      (2 * d.train_rows + 1, 3 * d.train_cols)]
    for rows, cols in grids:
        grid = PatchGrid(rows, cols, d.train_rows, d.train_cols)
        where = f"{pe.name} {dataclasses.asdict(pe.opts)} on a {rows}x{cols} grid under bf16 autocast"
        x = torch.randn(2, grid.num_patches, d.dim, generator=gen).bfloat16()
        q = torch.randn(2, d.heads, grid.num_tokens, d.head_dim, generator=gen).bfloat16()
        k = torch.randn(2, d.heads, grid.num_tokens, d.head_dim, generator=gen).bfloat16()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            state, tokens, layers = _hooks_at(pe, grid, x, q, k)
        ref_state, ref_tokens, ref_layers = _hooks_at(ref, grid, x.float(), q.float(), k.float())
        tables, ref_tables = tables_of(state), tables_of(ref_state)
        assert len(tables) == len(ref_tables), f"{where}: {len(tables)} tables, {len(ref_tables)} in float32"
        for i, (t, r) in enumerate(zip(tables, ref_tables)):
            assert t.dtype == r.dtype and t.dtype not in (torch.bfloat16, torch.float16), (
                f"{where}: table {i} is {t.dtype} under autocast, {r.dtype} without (position tables must be "
                f"float32 or wider: build them with autocast off)"
            )
            torch.testing.assert_close(t.detach(), r.detach(), msg=lambda m: (
                f"{where}: table {i} differs from its float32 build (computed in bf16?); {m}"))
        assert tokens.dtype == x.dtype, f"{where}: the tokens hook turned {x.dtype} tokens into {tokens.dtype}"
        added = (ref_tokens - x.float()).double()
        tol = 2 * u * (x.double().abs() + added.abs()) + 1e-6
        excess = ((tokens.double() - ref_tokens.double()).abs() - tol).max().item()
        assert excess <= 0, f"{where}: a token is {excess:.3g} beyond one bf16 rounding of its float32 value"
        for layer, ((q2, k2, bias), (rq, rk, rbias)) in enumerate(zip(layers, ref_layers)):
            assert q2.dtype == q.dtype and k2.dtype == k.dtype, (
                f"{where}: layer {layer}: the qk hook turned {q.dtype} q/k into {q2.dtype}/{k2.dtype}"
            )
            scale = 1 / math.sqrt(d.head_dim)
            logits = q2.double() @ k2.double().transpose(-1, -2) * scale
            ref_logits = rq.double() @ rk.double().transpose(-1, -2) * scale
            if rbias is not None:
                logits, ref_logits = logits + bias.double(), ref_logits + rbias.double()
            tol = (2 * u + u * u) * (rq.double().abs() @ rk.double().abs().transpose(-1, -2)) * scale + 1e-5
            excess = ((logits - ref_logits).abs() - tol).max().item()
            assert excess <= 0, (
                f"{where}: layer {layer}: an attention logit is {excess:.3g} beyond one bf16 rounding of "
                f"q and k from its float32 value (a table or the rotation computed in bf16?)"
            )


def check_float32_under_autocast(name: str) -> None:
    """Under CPU bf16 autocast, for every policy: tables as in float32 (float32, equal within
    float32 tolerance), logits and tokens within one bf16 rounding of float32
    (:func:`assert_float32_under_autocast`)."""
    for options in _policies(name):
        def make(options=options):
            torch.manual_seed(7)
            return build_encoding(name, TINY.dims, options)
        assert_float32_under_autocast(make)


CHECKS: list[Callable[[str], None]] = [
    check_metadata,
    check_forward_backward,
    check_deterministic,
    check_cls_untouched,
    check_fixed_tables_cached,
    check_relative,
    check_float32_under_autocast,
]


def check_all(name: str) -> None:
    """Run every check on encoding ``name``."""
    for check in CHECKS:
        check(name)
