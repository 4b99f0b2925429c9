"""Fast paths against the plain ones: same outputs within float tolerance, same gradients."""

import pytest
import torch

from harness.config import ViTConfig
from harness.data import build_dataset
from harness.encodings._rotary import rotate_complex, rotate_pairs
from harness.models.vit import build_model
from harness.train import TrainConfig, train_model


def test_complex_rotation_equals_pairwise_rotation_with_gradients():
    torch.manual_seed(0)
    x = torch.randn(3, 12, 4, 2, 16).permute(2, 0, 3, 1, 4)[0]  # (B, h, T, d), strided like the model's q
    a = torch.randn(2, 12, 8) * 5
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    a1 = a.clone().requires_grad_()
    a2 = a.clone().requires_grad_()
    plain = rotate_pairs(x1, a1.cos(), a1.sin())
    fast = rotate_complex(x2, torch.polar(torch.ones_like(a2), a2))
    assert torch.allclose(plain, fast, atol=1e-5)
    w = torch.randn_like(plain)
    (plain * w).sum().backward()
    (fast * w).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    assert torch.allclose(a1.grad, a2.grad, atol=1e-4)


def test_bf16_inputs_are_rotated_in_float32_and_returned_in_bf16():
    x = torch.randn(2, 2, 5, 8, dtype=torch.bfloat16)
    a = torch.randn(2, 5, 4)
    out = rotate_complex(x, torch.polar(torch.ones_like(a), a))
    assert out.dtype == torch.bfloat16
    ref = rotate_pairs(x.float(), a.cos(), a.sin())
    assert torch.allclose(out.float(), ref, atol=2e-2)


@pytest.mark.slow
def test_torch_compile_switch_gives_the_same_results():
    """`train.compile: true` trains the compiled model: same metrics as eager within float tolerance."""
    data = build_dataset("rendered", task="relational", num_train=128, num_val=32, num_test=32, seed=0)
    cfg = ViTConfig(image_size=16, num_classes=data.num_classes, dim=32, depth=2, heads=4, mlp_ratio=2.0)
    results = {}
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, "rope_axial")
        recipe = TrainConfig(epochs=1, batch_size=32, device="cpu", compile=compile_)
        results[compile_] = train_model(model, data, recipe, train_resolution=16, test_resolutions=[16, 24], seed=0,
                                        progress=False)
    eager, compiled = results[False], results[True]
    assert compiled.history[0]["train/loss"] == pytest.approx(eager.history[0]["train/loss"], abs=1e-4)
    for r in (16, 24):
        assert compiled.test[r]["loss"] == pytest.approx(eager.test[r]["loss"], abs=1e-4)
