"""Evaluation-time variants against plain references: a policy moves positions exactly as
defined, a temperature scales the logits exactly, both on the same trained weights; the spec
axes that list them."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest
import torch

from harness.config import ViTConfig
from harness.encodings import ENCODINGS, PatchGrid, Policy, build_encoding
from harness.models.vit import build_model
from harness.schema import NO_POLICY, Size, Variant
from harness.spec import SpecError, load_spec
from harness.trial import variants_of
from harness.variants import POLICIES, TEMPERATURES, rescale, temperature_factor

CFG = ViTConfig(image_size=16, num_classes=3, dim=32, depth=2, heads=4, mlp_ratio=2.0)  # 4x4 training grid


def test_policies_move_positions_as_defined():
    index = torch.arange(7, dtype=torch.float32)  # a 7-patch axis, trained with 4
    assert torch.equal(rescale(index, 7, 4, "extrapolate"), index)
    assert torch.allclose(rescale(index, 7, 4, "interpolate"), torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3.0]))
    assert torch.allclose(rescale(index, 7, 4, "interpolate_eva"), index * 4 / 7)
    for p in POLICIES.names():  # every policy is the identity on the training grid
        assert torch.equal(rescale(torch.arange(4.0), 4, 4, p), torch.arange(4.0))
    assert set(typing.get_args(Policy)) == set(POLICIES.names())


def test_log_temperature():
    assert temperature_factor("none", 256, 64) == 1.0
    assert temperature_factor("log", 256, 64) == pytest.approx(math.log(256) / math.log(64))
    assert temperature_factor("log", 64, 64) == 1.0 and temperature_factor("log", 1, 64) == 1.0
    assert TEMPERATURES.names() == ["log", "none"]


@pytest.mark.parametrize("name, policy", [(n, p) for n, cls in ENCODINGS.items() if len(cls.describe().policies) > 1
                                          for p in cls.describe().policies])
def test_a_policy_on_trained_weights_equals_the_encoding_built_with_it(name, policy):
    torch.manual_seed(0)
    # policies are evaluation variants (and rope_dinov3 draws a coordinate augmentation in training)
    model = build_model(CFG, name).eval()
    reference = build_model(CFG, name, {"policy": policy}).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 28, 20)  # a 7x5 grid, off the training grid
    before = model(x)
    with model.variant(policy):
        assert torch.equal(model(x), reference(x))
    assert torch.equal(model(x), before)  # the encoding's own policy is back, its tables too


def test_the_temperature_scales_q_dot_k_exactly():
    torch.manual_seed(0)
    model = build_model(CFG, "alibi2d").eval()
    attn, pe = model.blocks[0].attn, model.pe
    with torch.no_grad():  # logits of order 1 and more, so that their scale shows
        attn.qkv.weight.mul_(20)
        attn.proj.weight.mul_(20)
    grid = PatchGrid(6, 6, 4, 4, 4, 4, 1)
    state = pe.state(grid, "cpu")
    x = torch.randn(2, grid.num_tokens, CFG.dim)
    f = temperature_factor("log", 36, 16)
    B, T, D = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, CFG.heads, D // CFG.heads).permute(2, 0, 3, 1, 4)
    logits = f * (q @ k.transpose(-1, -2)) / math.sqrt(D // CFG.heads) + pe.attn_bias(grid, state, 0)
    plain = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D))
    assert torch.allclose(attn(x, pe, grid, state, 0, f), plain, atol=1e-5)
    assert not torch.allclose(attn(x, pe, grid, state, 0, 1.0), plain, atol=1e-2)
    images = torch.randn(2, 3, 24, 24)
    with model.variant(None, "log"):
        scaled = model(images)
    assert not torch.equal(scaled, model(images))
    with model.variant(None, "log"):  # on the training grid the factor is 1: nothing changes
        on_grid = model(images[..., :16, :16])
    assert torch.equal(on_grid, model(images[..., :16, :16]))


def test_variants_of_an_encoding(tmp_path):
    spec = load_spec(_spec(tmp_path, "policies: [interpolate, extrapolate]\ntemperatures: [none, log]\n"))
    none_variants = variants_of(spec, ENCODINGS.get("none"))
    assert none_variants == [Variant("zoom", NO_POLICY, t) for t in ("none", "log")]
    assert variants_of(spec, ENCODINGS.get("learned")) == none_variants  # one choice of policy: evaluated once
    assert variants_of(spec, ENCODINGS.get("rope_axial")) == [
        Variant("zoom", p, t) for p in ("interpolate", "extrapolate") for t in ("none", "log")]


BASE = """\
name: v
dataset: {name: rendered, task: relational, num_train: 64, num_val: 32, num_test: 32}
model: tiny
train: {epochs: 1, batch_size: 16, device: cpu}
encodings: [none, rope_axial]
train_resolutions: [16]
test_resolutions: [8, 16, 24, 16x32]
seeds: [0]
"""


def _spec(tmp_path: Path, extra: str = "", base: str = BASE) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(base + extra)
    return p


def test_canvas_sizes_default_to_the_test_sizes_at_least_the_training_size(tmp_path):
    spec = load_spec(_spec(tmp_path, "regimes: [zoom, canvas]\n"))
    assert spec.canvas_resolutions == (Size(16, 16), Size(24, 24), Size(16, 32))
    assert spec.sizes("zoom") == spec.test_resolutions and spec.sizes("canvas") == spec.canvas_resolutions


def test_spec_axes_defaults_and_sizes(tmp_path):
    spec = load_spec(_spec(tmp_path))
    assert spec.policies == ("extrapolate", "interpolate") and spec.temperatures == ("none",)
    assert spec.regimes == ("zoom",) and spec.canvas_resolutions == ()
    assert spec.test_resolutions == (Size(8, 8), Size(16, 16), Size(24, 24), Size(16, 32))
    assert spec.resolved["test_resolutions"] == [8, 16, 24, "16x32"]


@pytest.mark.parametrize("extra, base_change, expected", [
    ("policies: [stretch]\n", None, "key 'policies[0]': unknown policy 'stretch'"),
    ("temperatures: [lg]\n", None, "unknown temperature 'lg'; did you mean 'log'?"),
    ("policies: [interpolate, interpolate]\n", None, "interpolate is given twice"),
    ("", ("16x32", "16x30"), "cannot tile 30 pixels"),
    ("", ("16x32", "16by32"), "not an image size: '16by32'"),
    ("", ("[none, rope_axial]", "[none, {name: rope_axial, options: {policy: interpolate}}]"),
     "the new-grid policy is an evaluation axis"),
    ("regimes: [zoom, warp]\n", None, "unknown regime 'warp'"),
    ("regimes: [zoom, canvas]\ncanvas_resolutions: [8]\n", None,
     "key 'canvas_resolutions[0]': canvas 8x8 is smaller than the training images (16 px)"),
    ("canvas_resolutions: [32]\n", None, "'canvas' is not among the study's regimes"),
])
def test_spec_axes_errors(tmp_path, extra, base_change, expected):
    base = BASE.replace(*base_change) if base_change else BASE
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, extra, base))
    assert expected in str(err.value) and "spec.yaml" in str(err.value), str(err.value)
