"""CUDA-only tests: the paths that run only on a GPU (bf16 autocast, fused AdamW, checkpoints on
the device, evaluation memory at the GPU study's largest size). Skipped without CUDA; run by
``bash bench/gpu_check.sh``. The helpers take a device, so the bf16 tolerances were calibrated
by running the same comparison on the CPU's bf16 autocast (see ``BF16_TOLERANCE``).
"""

from __future__ import annotations

import os

# deterministic cuBLAS for the checkpoint test: must be set before CUDA starts in this process
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import contextlib  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness.config import ViTConfig  # noqa: E402
from harness.encodings import ENCODINGS  # noqa: E402
from harness.models.vit import build_model  # noqa: E402
from harness.presets import load_preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = sorted(n for n, _ in ENCODINGS.items() if ENCODINGS.source(n) == "built-in")

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only test: no CUDA device here")]

#: bf16 autocast against float32, ``small`` preset (6 layers, dim 128): relative L2 error of the
#: logits and of all gradients together, and the least cosine similarity of any one parameter's
#: gradient. Calibrated on the CPU's bf16 autocast, every built-in encoding at 32 and 48 px
#: (2026-11-29, torch 2.14): worst logits 0.0102 (learned), worst gradients 0.0106 (liere), least
#: cosine 0.99990. The bounds leave CUDA's bf16 attention kernels (probabilities rounded to bf16)
#: about 4-6x that error, and 20x the cosine gap.
BF16_TOLERANCE = {"logits": 0.04, "grads": 0.06, "cosine": 0.998}


def _model(name: str, preset: str = "small", **extra) -> torch.nn.Module:
    cfg = ViTConfig.from_dict({**load_preset("model", preset), "num_classes": 10, **extra})
    torch.manual_seed(0)
    return build_model(cfg, name)


@contextlib.contextmanager
def _full_float32():
    """Float32 matmuls at full precision (no TF32): the reference."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _forward_backward(model, x, y, device: torch.device, bf16: bool):
    model.zero_grad(set_to_none=True)
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else _full_float32()
    with ctx:
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    return logits.float().detach(), {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}


def bf16_errors(name: str, device: torch.device, size: int = 32) -> dict[str, float]:
    """bf16 autocast against float32 for encoding ``name`` on ``device``: relative errors of the
    logits and of the gradients, and the least per-parameter gradient cosine similarity."""
    model = _model(name).to(device).eval()  # eval: rope_dinov3's random draws are off; no dropout anyway
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 10, (16,), generator=g).to(device)
    ref_out, ref_grads = _forward_backward(model, x, y, device, bf16=False)
    out, grads = _forward_backward(model, x, y, device, bf16=True)
    rel = lambda a, b: float((a - b).norm() / b.norm().clamp_min(1e-30))  # noqa: E731
    flat = lambda gs: torch.cat([gs[n].flatten() for n in sorted(gs)])  # noqa: E731
    cos = [float(F.cosine_similarity(grads[n].flatten(), ref_grads[n].flatten(), dim=0))
           for n in ref_grads if ref_grads[n].norm() > 0]
    assert torch.isfinite(out).all() and all(torch.isfinite(v).all() for v in grads.values())
    return {"logits": rel(out, ref_out), "grads": rel(flat(grads), flat(ref_grads)), "cosine": min(cos)}


@pytest.mark.parametrize("size", [32, 48])  # the training grid and a larger one
@pytest.mark.parametrize("name", BUILTIN)
def test_bf16_autocast_matches_float32(name, size):
    err = bf16_errors(name, torch.device("cuda"), size)
    assert err["logits"] < BF16_TOLERANCE["logits"], err
    assert err["grads"] < BF16_TOLERANCE["grads"], err
    assert err["cosine"] > BF16_TOLERANCE["cosine"], err


def test_fused_adamw_agrees_with_the_plain_one():
    """The trainer's fused AdamW (CUDA) against the plain one (foreach off), both fed the same
    gradients for 5 steps (with weight decay groups and a changing learning rate)."""
    from harness.train import param_groups

    device = torch.device("cuda")
    a = _model("rope_mixed").to(device)
    b = copy.deepcopy(a)
    start = copy.deepcopy(a)
    opt_a = torch.optim.AdamW(param_groups(a, 0.05), lr=1e-3, fused=True)
    opt_b = torch.optim.AdamW(param_groups(b, 0.05), lr=1e-3, fused=False, foreach=False)
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        x = torch.randn(8, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 10, (8,), generator=g).to(device)
        with _full_float32():
            F.cross_entropy(a(x), y).backward()
        for pa, pb in zip(a.parameters(), b.parameters()):
            pb.grad = pa.grad.clone()
        for opt in (opt_a, opt_b):
            for group in opt.param_groups:
                group["lr"] = 1e-3 * (step + 1) / 5
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    with torch.no_grad():
        moved = sum(float((pa - p0).abs().max()) for pa, p0 in zip(a.parameters(), start.parameters()))
    assert moved > 0  # the steps did change the weights


def test_checkpoint_written_on_cuda_resumes_on_cuda_with_identical_metrics(tmp_path):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from harness.data import RenderedDataset
    from harness.train import TrainConfig, train_model

    data = RenderedDataset(RenderedDataset.Options(task="relational", num_train=512, num_val=128, num_test=128, seed=0))
    cfg = TrainConfig(epochs=3, batch_size=64, lr=2e-3, warmup_epochs=0.5, device="cuda", augment="flip_crop")

    def run(**kw):
        model = _model("rope_mixed", "tiny", num_classes=data.num_classes)
        return train_model(model, data, cfg, train_resolution=16, test_resolutions=[16, 24], seed=3,
                           progress=False, **kw)

    # deterministic kernels: attention through the math path, cuBLAS with a fixed workspace
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn_deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        with sdpa_kernel(SDPBackend.MATH):
            whole = run()
            again = run()
            assert again.history == whole.history, "two CUDA runs of the same seed differ: CUDA is not deterministic here"
            ckpt = tmp_path / "ckpt.pt"

            def stop(epoch, metrics):
                if epoch == 1:
                    raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                run(checkpoint=ckpt, on_epoch=stop)
            ck = torch.load(ckpt, weights_only=True, map_location="cpu")
            assert ck["epoch"] == 1 and ck["rng"]["cuda"] is not None  # the CUDA generator state is saved
            resumed = run(checkpoint=ckpt)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = cudnn_deterministic
    assert resumed.resumed_from_epoch == 1 and resumed.device.startswith("cuda")
    assert resumed.history == whole.history
    assert resumed.test == whole.test


def test_eval_at_the_largest_test_size_fits_at_the_study_eval_batch():
    """rendered_gpu.yaml: every encoding evaluates a full eval batch at its largest test size (the
    largest canvas too), under the variant that costs most (log temperature, each policy), in bf16."""
    from harness.schema import Size
    from harness.spec import load_spec
    from harness.train import evaluate, prepare_device

    spec = load_spec(ROOT / "studies/rendered_gpu.yaml", [])
    device = torch.device("cuda")
    amp = prepare_device(device)
    sizes = [*spec.test_resolutions, *spec.canvas_resolutions]
    largest = max(sizes, key=lambda s: s.rows * s.cols)
    assert (largest.rows, largest.cols) == (128, 128)
    batch = spec.train.eval_batch_size
    total = torch.cuda.get_device_properties(device).total_memory

    @dataclasses.dataclass
    class _Split:
        images: torch.Tensor
        labels: torch.Tensor

    g = torch.Generator().manual_seed(0)
    split = _Split(torch.randn(2 * batch, 3, largest.rows, largest.cols, generator=g).to(device),
                   torch.randint(0, 8, (2 * batch,), generator=g).to(device))
    for label in [e.label for e in spec.encodings]:
        enc = spec.encoding(label)
        model = build_model(spec.model_config(spec.train_resolutions[0], 3, 8), enc.name, enc.options).to(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        policies = [p for p in spec.policies if p in type(model.pe).describe().policies] or [None]
        for policy in policies:
            with model.variant(policy, "log"):
                out = evaluate(model, split, batch, device, amp)
            assert 0.0 <= out["acc"] <= 1.0 and out["loss"] == out["loss"]
        peak = torch.cuda.max_memory_allocated(device)
        assert peak < 0.9 * total, f"{label}: {peak / 2**30:.1f} GiB of {total / 2**30:.1f} GiB at {largest.label}"
        del model
    assert Size(128, 128) in sizes


@pytest.mark.parametrize("name", BUILTIN)
def test_tables_on_cuda_under_bf16_and_tf32_equal_the_float32_ones(name):
    """The trainer's CUDA numerics (bf16 autocast, TF32 matmuls) leave every position table as
    float32 at full precision: equal to the tables built on the CPU in float32, on the training
    grid and on a larger one. (The CPU conformance kit checks autocast; only CUDA has TF32.)"""
    from harness.conformance import tables_of
    from harness.train import prepare_device

    device = torch.device("cuda")
    model = _model(name)  # small: 8x8 training grid
    cpu_pe = model.pe.eval()
    cuda_pe = copy.deepcopy(cpu_pe).to(device)
    before = torch.get_float32_matmul_precision()
    try:
        amp = prepare_device(device)  # TF32 on, as in training
        for rows, cols in ((8, 8), (12, 16)):
            grid = model.grid(4 * rows, 4 * cols)
            with _full_float32():
                ref = [t.detach() for t in tables_of(cpu_pe.state(grid, "cpu"))]
            with torch.autocast(device_type="cuda", dtype=amp):
                got = [t.detach().cpu() for t in tables_of(cuda_pe.state(grid, device))]
            assert len(got) == len(ref)
            for g, r in zip(got, ref):
                assert g.dtype == r.dtype, (g.dtype, r.dtype)
                g, r = (torch.view_as_real(g), torch.view_as_real(r)) if r.is_complex() else (g, r)
                torch.testing.assert_close(g, r, rtol=1e-4, atol=2e-5)
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("name", ["rope_mixed", "string", "rope_axial"])
def test_compiled_rotary_tables_on_cuda_under_tf32_equal_the_float32_ones(name):
    """Under torch.compile the rotary table is real (cos, sin) and built inside the graph, where
    the float32 matmul precision cannot be switched to "highest": with the trainer's TF32 on, the
    angle products of the learned-frequency encodings must still give the float32 table."""
    from harness.encodings import _rotary
    from harness.train import prepare_device

    device = torch.device("cuda")
    model = _model(name)
    grid = model.grid(48, 64)
    with _full_float32():
        ref = model.pe.state(grid, "cpu")
    ref = ref[0] if isinstance(ref, tuple) else ref
    pe = copy.deepcopy(model.pe).to(device).eval()
    before = torch.get_float32_matmul_precision()
    torch._dynamo.reset()
    try:
        prepare_device(device)  # TF32 on, as in training
        out = torch.compile(lambda: pe.state(grid, device))()
    finally:
        torch.set_float32_matmul_precision(before)
    table = (out[0] if isinstance(out, tuple) else out).detach().cpu()
    assert not table.is_complex() and table.shape[-1] == 2
    torch.testing.assert_close(table, torch.view_as_real(ref), rtol=1e-4, atol=2e-5)
    assert _rotary.compiling() is False  # outside the graph: the eager path again
