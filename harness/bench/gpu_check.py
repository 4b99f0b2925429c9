"""The GPU check's measurements (``bash bench/gpu_check.sh`` runs them): what the study of a spec
(default ``studies/rendered_gpu.yaml``) costs on this GPU, and whether ``train.compile`` trains the same.

``python -m harness.bench.gpu_check measure --json PATH`` measures, within ``--budget-s`` seconds:

1. the device's bf16 matmul peak (``harness.bench.timing.matmul_peak``: square matmuls, the best size);
2. for every encoding of the spec, at the spec's model and training resolution and batch, eager:
   the trainer's own training step (``TrainStep``: bf16 autocast, fused AdamW, clipping), its
   FLOPs (``FlopCounterMode``), MFU = FLOP/s / matmul peak, peak memory; and evaluation
   images/s at every test size at the spec's eval batch (for the projection);
3. one cell of the spec (``--cell-encoding``, default ``rope_axial``: a rotary encoding, whose
   compiled path differs) trained twice, ``train.compile`` off and on, on a shortened recipe
   (``--cell-train`` images, ``--cell-epochs`` epochs): validation accuracy of both and a
   verdict (:func:`compare_accuracy`);
4. while the budget lasts, every encoding's training step compiled (``torch.compile``): step
   time, the compile time (the first steps' time beyond the steady ones), compiled / eager.

and writes every number to the JSON, with the projected wall time of the whole study
(:func:`project_study`: every cell's training steps, per-epoch validation and its test
evaluations under every variant, from the measured step and evaluation times, spread over
one worker per GPU). ``summary --json PATH [--bench BENCH_JSON]`` prints one table of it, with
``harness bench``'s timm comparison when its JSON is given.

Without CUDA ``measure`` says so and exits 0 having measured nothing, unless ``--device cpu``
(the tests run the whole path on the CPU with a tiny spec). The arithmetic (:func:`mfu`,
:func:`cell_seconds`, :func:`project_study`, :func:`compare_accuracy`) is pure and tested.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["NO_CUDA", "cell_seconds", "compare_accuracy", "format_summary", "main", "mfu", "project_study",
           "study_evaluations"]

#: what ``measure`` prints, and exits 0 with, on a machine without CUDA
NO_CUDA = "CUDA is not available here: the GPU check is skipped (nothing was measured)"
#: least accuracy difference that counts as "not the same" whatever the sample size (absolute)
ACC_TOLERANCE = 0.03
#: above chance by at least this much: the run trained (otherwise the comparison says nothing)
TRAINED_MARGIN = 0.10


# ------------------------------------------------------------------------------ pure arithmetic
def mfu(flops_per_step: float, step_s: float, peak_flops_per_s: float) -> float | None:
    """Model FLOP utilisation: achieved FLOP/s (``flops_per_step / step_s``) over the peak; None
    when either time or peak is not positive."""
    if step_s <= 0 or peak_flops_per_s <= 0:
        return None
    return flops_per_step / step_s / peak_flops_per_s


def cell_seconds(*, epochs: int, num_train: int, batch_size: int, step_s: float, num_val: int, num_test: int,
                 eval_s_per_image: Mapping[str, float], train_size: str,
                 test_evaluations: Mapping[str, int]) -> float:
    """Seconds one cell takes: ``epochs`` x ``num_train // batch_size`` training steps (the last
    partial batch is dropped, as the trainer does), one validation pass per epoch at the
    training size, and ``test_evaluations[size]`` passes over the test split at each size (one
    per evaluation variant whose regime tests that size). Rendering the data and building the
    model are not counted (seconds, against hours)."""
    train = epochs * (num_train // batch_size) * step_s
    val = epochs * num_val * eval_s_per_image[train_size]
    test = sum(n * num_test * eval_s_per_image[size] for size, n in test_evaluations.items())
    return train + val + test


def study_evaluations(regimes: Sequence[str], sizes: Mapping[str, Sequence[str]], policies: int,
                      temperatures: int) -> dict[str, int]:
    """Test passes per size label of one cell: each regime's sizes, once per (policy, temperature)
    variant (``policies``: the study's policies the encoding has, 1 when it has no choice)."""
    out: Counter[str] = Counter()
    for r in regimes:
        for s in sizes[r]:
            out[s] += max(1, policies) * temperatures
    return dict(out)


def project_study(cells: Mapping[str, dict[str, Any]], seeds: int, workers: int) -> dict[str, Any]:
    """The study's wall time from each encoding's cell time (``cells[label]["cell_s"]``), ``seeds``
    cells per encoding, spread over ``workers`` (one per GPU). The cells are whole: the wall
    time is at least the longest cell, and at least the total over the workers; the greedy
    longest-first schedule (what the study's queue does when the slow cells come first) gives
    the figure."""
    durations = sorted((c["cell_s"] for c in cells.values() for _ in range(seeds)), reverse=True)
    loads = [0.0] * max(1, workers)
    for d in durations:
        i = loads.index(min(loads))
        loads[i] += d
    total = sum(durations)
    return {"cells": len(durations), "workers": max(1, workers), "total_cell_s": total, "wall_s": max(loads),
            "lower_bound_s": max(total / max(1, workers), durations[0] if durations else 0.0)}


def compare_accuracy(eager: float, compiled: float, *, chance: float, n: int) -> dict[str, Any]:
    """Whether two trainings that differ only in ``train.compile`` reach the same accuracy.

    The tolerance is the larger of ``ACC_TOLERANCE`` and 3 standard deviations of the difference
    of two binomial proportions of ``n`` images each (compiled kernels round differently, so
    the two runs part ways after a few steps, like two nearby seeds: a small gap is noise).
    PASS: within it and at least one run trained (``TRAINED_MARGIN`` above ``chance``);
    INCONCLUSIVE: neither trained (both near chance: equal, but it says nothing); FAIL otherwise."""
    p = min(max((eager + compiled) / 2, 1e-6), 1 - 1e-6)
    tol = max(ACC_TOLERANCE, 3 * math.sqrt(2 * p * (1 - p) / max(n, 1)))
    diff = compiled - eager
    trained = max(eager, compiled) >= chance + TRAINED_MARGIN
    verdict = "FAIL" if abs(diff) > tol else "PASS" if trained else "INCONCLUSIVE"
    return {"eager": eager, "compiled": compiled, "diff": diff, "tolerance": tol, "chance": chance,
            "trained": trained, "verdict": verdict}


# ------------------------------------------------------------------------------ measurement
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


# ------------------------------------------------------------------------------ the summary
def _flops(x: float) -> str:
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    h, rem = divmod(int(round(s)), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [header, *rows]]


def format_summary(res: dict[str, Any], bench: dict[str, Any] | None = None) -> str:
    """One table of a ``measure`` result (and the timm line of ``harness bench``'s JSON, if given)."""
    dev = res.get("device_info", {})
    peak = res.get("matmul_peak", {})
    m = res.get("model", {})
    lines = [f"gpu_check {res.get('date')}  {dev.get('name')} ({res.get('device')})  torch {res.get('torch')}  "
             f"autocast {res.get('autocast') or 'none'}",
             f"spec {' '.join([str(res.get('spec')), *res.get('overrides', [])])}: dim {m.get('dim')}, depth {m.get('depth')}, "
             f"heads {m.get('heads')}, train {res.get('train_resolution')} px, batch {res.get('batch_size')}, "
             f"eval batch {res.get('eval_batch_size')}",
             f"measured {peak.get('dtype')} matmul peak: {_flops(peak.get('flops_per_s', 0))} "
             f"(n={peak.get('size')}); MFU = counted training FLOP/s / this peak"]
    encs = res.get("encodings", {})
    sizes = []
    for d in encs.values():
        for s in d.get("eval", {}):
            if s not in sizes:
                sizes.append(s)
    area = lambda s: int(s.split("x")[0]) * int(s.split("x")[-1])  # noqa: E731 - "64" is 64x64
    big = max(sizes, key=area) if sizes else None
    header = ["encoding", "train img/s", "time/none", "MFU", "train MiB", "compiled img/s", "compiled/eager",
              "compile s", f"eval img/s {big}", f"eval MiB {big}", "cell"]
    per_cell = (res.get("projection_eager") or {}).get("per_encoding_cell_s", {})
    rows = []
    for name, d in encs.items():
        if "error" in d:
            rows.append([name, f"error: {d['error'][:60]}"] + [""] * (len(header) - 2))
            continue
        t, c = d["train"], d.get("compiled") or {}
        e = d["eval"].get(big, {}) if big else {}
        rows.append([
            name, f"{t['images_per_s']:,.0f}",
            "-" if t.get("time_over_none") is None else f"{t['time_over_none']:.3f}",
            "-" if t.get("mfu") is None else f"{t['mfu'] * 100:.1f}%", _mib(t.get("peak_mem_bytes")),
            f"{c['images_per_s']:,.0f}" if "images_per_s" in c else ("error" if "error" in c else "-"),
            f"{c['compiled_over_eager_time']:.3f}" if c.get("compiled_over_eager_time") else "-",
            f"{c['compile_s']:.0f}" if "compile_s" in c else "-",
            f"{e['images_per_s']:,.0f}" if e else "-", _mib(e.get("peak_mem_bytes")) if e else "-",
            _dur(per_cell.get(name)),
        ])
    lines += [""] + _table(header, rows)
    lines.append("(time/none: eager training-step time over none's; compiled/eager: step time ratio, < 1 is faster; "
                 "cell: projected time of one cell, eager)")
    cell = res.get("compile_cell")
    if cell:
        cmp_ = cell.get("comparison")
        if cmp_:
            lines.append(f"train.compile off/on, one cell ({cell['encoding']}, {cell['num_train']} images, "
                         f"{cell['epochs']} epochs): val acc {cmp_['eager']:.4f} / {cmp_['compiled']:.4f}, "
                         f"diff {cmp_['diff']:+.4f} (tolerance {cmp_['tolerance']:.4f}, chance {cmp_['chance']:.3f}): "
                         f"{cmp_['verdict']}; wall {cell['eager'].get('wall_s', 0):.0f}s / "
                         f"{cell['compiled'].get('wall_s', 0):.0f}s")
        else:
            lines.append(f"train.compile off/on, one cell: error: {cell['eager'].get('error') or cell['compiled'].get('error')}")
    for key, what in (("projection_eager", "eager"), ("projection_compiled", "train.compile: true")):
        p = res.get(key)
        if p:
            lines.append(f"projected wall time of the whole study ({what}): {_dur(p['wall_s'])} "
                         f"({p['cells']} cells on {p['workers']} worker(s); {_dur(p['total_cell_s'])} of cells)")
    if bench:
        t = bench.get("timm_vit", {})
        if "train" in t:
            lines.append(f"harness bench --preset {bench.get('preset')} ({bench.get('train_resolution')} px, batch "
                         f"{bench.get('batch_size')}): learned / timm ViT training images/s "
                         f"{t.get('learned_over_timm_images_per_s', float('nan')):.3f} "
                         f"(learned {bench['encodings'].get('learned', {}).get('train', {}).get('images_per_s', 0):,.0f}, "
                         f"timm {t['train']['images_per_s']:,.0f} img/s, timm MFU "
                         f"{(t['train'].get('mfu') or 0) * 100:.1f}%)")
        else:
            lines.append(f"harness bench: timm ViT: {t.get('skipped')}")
    for n in res.get("notes", []):
        lines.append(f"note: {n}")
    la, lb = res.get("load_average_before"), res.get("load_average_after")
    if la and lb:
        lines.append(f"load average (1 min) before / after: {la[0]:.2f} / {lb[0]:.2f}")
    return "\n".join(lines)


def summary(args: argparse.Namespace) -> int:
    path = Path(args.json)
    if not path.is_file():
        print(f"gpu_check summary: no result at {path}")
        return 1
    res = json.loads(path.read_text(encoding="utf-8"))
    bench = json.loads(Path(args.bench).read_text(encoding="utf-8")) if args.bench and Path(args.bench).is_file() \
        else None
    print(format_summary(res, bench))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.gpu_check", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("measure", help="measure the spec's encodings, one cell compile off/on, the projection")
    p.add_argument("--spec", default="studies/rendered_gpu.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec override (repeatable)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--encodings", nargs="+", metavar="LABEL", help="default: every encoding of the spec")
    p.add_argument("--budget-s", type=float, default=240.0, help="stop starting new measurements after this")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-time-s", type=float, default=0.3, help="least duration of one timing")
    p.add_argument("--cell-encoding", default="rope_axial", help="the cell trained compile off and on ('' skips)")
    p.add_argument("--cell-train", type=int, default=20000, help="training images of that cell")
    p.add_argument("--cell-epochs", type=int, default=4)
    p.add_argument("--compile-encodings", type=int, default=100, help="at most this many encodings timed compiled")
    p.add_argument("--json", help="write every number here")
    p.set_defaults(func=measure)
    p = sub.add_parser("summary", help="print the summary table of a measure result")
    p.add_argument("--json", required=True)
    p.add_argument("--bench", help="harness bench's JSON (for the timm comparison)")
    p.set_defaults(func=summary)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
