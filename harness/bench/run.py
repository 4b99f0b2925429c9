"""``run_bench``: build every model, measure it, time them all interleaved, derive the ratios.

Every model is built first (seeded), warmed up and measured for memory and FLOPs one after
the other; then the timings run **interleaved**: repeat r times each model in turn (starting
one model further each repeat), so that a slow drift of the machine lands on every model alike.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.bench import timing
from harness.bench.flops import count_flops
from harness.bench.memory import MemoryProbe
from harness.bench.request import REFERENCE, Request, check_request
from harness.bench.results import add_ratios, flop_model, timm_comparison
from harness.bench.timm_vit import build_timm_vit, timm_unavailable, timm_version
from harness.models.vit import build_model
from harness.train import TrainConfig, TrainStep, autocast, prepare_device

__all__ = ["run_bench"]

_TIMM = "timm"  # the key of timm's row


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
    say = progress or _stderr_progress(time.perf_counter())
    req = check_request(preset, device=device, encodings=encodings, resolutions=resolutions, batch_size=batch_size,
                        repeats=repeats, threads=threads, json_path=json_path)
    bench = _Bench(req, prepare_device(req.device, threads), batch_size, repeats, min_time_s, say)
    timm_note = timm_unavailable(req.cfg) if timm else "timm rows skipped (timm=False)"
    notes = req.notes + ([timm_note] if timm_note else [])
    result = _settings(bench, notes, with_timm=timm_note is None)
    mem = MemoryProbe(req.device)
    result["memory_method"] = mem.method

    say(f"matmul peak ({'bf16' if bench.amp else 'float32'}) on {req.device.type}, {torch.get_num_threads()} threads")
    peak_start = timing.matmul_peak(req.device, repeats, bench.min_time)
    _warm_up(bench)
    keys = req.encodings + ([_TIMM] if timm_note is None else [])
    entries = [_prepare(bench, key, mem) for key in keys]
    # the matmul peak again, now the models are in memory: the better of the two is the peak
    # (another process can only lower it), so a disturbed first measure does not inflate the MFU
    say("matmul peak, second measure")
    peak_end = timing.matmul_peak(req.device, repeats, bench.min_time)
    best = max(peak_start, peak_end, key=lambda p: p["flops_per_s"])
    result["matmul_peak"] = {**best, "start_flops_per_s": peak_start["flops_per_s"],
                             "end_flops_per_s": peak_end["flops_per_s"]}
    _time_training(bench, entries, best["flops_per_s"])
    _time_evaluation(bench, entries)

    figures = {e.key: e.data for e in entries}
    add_ratios(figures, REFERENCE)
    result["encodings"] = {k: d for k, d in figures.items() if k != _TIMM}
    if _TIMM in figures:
        learned = result["encodings"].get("learned")
        if learned is None:
            notes.append("learned not measured: no learned / timm ratio")
        result["timm_vit"] = timm_comparison(figures[_TIMM], learned,
                                             applies=req.device.type == "cpu" and preset == "small")
    else:
        result["timm_vit"] = {"skipped": timm_note}
    result["load_average_after"] = timing.loadavg()
    result["flop_model"] = flop_model(req.cfg, figures[REFERENCE], train_resolution=bench.train_res,
                                      resolutions=req.resolutions, batch=batch_size, peak=best["flops_per_s"])
    if req.json_path is not None:
        _write_json(result, req.json_path)
        result["json_path"] = str(req.json_path)
    return result


# ------------------------------------------------------------------------------ the run's fixed parts
class _Bench:
    """What stays fixed for the run: the request, the recipe, the inputs, the timing settings."""

    def __init__(self, req: Request, amp: torch.dtype | None, batch_size: int, repeats: int,
                 min_time_s: float | None, say: Callable[[str], None]) -> None:
        dev = req.device
        self.req, self.amp, self.batch_size, self.repeats, self.say = req, amp, batch_size, repeats, say
        self.recipe = TrainConfig()
        self.train_res = req.cfg.image_size
        self.min_time = timing.MIN_TIME_S[dev.type] if min_time_s is None else float(min_time_s)
        self.warmup = timing.WARMUP_STEPS[dev.type]
        # the inputs, fixed for the run, made before any model (so they are in every memory baseline)
        gen = torch.Generator(device="cpu").manual_seed(0)
        cfg = req.cfg
        self.images = {r: torch.randn(batch_size, cfg.in_chans, r, r, generator=gen).to(dev) for r in req.resolutions}
        self.labels = torch.randint(0, cfg.num_classes, (batch_size,), generator=gen).to(dev)


class _Entry:
    """One model under test: the trainer's own training step, an evaluation step, its figures."""

    def __init__(self, bench: _Bench, key: str, model: torch.nn.Module) -> None:
        self.bench, self.key, self.model = bench, key, model
        self.step = TrainStep(model, bench.recipe, bench.req.device, bench.amp)
        self.data: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    def train_step(self) -> None:
        b = self.bench
        self.step(b.images[b.train_res], b.labels, b.recipe.lr)

    def eval_step(self, r: int) -> None:
        with torch.no_grad(), autocast(self.bench.req.device, self.bench.amp):
            self.model(self.bench.images[r])


def _settings(bench: _Bench, notes: list[str], *, with_timm: bool) -> dict[str, Any]:
    """The head of the result: what was run, where, and how."""
    req, cfg, recipe = bench.req, bench.req.cfg, bench.recipe
    return {
        "schema": "harness-bench/1",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": req.preset,
        "model": {k: getattr(cfg, k) for k in ("image_size", "in_chans", "num_classes", "dim", "depth", "heads",
                                               "mlp_ratio", "patch_kernel", "patch_stride", "pool", "qkv_bias")},
        "train_resolution": bench.train_res,
        "resolutions": req.resolutions,
        "batch_size": bench.batch_size,
        "repeats": bench.repeats,
        "threads": torch.get_num_threads(),
        "device": req.device.type,
        "device_info": timing.device_description(req.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "timm": timm_version() if with_timm else None,
        "autocast": "bfloat16" if bench.amp is not None else None,
        "min_time_s": bench.min_time,
        "warmup_steps": bench.warmup,
        "recipe": {"optimizer": "AdamW", "lr": recipe.lr, "weight_decay": recipe.weight_decay,
                   "label_smoothing": recipe.label_smoothing, "grad_clip": recipe.grad_clip,
                   "fused": req.device.type == "cuda"},
        "load_average_before": timing.loadavg(),
        "notes": notes,
    }


# ------------------------------------------------------------------------------ build and measure
def _warm_up(bench: _Bench) -> None:
    """One-time costs (thread pools, kernel selection, library workspaces) land on a throw-away
    model, not on the first encoding's memory and calibration."""
    bench.say(f"process warm-up (a throw-away {REFERENCE} model)")
    torch.manual_seed(0)
    e = _Entry(bench, "warm-up", build_model(bench.req.cfg, REFERENCE).to(bench.req.device))
    for _ in range(bench.warmup):
        e.train_step()
    e.model.eval()
    for r in bench.req.resolutions:
        e.eval_step(r)
    count_flops(e.train_step)


def _prepare(bench: _Bench, key: str, mem: MemoryProbe) -> _Entry:
    """Build ``key``'s model (seeded), warm it up; measure its memory and FLOPs, and one step of
    each kind (the calibration of the timings)."""
    bench.say(f"{key}: build, warm up, memory and FLOPs")
    dev, res = bench.req.device, bench.req.resolutions
    mem.before_model()
    torch.manual_seed(0)
    model = (build_timm_vit(bench.req.cfg) if key == _TIMM else build_model(bench.req.cfg, key)).to(dev)
    e = _Entry(bench, key, model)
    e.data["eval"] = {}
    model.eval()
    # timm's position table is fixed to its img_size: evaluated at the training resolution only
    for r in res if key != _TIMM else [r for r in res if r == bench.train_res]:
        mem.start_phase()
        e.eval_step(r)
        t = timing.time_steps(lambda: e.eval_step(r), 1, dev)
        e.data["eval"][str(r)] = {"peak_mem_bytes": mem.end_phase(), "_calib": t}
    model.train()
    mem.start_phase()
    for _ in range(bench.warmup - 1):
        e.train_step()
    t = timing.time_steps(e.train_step, 1, dev)
    e.data["train"] = {"peak_mem_bytes": mem.end_phase(), "_calib": t}
    flops, per_op = count_flops(e.train_step)
    e.data["train"]["counted_flops"] = flops
    e.data["train"]["counted_flops_per_op"] = per_op
    return e


# ------------------------------------------------------------------------------ interleaved timings
def _interleave(bench: _Bench, what: str, subset: list[_Entry], run: Callable[[_Entry], Callable[[], None]],
                calib: Callable[[_Entry], dict[str, Any]]) -> None:
    """Time ``run(e)`` of every entry, in turn, ``repeats`` times; replace ``calib(e)['_calib']``
    in the figures dict ``calib(e)`` by the timings' summary."""
    steps = {e.key: timing.steps_for(calib(e)["_calib"], bench.min_time) for e in subset}
    times: dict[str, list[float]] = {e.key: [] for e in subset}
    for i in range(bench.repeats):
        bench.say(f"{what}: repeat {i + 1}/{bench.repeats}")
        k = i % len(subset)
        for e in subset[k:] + subset[:k]:
            times[e.key].append(timing.time_steps(run(e), steps[e.key], bench.req.device))
    for e in subset:
        d = calib(e)
        d.update(timing.summary(times[e.key], steps[e.key], bench.batch_size))
        del d["_calib"]


def _time_training(bench: _Bench, entries: list[_Entry], peak: float) -> None:
    for e in entries:
        e.model.train()
    _interleave(bench, f"training step at {bench.train_res} px", entries, lambda e: e.train_step,
                lambda e: e.data["train"])
    for e in entries:
        tr = e.data["train"]
        tr["flops_per_s"] = tr["counted_flops"] / tr["step_s"]
        tr["mfu"] = tr["flops_per_s"] / peak if peak > 0 else None


def _time_evaluation(bench: _Bench, entries: list[_Entry]) -> None:
    for e in entries:
        e.model.eval()
    for r in bench.req.resolutions:
        subset = [e for e in entries if str(r) in e.data["eval"]]
        _interleave(bench, f"evaluation at {r} px", subset, lambda e, r=r: (lambda: e.eval_step(r)),
                    lambda e, r=r: e.data["eval"][str(r)])


# ------------------------------------------------------------------------------ small parts
def _stderr_progress(t_start: float) -> Callable[[str], None]:
    def say(msg: str) -> None:
        print(f"bench: {time.perf_counter() - t_start:6.1f}s {msg}", file=sys.stderr, flush=True)

    return say


def _write_json(result: dict[str, Any], path: Path) -> None:
    """Write atomically: a reader never sees half a file. A write that fails (a full disk)
    leaves no ``.tmp`` and raises the one-line :class:`~harness.checkpoint.OutputWriteError`."""
    from harness.checkpoint import OutputWriteError

    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError.of(exc, path.parent, f"writing {path.name}") from None
