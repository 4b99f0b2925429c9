"""``run_bench``: build every model, measure it, time them all interleaved, derive the ratios.

Every model is built first (seeded), warmed up and measured for memory and FLOPs one after
the other; then the timings run **interleaved**: repeat r times each model in turn (starting
one model further each repeat), so that a slow drift of the machine lands on every model alike.
With several thread counts, each model is timed at each count in turn within a repeat (the
count set just before its timing), and each count has its own matmul peak, so each MFU is
against the peak of the same count.
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
from harness.bench.cell_eval import CellEval
from harness.bench.flops import count_flops
from harness.bench.memory import MemoryProbe
from harness.bench.request import REFERENCE, Request, check_request
from harness.bench.results import add_ratios, flop_model, timm_comparison
from harness.bench.timm_vit import build_timm_vit, timm_unavailable, timm_version
from harness.models.vit import build_model
from harness.training.train import TrainConfig, TrainStep, autocast, prepare_device

__all__ = ["run_bench"]

_TIMM = "timm"  # the key of timm's row


def run_bench(
    preset: str | None = None,
    *,
    device: str = "auto",
    encodings: Sequence[str] | None = None,
    resolutions: Sequence[int] | None = None,
    batch_size: int | None = None,
    repeats: int = 5,
    threads: int | Sequence[int] = 0,
    json_path: str | os.PathLike | None = None,
    timm: bool = True,
    min_time_s: float | None = None,
    progress: Callable[[str], None] | None = None,
    spec: str | os.PathLike | None = None,
    sweep_repeats: int = 1,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the benchmark; return every number as a JSON-able dict (written to ``json_path`` too).

    ``preset``: the model (default ``small``; with ``spec``, the spec's model, which a preset
    given must be); ``spec``: a study spec whose model, recipe, batch size, training resolution,
    encoding entries and evaluation sweep are measured (see :mod:`harness.bench.cell_eval`),
    with ``overrides`` (``KEY=VALUE``, as ``--set``);
    ``batch_size`` None: the spec's, else 64. ``threads``: a count > 0 sets
    ``torch.set_num_threads`` (0: torch's current count); several counts measure every figure
    at each, interleaved. ``sweep_repeats``: timings of a spec's whole sweep (it lasts seconds
    to minutes). ``timm=False`` skips timm's row; ``min_time_s``: the least duration of one
    timing (default 0.5 s CPU, 0.25 s CUDA); ``progress`` receives one-line messages (default:
    stderr). Every input is checked before anything is measured: a bad one raises
    :class:`BenchError` (or the preset's, the spec's or the registry's ``HarnessError``).
    """
    say = progress or _stderr_progress(time.perf_counter())
    req = check_request(preset, device=device, encodings=encodings, resolutions=resolutions, batch_size=batch_size,
                        repeats=repeats, threads=threads, json_path=json_path, spec=spec, sweep_repeats=sweep_repeats,
                        overrides=overrides)
    bench = _Bench(req, prepare_device(req.device, req.threads[0]), repeats, sweep_repeats, min_time_s, say)
    timm_note = timm_unavailable(req.cfg) if timm else "timm rows skipped (timm=False)"
    notes = req.notes + ([timm_note] if timm_note else [])
    result = _settings(bench, notes, with_timm=timm_note is None)
    mem = MemoryProbe(req.device)
    result["memory_method"] = mem.method

    peak_start = _matmul_peaks(bench)
    _warm_up(bench)
    if bench.cell is not None:
        bench.say(f"rendering the test splits of {req.spec.name}")
        result["cell_eval"] = {**bench.cell.describe(), "render_s": bench.cell.render()}
        _warm_up_sweep(bench)
    keys = req.encodings + ([_TIMM] if timm_note is None else [])
    entries = [_prepare(bench, key, mem) for key in keys]
    # the matmul peak again, now the models are in memory: the better of the two is the peak
    # (another process can only lower it), so a disturbed first measure does not inflate the MFU
    bench.say("matmul peak, second measure")
    peak_end = _matmul_peaks(bench)
    peaks = {}
    for t in bench.threads:
        best = max(peak_start[t], peak_end[t], key=lambda p: p["flops_per_s"])
        peaks[t] = {**best, "threads": t, "start_flops_per_s": peak_start[t]["flops_per_s"],
                    "end_flops_per_s": peak_end[t]["flops_per_s"]}
    result["matmul_peak"] = peaks[bench.threads[0]]
    result["matmul_peaks"] = {str(t): p for t, p in peaks.items()}
    best_flops = {t: p["flops_per_s"] for t, p in peaks.items()}
    _time_training(bench, entries, best_flops)
    _time_evaluation(bench, entries)
    if bench.cell is not None:
        _time_cell_eval(bench, [e for e in entries if e.key != _TIMM], best_flops)
    timing.set_threads(bench.threads[0])

    figures = {e.key: e.data for e in entries}
    add_ratios(figures, REFERENCE)
    result["encodings"] = {k: d for k, d in figures.items() if k != _TIMM}
    if _TIMM in figures:
        learned = result["encodings"].get("learned")
        if learned is None:
            notes.append("learned not measured: no learned / timm ratio")
        result["timm_vit"] = timm_comparison(figures[_TIMM], learned,
                                             applies=req.device.type == "cpu" and req.preset == "small")
    else:
        result["timm_vit"] = {"skipped": timm_note}
    result["load_average_after"] = timing.loadavg()
    result["flop_model"] = flop_model(req.cfg, figures[REFERENCE], train_resolution=bench.train_res,
                                      resolutions=req.resolutions, batch=bench.batch_size,
                                      peak=best_flops[bench.threads[0]])
    if req.json_path is not None:
        _write_json(result, req.json_path)
        result["json_path"] = str(req.json_path)
    return result


# ------------------------------------------------------------------------------ the run's fixed parts
class _Bench:
    """What stays fixed for the run: the request, the recipe, the inputs, the timing settings,
    the thread counts and, with a spec, the cell's evaluation path."""

    def __init__(self, req: Request, amp: torch.dtype | None, repeats: int, sweep_repeats: int,
                 min_time_s: float | None, say: Callable[[str], None]) -> None:
        dev = req.device
        self.req, self.amp, self.batch_size, self.repeats, self.say = req, amp, req.batch_size, repeats, say
        self.sweep_repeats = sweep_repeats
        self.threads = tuple(t if t > 0 else torch.get_num_threads() for t in req.threads)
        self.recipe = TrainConfig() if req.spec is None else req.spec.train_config(device=dev.type)
        self.train_res = req.cfg.image_size
        self.min_time = timing.MIN_TIME_S[dev.type] if min_time_s is None else float(min_time_s)
        self.warmup = timing.WARMUP_STEPS[dev.type]
        self.cell = None if req.spec is None else CellEval(req.spec, self.train_res, dev, amp)
        # the inputs, fixed for the run, made before any model (so they are in every memory baseline)
        gen = torch.Generator(device="cpu").manual_seed(0)
        cfg = req.cfg
        self.images = {r: torch.randn(self.batch_size, cfg.in_chans, r, r, generator=gen).to(dev)
                       for r in req.resolutions}
        self.labels = torch.randint(0, cfg.num_classes, (self.batch_size,), generator=gen).to(dev)


class _Entry:
    """One model under test: the trainer's own training step, an evaluation step, its figures
    (``data``; ``by_threads[t]``: the timed figures at ``t`` threads, the first count's being
    ``data['train']`` and ``data['eval']`` themselves)."""

    def __init__(self, bench: _Bench, key: str, model: torch.nn.Module) -> None:
        self.bench, self.key, self.model = bench, key, model
        self.step = TrainStep(model, bench.recipe, bench.req.device, bench.amp)
        self.data: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        self.variants: list = []  # with a spec: the study's evaluation variants of this encoding

    def train_step(self) -> None:
        b = self.bench
        self.step(b.images[b.train_res], b.labels, b.recipe.lr)

    def eval_step(self, r: int) -> None:
        with torch.no_grad(), autocast(self.bench.req.device, self.bench.amp):
            self.model(self.bench.images[r])

    def at(self, threads: int) -> dict[str, Any]:
        """The figures at ``threads`` threads (created empty)."""
        return self.data.setdefault("by_threads", {}).setdefault(str(threads), {})


def _settings(bench: _Bench, notes: list[str], *, with_timm: bool) -> dict[str, Any]:
    """The head of the result: what was run, where, and how."""
    req, cfg, recipe = bench.req, bench.req.cfg, bench.recipe
    return {
        "schema": "harness-bench/1",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": req.preset,
        "spec": None if req.spec is None else req.spec.source,
        "overrides": list(req.overrides),
        "model": {k: getattr(cfg, k) for k in ("image_size", "in_chans", "num_classes", "dim", "depth", "heads",
                                               "mlp_ratio", "patch_kernel", "patch_stride", "pool", "qkv_bias")},
        "train_resolution": bench.train_res,
        "resolutions": req.resolutions,
        "batch_size": bench.batch_size,
        "repeats": bench.repeats,
        "sweep_repeats": bench.sweep_repeats if bench.cell is not None else None,
        "threads": bench.threads[0],
        "thread_counts": list(bench.threads),
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
                   "augment": recipe.augment, "fused": req.device.type == "cuda"},
        "encoding_options": {k: {"name": n, "options": o} for k, (n, o) in req.builds.items()},
        "load_average_before": timing.loadavg(),
        "notes": notes,
    }


# ------------------------------------------------------------------------------ build and measure
def _matmul_peaks(bench: _Bench) -> dict[int, dict[str, Any]]:
    """The matmul peak at each thread count."""
    out = {}
    for t in bench.threads:
        timing.set_threads(t)
        bench.say(f"matmul peak ({'bf16' if bench.amp else 'float32'}) on {bench.req.device.type}, {t} threads")
        out[t] = timing.matmul_peak(bench.req.device, bench.repeats, bench.min_time)
    timing.set_threads(bench.threads[0])
    return out


def _warm_up(bench: _Bench) -> None:
    """One-time costs (thread pools, kernel selection, library workspaces) land on a throw-away
    model, not on the first encoding's memory and calibration."""
    bench.say(f"process warm-up (a throw-away {REFERENCE} model)")
    torch.manual_seed(0)
    e = _Entry(bench, "warm-up", _build(bench, REFERENCE))
    for t in bench.threads[::-1]:  # the first count last: the calibrations run at it
        timing.set_threads(t)
        for _ in range(bench.warmup):
            e.train_step()
        e.model.eval()
        for r in bench.req.resolutions:
            e.eval_step(r)
        e.model.train()
    count_flops(e.train_step)


def _warm_up_sweep(bench: _Bench) -> None:
    """One sweep of a throw-away model (every test size once: the first pass at a shape pays for
    kernel selection), so that no encoding's first sweep timing pays for it."""
    bench.say(f"sweep warm-up (a throw-away {REFERENCE} model)")
    torch.manual_seed(0)
    model = _build(bench, REFERENCE)
    bench.cell.sweep(model, bench.cell.variants(model))()


def _build(bench: _Bench, key: str) -> torch.nn.Module:
    if key == _TIMM:
        return build_timm_vit(bench.req.cfg).to(bench.req.device)
    name, options = bench.req.builds[key]
    return build_model(bench.req.cfg, name, options).to(bench.req.device)


def _prepare(bench: _Bench, key: str, mem: MemoryProbe) -> _Entry:
    """Build ``key``'s model (seeded), warm it up; measure its memory and FLOPs, and one step of
    each kind (the calibration of the timings)."""
    bench.say(f"{key}: build, warm up, memory and FLOPs")
    dev, res = bench.req.device, bench.req.resolutions
    mem.before_model()
    torch.manual_seed(0)
    model = _build(bench, key)
    e = _Entry(bench, key, model)
    if key != _TIMM:
        e.data["name"] = bench.req.builds[key][0]
    e.data["eval"] = {}
    model.eval()
    # timm's position table is fixed to its img_size: evaluated at the training resolution only
    for r in res if key != _TIMM else [r for r in res if r == bench.train_res]:
        mem.start_phase()
        e.eval_step(r)
        t = timing.time_steps(lambda: e.eval_step(r), 1, dev)
        e.data["eval"][str(r)] = {"peak_mem_bytes": mem.end_phase(), "_calib": t}
    if bench.cell is not None and key != _TIMM:
        e.variants = bench.cell.variants(model)
        e.data["eval_one_variant"] = {}
        for size in bench.cell.single_sizes:
            run, n = bench.cell.single(model, e.variants[0], size)
            mem.start_phase()
            run()
            t = timing.time_steps(run, 1, dev)
            flops, _ = count_flops(run)
            e.data["eval_one_variant"][size.label] = {"variant": e.variants[0].label, "images": n,
                                                      "peak_mem_bytes": mem.end_phase(), "counted_flops": flops,
                                                      "_calib": t}
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
#: figures measured once, not per thread count: copied into every count's figures
_SHARED = ("counted_flops", "variant", "images", "variants", "evaluations")


def _jobs(bench: _Bench, e: _Entry, run: Callable[[], Any], figures: dict[str, Any], images: int, *path: str,
          steps: int | None = None, least: int | None = None) -> list[timing.Job]:
    """One job per thread count that times ``run`` (``images`` images a call). The first count's
    summary goes into ``figures`` (its calibration ``_calib`` sets the steps per timing, then is
    removed); each other count's into a new dict at ``e.at(count)[path...]``, with the
    ``_SHARED`` fields of ``figures``."""
    if steps is None:
        steps = timing.steps_for(figures.pop("_calib"), bench.min_time, least=least)
    jobs = []
    for i, t in enumerate(bench.threads):
        out = figures if i == 0 else {k: v for k, v in figures.items() if k in _SHARED}
        node = e.at(t)
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = out
        jobs.append(timing.Job(run, t, steps, images, out))
    return jobs


def _rates(figures: dict[str, Any], peak: float) -> None:
    """The achieved FLOP/s of timed figures with counted FLOPs, and the MFU against ``peak``."""
    figures["flops_per_s"] = figures["counted_flops"] / figures["step_s"]
    figures["mfu"] = figures["flops_per_s"] / peak if peak > 0 else None


def _time_training(bench: _Bench, entries: list[_Entry], peaks: dict[int, float]) -> None:
    for e in entries:
        e.model.train()
    jobs = [j for e in entries for j in _jobs(bench, e, e.train_step, e.data["train"], bench.batch_size, "train")]
    timing.interleave(bench.req.device, bench.say, f"training step at {bench.train_res} px", jobs,
                      bench.repeats)
    for e in entries:
        for t in bench.threads:
            _rates(e.at(t)["train"], peaks[t])


def _time_evaluation(bench: _Bench, entries: list[_Entry]) -> None:
    for e in entries:
        e.model.eval()
    for r in bench.req.resolutions:
        jobs = [j for e in entries if str(r) in e.data["eval"]
                for j in _jobs(bench, e, lambda e=e, r=r: e.eval_step(r), e.data["eval"][str(r)], bench.batch_size,
                               "eval", str(r))]
        timing.interleave(bench.req.device, bench.say, f"evaluation at {r} px", jobs, bench.repeats)


def _time_cell_eval(bench: _Bench, entries: list[_Entry], peaks: dict[int, float]) -> None:
    """A study cell's evaluation: the first variant at each of the cell's one-variant sizes (a
    timing: as many whole-split evaluations as last ``min_time_s``, at least one), then the
    whole sweep (``sweep_repeats`` timings of one sweep each)."""
    cell = bench.cell
    for size in cell.single_sizes:
        jobs = []
        for e in entries:
            run, n = cell.single(e.model, e.variants[0], size)
            jobs += _jobs(bench, e, run, e.data["eval_one_variant"][size.label], n, "eval_one_variant", size.label,
                          least=1)
        timing.interleave(bench.req.device, bench.say, f"test split, one variant, at {size.label} px", jobs,
                          bench.repeats)
    jobs = []
    for e in entries:
        evaluations, images = cell.sweep_images(e.model, e.variants)
        e.data["sweep"] = {"variants": [v.label for v in e.variants], "evaluations": evaluations, "images": images}
        jobs += _jobs(bench, e, cell.sweep(e.model, e.variants), e.data["sweep"], images, "sweep", steps=1)
    timing.interleave(bench.req.device, bench.say, "the whole sweep of one cell", jobs, bench.sweep_repeats)
    for e in entries:
        for t in bench.threads:
            at = e.at(t)
            at["sweep"]["seconds"] = at["sweep"]["step_s"]
            for d in at["eval_one_variant"].values():
                _rates(d, peaks[t])


# ------------------------------------------------------------------------------ small parts
def _stderr_progress(t_start: float) -> Callable[[str], None]:
    def say(msg: str) -> None:
        print(f"bench: {time.perf_counter() - t_start:6.1f}s {msg}", file=sys.stderr, flush=True)

    return say


def _write_json(result: dict[str, Any], path: Path) -> None:
    """Write atomically: a reader never sees half a file. A write that fails (a full disk)
    leaves no ``.tmp`` and raises the one-line :class:`~harness.training.checkpoint.OutputWriteError`."""
    from harness.training.checkpoint import OutputWriteError

    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError.of(exc, path.parent, f"writing {path.name}") from None
