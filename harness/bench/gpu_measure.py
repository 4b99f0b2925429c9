"""The GPU check's measurements on the device (``python -m harness.bench.gpu_check measure``, whose
steps :mod:`harness.bench.gpu_check` describes): the trainer's own training step of every encoding,
eager (:func:`_measure_eager`: time, FLOPs, peak memory, and the evaluations at every test size)
and compiled (:func:`_measure_compiled`), one cell trained with ``train.compile`` off and on
(:func:`_train_cell`), and the projection of the study's wall time from them (:func:`_projection`);
:func:`measure` runs them within the budget and writes every number to the JSON.

torch, the models and the spec are imported inside the functions, when a measurement runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.bench.gpu_arithmetic import cell_seconds, compare_accuracy, mfu, project_study, study_evaluations

__all__ = ["NO_CUDA", "measure"]

#: what ``measure`` prints, and exits 0 with, on a machine without CUDA
NO_CUDA = "CUDA is not available here: the GPU check is skipped (nothing was measured)"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device, min_time_s: float, repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` timings of enough calls to last ``min_time_s``."""
    import statistics

    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t
    steps = max(1, math.ceil(min_time_s / max(first, 1e-6)))
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        times.append((time.perf_counter() - t) / steps)
    return statistics.median(times)


def _peak_mem(device) -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _reset_mem(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _images(cfg, batch: int, size, device, gen):
    import torch

    return torch.randn(batch, cfg.in_chans, size.rows, size.cols, generator=gen).to(device)


def _measure_eager(spec, label: str, device, amp, num_classes: int, *, min_time_s: float,
                   repeats: int) -> dict[str, Any]:
    """One encoding at the spec's model, training size and batch: the training step and the evaluations."""
    import torch

    from harness.bench.flops import count_flops
    from harness.models.vit import build_model
    from harness.schema import Size
    from harness.training.step import TrainStep, autocast

    enc = spec.encoding(label)
    res = spec.train_resolutions[0]
    cfg = spec.model_config(res, 3, num_classes)
    recipe = dataclasses.replace(spec.train, compile=False)
    gen = torch.Generator().manual_seed(0)
    x = _images(cfg, recipe.batch_size, Size(res, res), device, gen)
    y = torch.randint(0, num_classes, (recipe.batch_size,), generator=gen).to(device)
    _reset_mem(device)
    torch.manual_seed(0)
    model = build_model(cfg, enc.name, enc.options).to(device)
    step = TrainStep(model, recipe, device, amp)
    model.train()
    for _ in range(3):
        step(x, y, recipe.lr)
    step_s = _timed(lambda: step(x, y, recipe.lr), device, min_time_s, repeats)
    train_mem = _peak_mem(device)
    flops, _ = count_flops(lambda: step(x, y, recipe.lr))
    out: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                           "train": {"step_s": step_s, "images_per_s": recipe.batch_size / step_s,
                                     "flops_per_step": flops, "peak_mem_bytes": train_mem}, "eval": {}}
    del step
    model.eval()
    sizes = dict.fromkeys([Size(res, res), *spec.test_resolutions, *spec.canvas_resolutions])
    eb = recipe.eval_batch_size
    for size in sizes:
        xe = _images(cfg, eb, size, device, gen)
        _reset_mem(device)

        def fwd(xe=xe):
            with torch.no_grad(), autocast(device, amp):
                model(xe)

        s = _timed(fwd, device, min_time_s / 2, max(1, repeats - 1))
        out["eval"][size.label] = {"s_per_image": s / eb, "images_per_s": eb / s, "peak_mem_bytes": _peak_mem(device)}
        del xe
    del model
    _reset_mem(device)
    return out


def _measure_compiled(spec, label: str, device, amp, num_classes: int, *, eager_step_s: float, min_time_s: float,
                      repeats: int) -> dict[str, Any]:
    """The same training step under ``torch.compile``: its time, and how long compiling took."""
    import torch

    from harness.models.vit import build_model
    from harness.schema import Size
    from harness.training.step import TrainStep

    enc = spec.encoding(label)
    res = spec.train_resolutions[0]
    cfg = spec.model_config(res, 3, num_classes)
    recipe = dataclasses.replace(spec.train, compile=True)
    gen = torch.Generator().manual_seed(0)
    x = _images(cfg, recipe.batch_size, Size(res, res), device, gen)
    y = torch.randint(0, num_classes, (recipe.batch_size,), generator=gen).to(device)
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(cfg, enc.name, enc.options).to(device)
    step = TrainStep(model, recipe, device, amp)
    model.train()
    _sync(device)
    t = time.perf_counter()
    for _ in range(3):  # the first call compiles (forward and backward)
        step(x, y, recipe.lr)
    _sync(device)
    first3 = time.perf_counter() - t
    step_s = _timed(lambda: step(x, y, recipe.lr), device, min_time_s, repeats)
    del step, model
    _reset_mem(device)
    return {"step_s": step_s, "images_per_s": recipe.batch_size / step_s, "compile_s": max(0.0, first3 - 3 * step_s),
            "compiled_over_eager_time": step_s / eager_step_s if eager_step_s > 0 else None}


def _train_cell(spec, label: str, compile_: bool, device_name: str) -> dict[str, Any]:
    """Train one cell of ``spec`` (already shortened) with ``train.compile`` = ``compile_``."""
    import torch

    from harness.models.vit import build_model
    from harness.training.train import train_model
    from harness.study.trial import dataset_of

    data = dataset_of(spec, cache=False)  # a benchmark leaves nothing in the study's folder
    res = spec.train_resolutions[0]
    enc = spec.encoding(label)
    cfg = spec.model_config(res, data.in_chans, data.num_classes)
    recipe = dataclasses.replace(spec.train, compile=compile_, device=device_name)
    torch._dynamo.reset()
    torch.manual_seed(spec.seeds[0])
    model = build_model(cfg, enc.name, enc.options)
    t = time.perf_counter()
    r = train_model(model, data, recipe, train_resolution=res, test_resolutions=(), seed=spec.seeds[0], progress=False)
    return {"compile": compile_, "val_acc": r.history[-1]["val/acc"], "val_loss": r.history[-1]["val/loss"],
            "train_loss": [h["train/loss"] for h in r.history], "images_per_s": r.images_per_s,
            "wall_s": time.perf_counter() - t, "chance": 1.0 / data.num_classes, "num_val": spec.dataset.options.num_val}


def _projection(spec, encodings: dict[str, Any], step_key: str = "eager") -> dict[str, Any]:
    """Each encoding's cell time and the whole study's wall time, from the measured figures."""
    from harness.devices import resolve_workers
    from harness.encodings import ENCODINGS
    from harness.schema import Size

    res = spec.train_resolutions[0]
    o = spec.dataset.options
    cells = {}
    for label, d in encodings.items():
        step_s = d["train"]["step_s"] if step_key == "eager" else (d.get("compiled") or {}).get("step_s")
        if step_s is None:
            return {}
        cls = ENCODINGS.get(spec.encoding(label).name)
        own = cls.describe().policies
        policies = len([p for p in spec.policies if p in own]) if len(own) > 1 else 1
        evals = study_evaluations(spec.regimes, {r: [s.label for s in spec.sizes(r)] for r in spec.regimes},
                                  policies, len(spec.temperatures))
        cells[label] = {"cell_s": cell_seconds(
            epochs=spec.train.epochs, num_train=o.num_train, batch_size=spec.train.batch_size, step_s=step_s,
            num_val=o.num_val, num_test=o.num_test,
            eval_s_per_image={k: v["s_per_image"] for k, v in d["eval"].items()}, train_size=Size(res, res).label,
            test_evaluations=evals)}
    workers = resolve_workers(spec.workers, train_device=spec.train.device, cells=len(spec.cells()))
    return {"per_encoding_cell_s": {k: v["cell_s"] for k, v in cells.items()},
            **project_study(cells, len(spec.seeds), workers)}


def measure(args: argparse.Namespace) -> int:
    import torch

    from harness.bench import timing
    from harness.spec import load_spec
    from harness.training.step import prepare_device, resolve_device

    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    t0 = time.perf_counter()
    deadline = t0 + args.budget_s
    say = lambda msg: print(f"gpu_check: {time.perf_counter() - t0:6.1f}s {msg}", file=sys.stderr, flush=True)  # noqa: E731
    device = resolve_device(args.device, option="--device")
    amp = prepare_device(device)
    spec = load_spec(args.spec, list(args.set))
    from harness.study.trial import dataset_of

    num_classes = dataset_of(spec, cache=False).num_classes  # the rendered data: scenes sampled, nothing rendered
    labels = args.encodings or [e.label for e in spec.encodings]
    result: dict[str, Any] = {
        "schema": "harness-gpu-check/1", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": str(args.spec), "overrides": list(args.set), "device": device.type,
        "device_info": timing.device_description(device), "torch": torch.__version__,
        "autocast": "bfloat16" if amp is not None else None, "train_resolution": spec.train_resolutions[0],
        "batch_size": spec.train.batch_size, "eval_batch_size": spec.train.eval_batch_size,
        "model": dataclasses.asdict(spec.model), "load_average_before": timing.loadavg(), "notes": [],
        "encodings": {},
    }

    def save() -> None:
        if args.json:
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")

    say(f"matmul peak ({'bf16' if amp else 'float32'}) on {device}")
    result["matmul_peak"] = timing.matmul_peak(device, args.repeats, args.min_time_s)
    peak = result["matmul_peak"]["flops_per_s"]
    failed = False
    # 1. every encoding, eager: what the projection needs
    for label in labels:
        if time.perf_counter() > deadline:
            result["notes"].append(f"budget spent: {label} and later encodings not measured eager")
            break
        say(f"{label}: eager training step and evaluations")
        try:
            d = _measure_eager(spec, label, device, amp, num_classes, min_time_s=args.min_time_s,
                               repeats=args.repeats)
        except Exception as exc:  # noqa: BLE001 - one encoding's failure is reported, the others measured
            result["encodings"][label] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            failed = True
            continue
        d["train"]["mfu"] = mfu(d["train"]["flops_per_step"], d["train"]["step_s"], peak)
        result["encodings"][label] = d
        save()
    ok = {k: v for k, v in result["encodings"].items() if "train" in v}
    if "none" in ok:
        for d in ok.values():
            d["train"]["time_over_none"] = d["train"]["step_s"] / ok["none"]["train"]["step_s"]
    if len(ok) == len(spec.encodings):
        result["projection_eager"] = _projection(spec, ok)
    else:
        result["notes"].append("projection needs every encoding of the spec measured: not made")
    save()
    # 2. one cell, compile off and on
    if args.cell_encoding and time.perf_counter() < deadline:
        short = load_spec(args.spec, [*args.set, f"dataset.num_train={args.cell_train}",
                                      f"train.epochs={args.cell_epochs}",
                                      f"train.warmup_epochs={min(spec.train.warmup_epochs, args.cell_epochs / 3):g}"])
        runs = {}
        for compile_ in (False, True):
            say(f"cell {args.cell_encoding}: {args.cell_train} images, {args.cell_epochs} epochs, compile {compile_}")
            try:
                runs[compile_] = _train_cell(short, args.cell_encoding, compile_, device.type)
            except Exception as exc:  # noqa: BLE001
                runs[compile_] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                failed = True
        cell: dict[str, Any] = {"encoding": args.cell_encoding, "num_train": args.cell_train,
                                "epochs": args.cell_epochs, "eager": runs[False], "compiled": runs[True]}
        if "val_acc" in runs[False] and "val_acc" in runs[True]:
            cell["comparison"] = compare_accuracy(runs[False]["val_acc"], runs[True]["val_acc"],
                                                  chance=runs[False]["chance"], n=runs[False]["num_val"])
            failed |= cell["comparison"]["verdict"] == "FAIL"
        result["compile_cell"] = cell
        save()
    # 3. compiled training steps, while the budget lasts
    # the cell's encoding first (its compiled graph is in Inductor's cache by now), then none, then
    # the rotary encodings (whose compiled path differs from the eager one), then the others
    first = [args.cell_encoding, "none", "rope_axial", "rope_mixed", "string", "rope_dinov3", "rope1d", "rope_golden"]
    order = sorted((k for k in labels if k in ok), key=lambda k: first.index(k) if k in first else len(first))
    for label in order[: args.compile_encodings]:
        if time.perf_counter() > deadline:
            result["notes"].append(f"budget spent: {label} and later encodings not measured compiled")
            break
        say(f"{label}: compiled training step")
        try:
            ok[label]["compiled"] = _measure_compiled(spec, label, device, amp, num_classes,
                                                      eager_step_s=ok[label]["train"]["step_s"],
                                                      min_time_s=args.min_time_s, repeats=args.repeats)
        except Exception as exc:  # noqa: BLE001
            ok[label]["compiled"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            failed = True
        save()
    if ok and all("step_s" in (d.get("compiled") or {}) for d in ok.values()) and len(ok) == len(spec.encodings):
        result["projection_compiled"] = _projection(spec, ok, "compiled")
    result["load_average_after"] = timing.loadavg()
    result["elapsed_s"] = time.perf_counter() - t0
    result["failed"] = failed
    save()
    say(f"done in {result['elapsed_s']:.0f}s")
    return 1 if failed else 0
