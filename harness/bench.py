"""``harness bench``: what each positional encoding costs, measured in one process and one run.

For a model preset (default ``small``) and every selected encoding (default: all registered),
on one device, with the same batch and threads for all:

- **training step** at the preset's training resolution: forward + backward + AdamW step, the
  trainer's own step (``harness.train``: label-smoothed cross-entropy, global-norm clipping,
  AdamW with the same parameter groups, bf16 autocast and TF32 on CUDA);
- **evaluation** (``no_grad`` forward, ``model.eval()``) at each resolution;
- **peak memory** of the training step and of each evaluation (see ``memory_method``);
- **FLOPs**: one training step counted with ``torch.utils.flop_counter.FlopCounterMode`` (with
  a formula added for the CPU flash-attention kernel, which torch does not count), divided by
  the step time gives the achieved FLOP/s; as a fraction of the device's own matmul peak
  (square float32 matmuls on the CPU, bf16 on CUDA, measured in the same run before and after
  the models are built: the better of the two) it is the model FLOP utilisation (MFU).
  ``analytic_flops`` is the same count worked out from the dimensions (the JSON's
  ``flop_model`` holds both; the tests check that they agree);
- the **ratio** of each figure to the ``none`` encoding's (always measured: it is the
  reference), with PASS/FAIL for the training-step time ratio against ``TARGETS``;
- the same training-step figures for timm's ``VisionTransformer`` built with identical
  dimensions (when timm is installed: ``pip install "vit-pe-harness[bench]"``), and ``learned``'s
  throughput as a ratio to timm's (target >= 1.0 on the CPU with the ``small`` preset).

Method. Every model is built first (seeded), warmed up and measured for memory and FLOPs one
after the other; then the timings run **interleaved**: repeat r times each model in turn
(starting one model further each repeat), so that a slow drift of the machine (another
process, clock changes) lands on every model alike rather than on whichever ran last. A timing
is ``steps`` consecutive steps (at least ``MIN_STEPS``, and enough to last ``min_time_s``)
between two clock reads, after ``torch.cuda.synchronize()`` on CUDA; the reported step time is
the median over the ``repeats`` timings, divided by ``steps``. ``range`` = (max - min) / median
of the timings: a PASS/FAIL closer to its target than the range is within the noise.

Entry points: :func:`run_bench` (returns a JSON-able dict), :func:`format_report` (the plain
tables), :func:`analytic_flops`, :func:`count_flops`, :func:`build_timm_vit`.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

__all__ = [
    "TARGETS",
    "TIMM_TARGET",
    "BenchError",
    "analytic_flops",
    "build_timm_vit",
    "count_flops",
    "format_report",
    "run_bench",
]


class BenchError(HarnessError):
    """A benchmark request that cannot run: bad resolution, device, count or output path."""


#: training-step time ratio enc / none that each encoding must not exceed (README, issue 5)
TARGETS: dict[str, float] = {
    "sincos2d": 1.10, "learned": 1.10, "rope1d": 1.10, "rope_axial": 1.10, "rope_mixed": 1.10,
    "rope_golden": 1.10, "alibi2d": 1.25, "liere": 1.50,
}
#: our ``learned`` training images/s over timm's, at least (defined for the CPU, preset small)
TIMM_TARGET = 1.0
#: table order of the built-ins (others follow by name)
_ORDER = ["none", "sincos2d", "learned", "alibi2d", "rope1d", "rope_axial", "rope_mixed", "rope_golden", "liere"]

NUM_CLASSES = 10
IN_CHANS = 3
MIN_STEPS = 3  # a timing is at least this many steps ...
MIN_TIME_S = {"cpu": 0.5, "cuda": 0.25}  # ... and lasts at least this long
WARMUP_STEPS = {"cpu": 3, "cuda": 5}
MATMUL_SIZES = {"cpu": (1024, 2048), "cuda": (1024, 2048, 4096, 8192)}

_TIMM = "timm"  # the key of timm's row


# ------------------------------------------------------------------------------ FLOP models
def analytic_flops(cfg: Any, resolution: int | None = None, batch: int = 1) -> dict[str, int]:
    """The matmul FLOPs of our ViT on square ``resolution`` px images, ``batch`` of them.

    2 FLOPs per multiply-add, matmuls only (the patch stem's convolution, qkv, the attention
    scores q.k^T and values a.v, the output projection, the two MLP layers, the head on one
    token); biases, norms, softmax, GELU and the encoding's own work are not counted. Keys:
    the parts (all layers together), ``forward`` and ``train_step`` = 3 x forward (the usual
    model-FLOPs convention: the backward pass costs twice the forward).

    ``FlopCounterMode`` counts what actually runs, which differs by two small terms: the stem's
    backward skips the input gradient (2x stem, not 3x) and a fused attention backward
    recomputes the scores (3.5x attention, not 3x). They nearly cancel (see the tests).
    """
    r = cfg.image_size if resolution is None else resolution
    g = cfg.grid_size(r)
    n = g * g  # patches
    t = n + 1  # tokens with the cls token
    d, hidden, depth = cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.depth
    per_image = {
        "stem": 2 * n * d * cfg.in_chans * cfg.patch_kernel ** 2,
        "qkv": depth * 2 * t * d * 3 * d,
        "attn_scores": depth * 2 * t * t * d,  # heads x (t x t x head_dim)
        "attn_values": depth * 2 * t * t * d,
        "proj": depth * 2 * t * d * d,
        "mlp": depth * 2 * 2 * t * d * hidden,
        "head": 2 * d * cfg.num_classes,
    }
    out = {k: v * batch for k, v in per_image.items()}
    out["forward"] = sum(out.values())
    out["train_step"] = 3 * out["forward"]
    return out


def _flop_mapping() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for the CPU flash-attention kernels, which ``FlopCounterMode`` misses."""
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        def fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        def bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return mapping


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs counted by ``FlopCounterMode`` while ``fn()`` runs: (total, per aten op)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        fn()
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


# ------------------------------------------------------------------------------ models
def model_config(preset: str, image_size: int | None = None) -> Any:
    """``ViTConfig`` of a model preset, 10 classes, 3 input channels."""
    from harness.models.vit import ViTConfig
    from harness.presets import load_preset

    d = dict(load_preset("model", preset))
    if image_size is not None:
        d["image_size"] = image_size
    d.update(num_classes=NUM_CLASSES, in_chans=IN_CHANS)
    return ViTConfig.from_dict(d)


def timm_unavailable() -> str | None:
    """Why timm's ViT cannot be built here (None when it can)."""
    try:
        import timm  # noqa: F401
        from timm.models.vision_transformer import VisionTransformer  # noqa: F401
    except ImportError as exc:
        return (f"timm is not installed ({exc.__class__.__name__}): timm rows skipped; "
                "pip install 'vit-pe-harness[bench]' (or timm>=1.0) to compare")
    return None


def build_timm_vit(cfg: Any) -> Any:
    """timm's ``VisionTransformer`` with our dimensions and its own learned position table.

    Our stem must have stride == kernel (timm's patch embedding does not overlap) and a cls
    token (``pool: cls`` -> ``global_pool='token'``; ``mean`` -> ``'avg'``). Its ``pos_embed``
    has a row for the cls token as well: it has ``dim`` more parameters than ours with ``learned``.
    """
    from timm.models.vision_transformer import VisionTransformer

    if cfg.patch_stride != cfg.patch_kernel:
        raise BenchError(f"timm's ViT needs a non-overlapping stem; this preset has kernel {cfg.patch_kernel}, "
                         f"stride {cfg.patch_stride}")
    return VisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_kernel, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
        global_pool="token" if cfg.pool == "cls" else "avg", embed_dim=cfg.dim, depth=cfg.depth,
        num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, class_token=True,
    )


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as the trainer's, by one rule for ours and timm's: no decay for 1-d
    parameters and the names the model lists in ``no_weight_decay()``."""
    names = dict(model.named_parameters())
    skip = {n for n, p in names.items() if p.ndim <= 1}
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay()) & set(names)
    decay = [p for n, p in names.items() if p.requires_grad and n not in skip]
    no_decay = [p for n, p in names.items() if p.requires_grad and n in skip]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------ memory
class _Memory:
    """Peak memory of a phase, over the process's memory before the model was built.

    CUDA: ``torch.cuda.max_memory_allocated`` (peak reset per phase) minus the allocated bytes
    before the model was built: the model, its gradients and AdamW state, activations and
    workspaces held by tensors (not the caching allocator's reserve).

    CPU (Linux): the resident set's high-water mark (``VmHWM``, reset per phase through
    ``/proc/self/clear_refs``) minus the resident set before the model was built, each after
    ``malloc_trim`` returned freed heap memory to the system: what the phase made the process
    hold, allocator overhead included (MiB-level noise). Elsewhere: the growth of
    ``getrusage().ru_maxrss``, a lifetime peak that cannot be reset (it under-reports a phase
    that does not exceed an earlier one).
    """

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        self.base = 0
        if self.cuda:
            self.method = ("torch.cuda.max_memory_allocated during the phase minus allocated bytes before "
                           "the model was built (model, grads, AdamW state, activations)")
        elif self._linux_hwm_works():
            self.method = ("peak resident set (Linux VmHWM, reset per phase via /proc/self/clear_refs) minus the "
                           "resident set before the model was built, after malloc_trim (model, grads, AdamW "
                           "state, activations, allocator overhead)")
        else:
            self.method = ("growth of getrusage ru_maxrss (lifetime peak, cannot be reset: under-reports a "
                           "phase below an earlier peak)")

    # -- CPU helpers
    @staticmethod
    def _status(key: str) -> int | None:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return None

    def _linux_hwm_works(self) -> bool:
        self._libc = None
        try:
            import ctypes

            self._libc = ctypes.CDLL("libc.so.6")
        except OSError:
            pass
        return self._reset_hwm() and self._status("VmHWM") is not None and self._status("VmRSS") is not None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def _trim(self) -> None:
        gc.collect()
        if getattr(self, "_libc", None) is not None:
            try:
                self._libc.malloc_trim(0)
            except AttributeError:  # not glibc
                pass

    @staticmethod
    def _maxrss() -> int:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r if sys.platform == "darwin" else r * 1024)

    # -- the API
    def before_model(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.base = self.torch.cuda.memory_allocated()
            return
        self._trim()
        if self.method.startswith("peak resident"):
            self.base = self._status("VmRSS") or 0
        else:
            self.base = self._maxrss()

    def start_phase(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        elif self.method.startswith("peak resident"):
            self._trim()
            self._reset_hwm()

    def end_phase(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize()
            return max(0, self.torch.cuda.max_memory_allocated() - self.base)
        if self.method.startswith("peak resident"):
            return max(0, (self._status("VmHWM") or 0) - self.base)
        return max(0, self._maxrss() - self.base)


# ------------------------------------------------------------------------------ timing
def _sync(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()


def _time_steps(fn: Callable[[], Any], steps: int, device: Any) -> float:
    """Seconds for ``steps`` calls of ``fn``, the device synchronised at both ends."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def _steps_for(seconds_per_step: float, min_time_s: float) -> int:
    return max(MIN_STEPS, min(10_000, math.ceil(min_time_s / max(seconds_per_step, 1e-9))))


def _summary(timings: list[float], steps: int, batch: int) -> dict[str, Any]:
    per_step = [t / steps for t in timings]
    med = statistics.median(per_step)
    return {
        "step_s": med,
        "images_per_s": batch / med,
        "range": (max(per_step) - min(per_step)) / med if med > 0 else 0.0,
        "steps_per_timing": steps,
        "timings_s": timings,
    }


def matmul_peak(device: Any, repeats: int, min_time_s: float, sizes: Sequence[int] | None = None) -> dict[str, Any]:
    """The device's own square-matmul rate: float32 on the CPU, bf16 on CUDA; the best size's median."""
    import torch

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = tuple(sizes or MATMUL_SIZES[device.type])
    per_size: dict[str, float] = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        fn = lambda: torch.mm(a, b)  # noqa: E731
        first = _time_steps(fn, 1, device)  # warm-up, and the calibration
        steps = max(1, math.ceil(min_time_s / max(first, 1e-9)))
        times = [_time_steps(fn, steps, device) / steps for _ in range(repeats)]
        per_size[str(n)] = 2 * n ** 3 / statistics.median(times)
        del a, b
    best = max(per_size, key=per_size.get)
    return {"dtype": str(dtype).replace("torch.", ""), "flops_per_s": per_size[best], "size": int(best),
            "per_size_flops_per_s": per_size, "repeats": repeats}


# ------------------------------------------------------------------------------ the benchmark
def _device_description(device: Any) -> dict[str, Any]:
    import torch

    if device.type == "cuda":
        return {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                "cpu_count": os.cpu_count()}
    name = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"name": name or platform.processor() or platform.machine(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "usable_cpus": usable}


def _loadavg() -> list[float] | None:
    """The system's 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _resolve_device(name: str) -> Any:
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise BenchError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: CUDA is not available here (use --device auto or --device cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _select_encodings(names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    from harness.encodings.registry import encoding_infos, get_encoding

    notes = []
    if not names:
        chosen = sorted((i.name for i in encoding_infos()),
                        key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    else:
        chosen = list(dict.fromkeys(names))
        for n in chosen:
            get_encoding(n)  # unknown -> RegistryError (one message, exit 2)
    if "none" not in chosen:
        notes.append("none added: it is the reference of every ratio")
    chosen = ["none"] + [n for n in chosen if n != "none"]
    return chosen, notes


def _check_resolutions(cfg: Any, resolutions: Sequence[int] | None) -> list[int]:
    if not resolutions:  # the training resolution and twice it (rounded up to a size the stem tiles)
        k, s = cfg.patch_kernel, cfg.patch_stride
        resolutions = [cfg.image_size, k + math.ceil((2 * cfg.image_size - k) / s) * s]
    out = []
    for r in resolutions:
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise BenchError(f"--resolutions: {r!r} is not a positive number of pixels")
        if not cfg.tiles_exactly(r):
            k, s = cfg.patch_kernel, cfg.patch_stride
            below = k + max(0, (r - k) // s) * s
            near = sorted({x for x in (below, below + s) if x >= k})
            raise BenchError(f"--resolutions: the stem (kernel {k}, stride {s}) cannot tile {r} px exactly; "
                             f"use kernel + n x stride pixels, e.g. {' or '.join(map(str, near))}")
        if r not in out:
            out.append(r)
    return out


def _check_json_path(path: str | os.PathLike | None) -> Path | None:
    """The JSON output path, checked (not created) before anything is measured."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise BenchError(f"--json {p}: is a folder, expected a file path")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise BenchError(f"--json {p}: cannot write there ({ancestor} is not a writable folder)")
    return p


def run_bench(
    preset: str = "small",
    *,
    device: str = "auto",
    encodings: Sequence[str] | None = None,
    resolutions: Sequence[int] | None = None,
    batch_size: int = 64,
    repeats: int = 5,
    threads: int = 0,
    json_path: str | os.PathLike | None = None,
    timm: bool = True,
    min_time_s: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; return every number as a JSON-able dict (written to ``json_path`` too).

    ``threads`` > 0 sets ``torch.set_num_threads`` (else torch's default); ``timm=False`` skips
    timm's row; ``min_time_s``: the least duration of one timing (default 0.5 s CPU, 0.25 s
    CUDA); ``progress`` receives one-line messages (default: stderr). Every input is checked
    before anything is measured: a bad one raises :class:`BenchError` (or the preset's or the
    registry's ``HarnessError``).
    """
    t_start = time.perf_counter()
    say = progress or (lambda msg: print(f"bench: {time.perf_counter() - t_start:6.1f}s {msg}", file=sys.stderr,
                                         flush=True))
    for name, v, lo in (("--batch-size", batch_size, 1), ("--repeats", repeats, 1), ("--threads", threads, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise BenchError(f"{name} must be an integer >= {lo}, got {v!r}")
    cfg = model_config(preset)  # unknown preset -> PresetError
    chosen, notes = _select_encodings(encodings)  # unknown encoding -> RegistryError
    res_list = _check_resolutions(cfg, resolutions)
    dev = _resolve_device(device)
    out_path = _check_json_path(json_path)

    import torch
    import torch.nn.functional as F
    from torch import nn

    from harness.models.vit import build_model
    from harness.train import TrainConfig, _autocast

    if threads > 0:
        torch.set_num_threads(threads)
    cuda = dev.type == "cuda"
    if cuda:
        torch.set_float32_matmul_precision("high")  # as the trainer: TF32 matmuls, bf16 autocast
        torch.backends.cudnn.allow_tf32 = True
    amp = torch.bfloat16 if cuda else None
    recipe = TrainConfig()
    min_time = MIN_TIME_S[dev.type] if min_time_s is None else float(min_time_s)
    warmup = WARMUP_STEPS[dev.type]
    train_res = cfg.image_size

    timm_note = None
    if timm:
        timm_note = timm_unavailable()
        if timm_note is None and cfg.patch_stride != cfg.patch_kernel:
            timm_note = (f"timm rows skipped: the preset's stem overlaps (kernel {cfg.patch_kernel}, "
                         f"stride {cfg.patch_stride}); timm's patch embedding does not")
    else:
        timm_note = "timm rows skipped (timm=False)"
    if timm_note:
        notes.append(timm_note)
    with_timm = timm_note is None

    result: dict[str, Any] = {
        "schema": "harness-bench/1",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": preset,
        "model": {k: getattr(cfg, k) for k in ("image_size", "in_chans", "num_classes", "dim", "depth", "heads",
                                               "mlp_ratio", "patch_kernel", "patch_stride", "pool", "qkv_bias")},
        "train_resolution": train_res,
        "resolutions": res_list,
        "batch_size": batch_size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "device": dev.type,
        "device_info": _device_description(dev),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "timm": None,
        "autocast": "bfloat16" if amp is not None else None,
        "min_time_s": min_time,
        "warmup_steps": warmup,
        "recipe": {"optimizer": "AdamW", "lr": recipe.lr, "weight_decay": recipe.weight_decay,
                   "label_smoothing": recipe.label_smoothing, "grad_clip": recipe.grad_clip, "fused": cuda},
        "load_average_before": _loadavg(),
        "notes": notes,
    }
    if with_timm:
        import timm as _timm_pkg

        result["timm"] = _timm_pkg.__version__
    mem = _Memory(dev)
    result["memory_method"] = mem.method

    # ---- inputs, fixed for the run, made before any model (so they are in every memory baseline)
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = {r: torch.randn(batch_size, cfg.in_chans, r, r, generator=gen).to(dev) for r in res_list}
    labels = torch.randint(0, cfg.num_classes, (batch_size,), generator=gen).to(dev)

    # ---- the device's matmul peak
    say(f"matmul peak ({'bf16' if cuda else 'float32'}) on {dev.type}, {torch.get_num_threads()} threads")
    peak_start = matmul_peak(dev, repeats, min_time)

    # ---- build, warm up, measure memory and FLOPs: one model after the other
    class Entry:
        def __init__(self, key: str, model: Any) -> None:
            self.key, self.model = key, model
            self.opt = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr, fused=cuda)
            self.data: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad)}

        def train_step(self) -> None:
            with _autocast(dev, amp):
                logits = self.model(images[train_res])
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
            loss.backward()
            if recipe.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

        def eval_step(self, r: int) -> None:
            with torch.no_grad(), _autocast(dev, amp):
                self.model(images[r])

    # one-time costs (thread pools, kernel selection, library workspaces) land here, on a
    # throw-away model, not on the first encoding's memory and calibration
    say("process warm-up (a throw-away none model)")
    torch.manual_seed(0)
    e = Entry("warm-up", build_model(cfg, "none").to(dev))
    for _ in range(warmup):
        e.train_step()
    e.model.eval()
    for r in res_list:
        e.eval_step(r)
    count_flops(e.train_step)
    del e

    entries: list[Entry] = []
    keys = chosen + ([_TIMM] if with_timm else [])
    for key in keys:
        say(f"{key}: build, warm up, memory and FLOPs")
        mem.before_model()
        torch.manual_seed(0)
        model = (build_timm_vit(cfg) if key == _TIMM else build_model(cfg, key)).to(dev)
        e = Entry(key, model)
        e.data["eval"] = {}
        model.eval()
        # timm's position table is fixed to its img_size: evaluated at the training resolution only
        for r in res_list if key != _TIMM else [r for r in res_list if r == train_res]:
            mem.start_phase()
            e.eval_step(r)
            t = _time_steps(lambda: e.eval_step(r), 1, dev)
            e.data["eval"][str(r)] = {"peak_mem_bytes": mem.end_phase(), "_calib": t}
        model.train()
        mem.start_phase()
        for _ in range(warmup - 1):
            e.train_step()
        t = _time_steps(e.train_step, 1, dev)
        e.data["train"] = {"peak_mem_bytes": mem.end_phase(), "_calib": t}
        flops, per_op = count_flops(e.train_step)
        e.data["train"]["counted_flops"] = flops
        e.data["train"]["counted_flops_per_op"] = per_op
        entries.append(e)

    # ---- interleaved timings
    def interleave(what: str, run: Callable[[Entry], Callable[[], None]], calib: Callable[[Entry], float],
                   subset: list[Entry]) -> dict[str, tuple[list[float], int]]:
        steps = {e.key: _steps_for(calib(e), min_time) for e in subset}
        times: dict[str, list[float]] = {e.key: [] for e in subset}
        for i in range(repeats):
            say(f"{what}: repeat {i + 1}/{repeats}")
            k = i % len(subset)
            for e in subset[k:] + subset[:k]:
                times[e.key].append(_time_steps(run(e), steps[e.key], dev))
        return {key: (times[key], steps[key]) for key in times}

    # the matmul peak again, now the models are in memory: the better of the two is the peak
    # (another process can only lower it), so a disturbed first measure does not inflate the MFU
    say("matmul peak, second measure")
    peak_end = matmul_peak(dev, repeats, min_time)
    best = max(peak_start, peak_end, key=lambda p: p["flops_per_s"])
    result["matmul_peak"] = {**best, "start_flops_per_s": peak_start["flops_per_s"],
                             "end_flops_per_s": peak_end["flops_per_s"]}
    peak = best["flops_per_s"]

    for e in entries:
        e.model.train()
    timed = interleave(f"training step at {train_res} px", lambda e: e.train_step,
                       lambda e: e.data["train"]["_calib"], entries)
    for e in entries:
        e.data["train"].update(_summary(*timed[e.key], batch_size))
        e.data["train"]["flops_per_s"] = e.data["train"]["counted_flops"] / e.data["train"]["step_s"]
        e.data["train"]["mfu"] = e.data["train"]["flops_per_s"] / peak if peak > 0 else None
        del e.data["train"]["_calib"]
    for e in entries:
        e.model.eval()
    for r in res_list:
        subset = [e for e in entries if str(r) in e.data["eval"]]
        timed = interleave(f"evaluation at {r} px", lambda e, r=r: (lambda: e.eval_step(r)),
                           lambda e, r=r: e.data["eval"][str(r)]["_calib"], subset)
        for e in subset:
            d = e.data["eval"][str(r)]
            d.update(_summary(*timed[e.key], batch_size))
            del d["_calib"]

    # ---- ratios to none, verdicts
    ref = entries[0].data
    assert entries[0].key == "none"

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    for e in entries:
        d = e.data
        d["ratios"] = {
            "train_step_time": ratio(d["train"]["step_s"], ref["train"]["step_s"]),
            "train_images_per_s": ratio(d["train"]["images_per_s"], ref["train"]["images_per_s"]),
            "train_peak_mem": ratio(d["train"]["peak_mem_bytes"], ref["train"]["peak_mem_bytes"]),
            "counted_flops": ratio(d["train"]["counted_flops"], ref["train"]["counted_flops"]),
            "flops_per_s": ratio(d["train"]["flops_per_s"], ref["train"]["flops_per_s"]),
            "eval_time": {r: ratio(v["step_s"], ref["eval"][r]["step_s"]) for r, v in d["eval"].items()},
            "eval_peak_mem": {r: ratio(v["peak_mem_bytes"], ref["eval"][r]["peak_mem_bytes"])
                              for r, v in d["eval"].items()},
        }
        target = TARGETS.get(e.key)
        d["target"] = target
        d["verdict"] = None if target is None else ("PASS" if d["ratios"]["train_step_time"] <= target else "FAIL")

    result["encodings"] = {e.key: e.data for e in entries if e.key != _TIMM}
    if with_timm:
        t = next(e for e in entries if e.key == _TIMM).data
        learned = result["encodings"].get("learned")
        r = ratio(learned["train"]["images_per_s"], t["train"]["images_per_s"]) if learned else None
        t.pop("target"), t.pop("verdict")
        t.update({
            "model": "timm.models.vision_transformer.VisionTransformer (learned pos_embed incl. the cls row)",
            "learned_over_timm_images_per_s": r,
            "target": TIMM_TARGET,
            "target_applies": dev.type == "cpu" and preset == "small",
            "verdict": None if r is None else ("PASS" if r >= TIMM_TARGET else "FAIL"),
        })
        if learned is None:
            notes.append("learned not measured: no learned / timm ratio")
        result["timm_vit"] = t
    else:
        result["timm_vit"] = {"skipped": timm_note}

    result["load_average_after"] = _loadavg()
    analytic = analytic_flops(cfg, train_res, batch_size)
    counted = ref["train"]["counted_flops"]
    result["flop_model"] = {
        "analytic": analytic,
        "analytic_eval_forward": {str(r): analytic_flops(cfg, r, batch_size)["forward"] for r in res_list},
        "counted_none_train_step": counted,
        "counted_over_analytic": counted / analytic["train_step"],
        "analytic_mfu_none": analytic["train_step"] / ref["train"]["step_s"] / peak if peak > 0 else None,
    }
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out_path)
        result["json_path"] = str(out_path)
    return result


# ------------------------------------------------------------------------------ the tables
def _fmt_table(header: Sequence[str], rows: list[Sequence[str]], left: int = 1) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def _r(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_report(res: dict[str, Any]) -> str:
    """The plain-text tables of a :func:`run_bench` result (the training table last)."""
    m, dev = res["model"], res["device_info"]
    g = (m["image_size"] - m["patch_kernel"]) // m["patch_stride"] + 1
    peak = res["matmul_peak"]
    lines = [
        f"harness bench  {res['date']}  preset {res['preset']} ({m['image_size']} px, {g}x{g} grid, dim {m['dim']}, "
        f"depth {m['depth']}, heads {m['heads']}, mlp {m['mlp_ratio']:g})  batch {res['batch_size']}  "
        f"{m['num_classes']} classes",
        f"device {res['device']}: {dev['name']} ({dev.get('cpu_count')} CPUs)  threads {res['threads']}  "
        f"torch {res['torch']}  timm {res['timm'] or '-'}  autocast {res['autocast'] or 'none (float32)'}",
        f"matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['dtype']}, n={peak['size']}, "
        f"median of {peak['repeats']}; the better of {peak['start_flops_per_s'] / 1e9:.1f} before the models "
        f"and {peak['end_flops_per_s'] / 1e9:.1f} after)",
    ]
    fm = res["flop_model"]
    lines.append(
        f"FLOP model, none, one training step: analytic {fm['analytic']['train_step'] / 1e9:.3f} GFLOP "
        f"(3 x forward), FlopCounterMode {fm['counted_none_train_step'] / 1e9:.3f} GFLOP "
        f"(counted/analytic {fm['counted_over_analytic']:.3f})")
    lines.append(f"memory: {res['memory_method']}")
    la, lb = res.get("load_average_before"), res.get("load_average_after")
    if la and lb:
        lines.append(f"load average (1 min) before / after the run: {la[0]:.2f} / {lb[0]:.2f} "
                     f"(the run adds about its {res['threads']} threads; others' load slows and blurs the figures)")
    for n in res["notes"]:
        lines.append(f"note: {n}")

    encs = res["encodings"]
    ress = [str(r) for r in res["resolutions"]]
    lines += ["", f"evaluation (no_grad forward, batch {res['batch_size']}): images/s, time / none, peak MiB; "
                  f"median of {res['repeats']}"]
    header = ["encoding"]
    for r in ress:
        header += [f"{r} px img/s", "time/none", "range", "MiB"]
    rows = []
    for name, d in encs.items():
        row = [name]
        for r in ress:
            e = d["eval"][r]
            row += [f"{e['images_per_s']:.1f}", _r(d["ratios"]["eval_time"][r]), f"{e['range'] * 100:.0f}%",
                    _mib(e["peak_mem_bytes"])]
        rows.append(row)
    lines += _fmt_table(header, rows)

    tr = res["train_resolution"]
    steps = sorted({d["train"]["steps_per_timing"] for d in encs.values()})
    lines += ["", f"training step at {tr} px (forward + backward + AdamW, batch {res['batch_size']}): "
                  f"median of {res['repeats']} timings of {'/'.join(map(str, steps))} steps; "
                  f"target = max time / none"]
    header = ["encoding", "img/s", "ms/step", "range", "time/none", "target", "verdict", "peak MiB", "mem/none",
              "GFLOP/step", "GFLOP/s", "MFU"]
    rows = []
    all_rows = list(encs.items())
    t = res.get("timm_vit", {})
    if "train" in t:
        all_rows.append(("timm ViT", t))
    for name, d in all_rows:
        tr_d, ra = d["train"], d["ratios"]
        is_timm = name == "timm ViT"
        rows.append([
            name, f"{tr_d['images_per_s']:.1f}", f"{tr_d['step_s'] * 1e3:.1f}", f"{tr_d['range'] * 100:.0f}%",
            _r(ra["train_step_time"]), "-" if is_timm or d.get("target") is None else f"<= {d['target']:.2f}",
            "-" if is_timm else (d.get("verdict") or "-"), _mib(tr_d["peak_mem_bytes"]), _r(ra["train_peak_mem"], 2),
            f"{tr_d['counted_flops'] / 1e9:.3f}", f"{tr_d['flops_per_s'] / 1e9:.1f}",
            "-" if tr_d.get("mfu") is None else f"{tr_d['mfu'] * 100:.1f}%",
        ])
    lines += _fmt_table(header, rows)
    if "train" in t:
        r = t["learned_over_timm_images_per_s"]
        scope = "" if t["target_applies"] else " (the target is set for the CPU with preset small)"
        lines.append(f"learned / timm ViT training images/s: {_r(r)} (target >= {t['target']:.2f}): "
                     f"{t['verdict'] or '-'}{scope}")
    else:
        lines.append(f"timm ViT: {t.get('skipped')}")
    return "\n".join(lines)
