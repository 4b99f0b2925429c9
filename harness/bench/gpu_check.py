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

This module is the command line and the summary table; the measurements are
:mod:`harness.bench.gpu_measure`, the arithmetic :mod:`harness.bench.gpu_arithmetic`, and their
names are re-exported here (their home before the split).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.bench.gpu_arithmetic import (  # their home before the split
    ACC_TOLERANCE,
    TRAINED_MARGIN,
    cell_seconds,
    compare_accuracy,
    mfu,
    project_study,
    study_evaluations,
)
from harness.bench.gpu_measure import NO_CUDA, measure  # their home before the split

__all__ = ["NO_CUDA", "cell_seconds", "compare_accuracy", "format_summary", "main", "mfu", "project_study",
           "study_evaluations"]


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
