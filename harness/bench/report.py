"""The plain-text tables of a benchmark result (the training table last)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.config import ViTConfig

__all__ = ["format_report"]


def format_report(res: dict[str, Any]) -> str:
    """The plain-text tables of a :func:`run_bench` result (the training table last)."""
    m, dev = res["model"], res["device_info"]
    g = ViTConfig.from_dict(m).grid_size(m["image_size"])
    peak = res["matmul_peak"]
    threads = res.get("thread_counts") or [res["threads"]]
    model = f"preset {res['preset'] or '-'}" + (f", the model of {res['spec']}" if res.get("spec") else "")
    lines = [
        f"harness bench  {res['date']}  {model} ({m['image_size']} px, {g}x{g} grid, dim {m['dim']}, "
        f"depth {m['depth']}, heads {m['heads']}, mlp {m['mlp_ratio']:g})  batch {res['batch_size']}  "
        f"{m['num_classes']} classes",
        f"device {res['device']}: {dev['name']} ({dev.get('cpu_count')} CPUs)  threads {'/'.join(map(str, threads))}  "
        f"torch {res['torch']}  timm {res['timm'] or '-'}  autocast {res['autocast'] or 'none (float32)'}",
    ]
    for t, p in (res.get("matmul_peaks") or {str(res["threads"]): peak}).items():
        lines.append(
            f"matmul peak, {t} thread{'s' if t != '1' else ''}: {p['flops_per_s'] / 1e9:.1f} GFLOP/s ({p['dtype']}, "
            f"n={p['size']}, median of {p['repeats']}; the better of {p['start_flops_per_s'] / 1e9:.1f} before the "
            f"models and {p['end_flops_per_s'] / 1e9:.1f} after)")
    fm = res["flop_model"]
    lines.append(
        f"FLOP model, none, one training step: analytic {fm['analytic']['train_step'] / 1e9:.3f} GFLOP "
        f"(3 x forward), FlopCounterMode {fm['counted_none_train_step'] / 1e9:.3f} GFLOP "
        f"(counted/analytic {fm['counted_over_analytic']:.3f})")
    lines.append(f"memory: {res['memory_method']}")
    la, lb = res.get("load_average_before"), res.get("load_average_after")
    if la and lb:
        lines.append(f"load average (1 min) before / after the run: {la[0]:.2f} / {lb[0]:.2f} "
                     f"(the run adds about its {max(threads)} threads; others' load slows and blurs the figures)")
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
    if len(threads) > 1:
        lines += [""] + _threads_table(res, threads)
    if res.get("cell_eval"):
        lines += [""] + _cell_eval_table(res, threads)
    if "train" in t:
        r = t["learned_over_timm_images_per_s"]
        scope = "" if t["target_applies"] else " (the target is set for the CPU with preset small)"
        lines.append(f"learned / timm ViT training images/s: {_r(r)} (target >= {t['target']:.2f}): "
                     f"{t['verdict'] or '-'}{scope}")
    else:
        lines.append(f"timm ViT: {t.get('skipped')}")
    return "\n".join(lines)


def _threads_table(res: dict[str, Any], threads: list[int]) -> list[str]:
    """The training step at each thread count: images/s and MFU against that count's peak."""
    lines = [f"training step at {res['train_resolution']} px by thread count (MFU against the matmul peak of "
             f"the same count; speed-up = images/s / images/s at {threads[0]} thread{'s' if threads[0] != 1 else ''})"]
    header = ["encoding"]
    for t in threads:
        header += [f"{t} thr img/s", "range", "GFLOP/s", "MFU"] + (["speed-up"] if t != threads[0] else [])
    rows = []
    for name, d in res["encodings"].items():
        row, first = [name], d["by_threads"][str(threads[0])]["train"]["images_per_s"]
        for t in threads:
            tr = d["by_threads"][str(t)]["train"]
            row += [f"{tr['images_per_s']:.1f}", f"{tr['range'] * 100:.0f}%", f"{tr['flops_per_s'] / 1e9:.1f}",
                    _pct(tr["mfu"])] + ([_r(tr["images_per_s"] / first, 2)] if t != threads[0] else [])
        rows.append(row)
    return lines + _fmt_table(header, rows)


def _cell_eval_table(res: dict[str, Any], threads: list[int]) -> list[str]:
    """One cell's evaluation path: one variant on the test split at each size, and the sweep."""
    c = res["cell_eval"]
    sizes = " ".join(f"{r} {','.join(s)};" for r, s in c["sizes"].items()).rstrip(";")
    lines = [
        f"evaluation of one cell of {c['study']} ({c['test_images']} test images, eval batch {c['eval_batch_size']}; "
        f"sizes: {sizes}; policies {', '.join(c['policies'])}; temperatures {', '.join(c['temperatures'])})",
        f"test splits rendered once per process (as a study's worker does for its first cell): {c['render_s']:.1f} s; "
        f"one variant: the first, median of {res['repeats']}; sweep: median of {res['sweep_repeats']}",
    ]
    header = ["encoding", "threads", "variants"]
    for s in c["single_sizes"]:
        header += [f"{s} px s", "img/s", "MFU"]
    header += ["sweep evals", "images", "sweep s", "img/s", "sweep/none"]
    rows = []
    ref = res["encodings"].get("none", {}).get("by_threads", {})
    for name, d in res["encodings"].items():
        for t in threads:
            at = d["by_threads"][str(t)]
            sw = at["sweep"]
            row = [name, str(t), str(len(sw["variants"]))]
            for s in c["single_sizes"]:
                one = at["eval_one_variant"][s]
                row += [f"{one['step_s']:.3f}", f"{one['images_per_s']:.0f}", _pct(one["mfu"])]
            ref_sw = ref.get(str(t), {}).get("sweep")
            row += [str(sw["evaluations"]), str(sw["images"]), f"{sw['seconds']:.2f}", f"{sw['images_per_s']:.0f}",
                    _r(sw["seconds"] / ref_sw["seconds"], 2) if ref_sw else "-"]
            rows.append(row)
    return lines + _fmt_table(header, rows, left=1)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


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
