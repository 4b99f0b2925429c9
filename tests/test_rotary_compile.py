"""Rotary encodings under torch.compile: the real-arithmetic path against the complex one.

Eager models rotate q and k as one complex multiplication (complex64 table); while
``torch.compile`` traces the model (``torch.compiler.is_compiling()``), the table is real
(cos, sin) and the rotation real arithmetic, because TorchInductor cannot generate code for
complex operators. Here the real path is forced in eager mode (``_rotary.compiling`` patched)
and compared with the complex one on the same weights and inputs, values and gradients, for
every rotary encoding; then one tiny model is really compiled on the CPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from harness.config import ViTConfig
from harness.encodings import ENCODINGS
from harness.encodings import _rotary
from harness.encodings._rotary import RotaryEncoding, rotate_complex, rotate_pairs, rotate_real
from harness.models.vit import build_model
from harness.presets import load_preset

COMPLEX_WARNING = "does not support code generation for complex operators"


def _uses_complex_tables(name: str) -> bool:
    return issubclass(ENCODINGS.get(name), RotaryEncoding)


ROTARY = sorted(n for n, _ in ENCODINGS.items() if _uses_complex_tables(n))


def test_every_complex_rotary_encoding_is_covered():
    # the encodings that rotate with a complex table: the RoPE family and STRING (LieRE rotates
    # with real block matrices and needs no second path)
    assert {"rope1d", "rope_axial", "rope_mixed", "rope_golden", "rope_dinov3", "string"} <= set(ROTARY)
    assert "liere" not in ROTARY


def _tiny(name: str, **extra) -> torch.nn.Module:
    cfg = ViTConfig.from_dict({**load_preset("model", "tiny"), "num_classes": 5, **extra})
    torch.manual_seed(0)
    return build_model(cfg, name)


def _forward_backward(model, x, y, *, real: bool, monkeypatch, seed: int = 3):
    """Logits, loss and every parameter's gradient, with the real (compiled-form) or complex path."""
    monkeypatch.setattr(_rotary, "compiling", lambda: real)
    model.zero_grad(set_to_none=True)
    model.pe._tables.clear()
    gen = torch.Generator().manual_seed(seed)  # rope_dinov3's training-time draws: the same in both
    model.pe.generator = gen
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


@pytest.mark.parametrize("name", ROTARY)
@pytest.mark.parametrize("size", [16, 24])  # the training grid and a larger one (policies off the grid)
def test_real_path_matches_complex_path_values_and_gradients(name, size, monkeypatch):
    model = _tiny(name)
    model.train()
    gx = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, size, size, generator=gx)
    y = torch.randint(0, 5, (4,), generator=gx)
    # the real path really is taken: its table is real (cos, sin) and never complex
    monkeypatch.setattr(_rotary, "compiling", lambda: True)
    grid = model.grid(size, size)
    state = model.pe.state(grid, "cpu")
    table = state[0] if isinstance(state, tuple) else state
    assert not table.is_complex() and table.dtype == torch.float32 and table.shape[-1] == 2
    monkeypatch.setattr(_rotary, "compiling", lambda: False)
    state = model.pe.state(grid, "cpu")
    assert (state[0] if isinstance(state, tuple) else state).is_complex()

    out_c, grads_c = _forward_backward(model, x, y, real=False, monkeypatch=monkeypatch)
    out_r, grads_r = _forward_backward(model, x, y, real=True, monkeypatch=monkeypatch)
    torch.testing.assert_close(out_r, out_c, rtol=1e-5, atol=1e-6)
    assert grads_r.keys() == grads_c.keys() and len(grads_c) == sum(1 for _ in model.parameters())
    for n in grads_c:
        torch.testing.assert_close(grads_r[n], grads_c[n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotate_real_equals_rotate_complex_and_the_plain_rotation(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 8, generator=g).to(dtype)
    a = torch.rand(3, 7, 4, generator=g) * 20 - 10
    x1, x2, x3 = (x.clone().requires_grad_(True) for _ in range(3))
    real = rotate_real(x1, torch.stack((a.cos(), a.sin()), dim=-1))
    cplx = rotate_complex(x2, torch.polar(torch.ones_like(a), a))
    plain = rotate_pairs(x3, a.cos(), a.sin())
    assert real.dtype == dtype
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=0, atol=0)
    torch.testing.assert_close(real, cplx, **tol)
    torch.testing.assert_close(real, plain, rtol=0, atol=0)  # the same formula
    w = torch.randn(real.shape, generator=g)
    for t, leaf in ((real, x1), (cplx, x2)):
        (t.float() * w).sum().backward()
    torch.testing.assert_close(x1.grad.float(), x2.grad.float(), **(tol if dtype == torch.float32
                                                                     else dict(rtol=1e-2, atol=1e-2)))


def _compile_warnings(fn, *args):
    """Run ``torch.compile(fn)(*args)``, returning its output and the warnings it gave; the
    Inductor complex warning is cached once per process: cleared first so it can show again."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config
    from torch._inductor import lowering

    lowering._warn_complex_not_supported.cache_clear()
    torch._dynamo.reset()
    # no on-disk compile caches: a cached graph skips the lowering, and with it the warning
    with warnings.catch_warnings(record=True) as caught, inductor_config.patch(fx_graph_cache=False), \
            functorch_config.patch(enable_autograd_cache=False):
        warnings.simplefilter("always")
        out = torch.compile(fn)(*args)
    return out, [str(w.message) for w in caught]


def test_complex_warning_is_detected_by_this_check():
    """The control: a compiled complex multiplication does give the warning this file looks for."""
    x = torch.randn(2, 5, 8)
    cis = torch.polar(torch.ones(5, 4), torch.rand(5, 4))
    _, caught = _compile_warnings(rotate_complex, x, cis)
    assert any(COMPLEX_WARNING in w for w in caught), caught


def test_compiled_rotary_model_has_no_complex_ops_and_matches_eager():
    """torch.compile of a tiny ViT with rope_axial on the CPU: no complex-operator warning, the
    same logits and gradients as eager. An eager forward first fills the encoding's cache with a
    complex table, which the compiled forward must not pick up."""
    model = _tiny("rope_axial")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 16, 16, generator=g)
    eager = model(x)
    (eager.square().sum()).backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    assert any(t.is_complex() for t in model.pe._tables.values())  # the eager cache holds a complex table

    def step(inp):
        out = model(inp)
        out.square().sum().backward()
        return out

    compiled, caught = _compile_warnings(step, x)
    assert not any(COMPLEX_WARNING in w for w in caught), caught
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager_grads[n], rtol=1e-3, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")
