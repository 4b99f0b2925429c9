"""bench/gpu_check.sh and harness.bench.gpu_check: the arithmetic by hand, the no-CUDA path, and
(slow) the whole measurement path on the CPU with a tiny spec."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench.gpu_check import (
    NO_CUDA,
    cell_seconds,
    compare_accuracy,
    format_summary,
    main,
    mfu,
    project_study,
    study_evaluations,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ arithmetic
def test_mfu():
    # 1 TFLOP per step in 10 ms is 100 TFLOP/s: a tenth of a 1 PFLOP/s peak
    assert mfu(1e12, 0.01, 1e15) == pytest.approx(0.1)
    assert mfu(3e9, 0.5, 12e9) == pytest.approx(0.5)
    assert mfu(1e12, 0.0, 1e15) is None and mfu(1e12, 0.01, 0.0) is None


def test_cell_seconds_by_hand():
    # 2 epochs of 1000 // 256 = 3 steps of 0.1 s; validation 2 x 100 images at 1 ms; test 50 images
    # 4 times at 64 px (1 ms each) and 4 times at 128 px (4 ms each)
    got = cell_seconds(epochs=2, num_train=1000, batch_size=256, step_s=0.1, num_val=100, num_test=50,
                       eval_s_per_image={"64": 0.001, "128": 0.004}, train_size="64",
                       test_evaluations={"64": 4, "128": 4})
    assert got == pytest.approx(0.6 + 0.2 + 0.2 + 0.8)


def test_study_evaluations_count_every_variant_of_every_regime():
    from harness.encodings import ENCODINGS
    from harness.spec import load_spec
    from harness.trial import variants_of

    spec = load_spec(ROOT / "studies/rendered_gpu.yaml", [])
    for name in ("none", "rope_axial", "learned", "cpe"):
        cls = ENCODINGS.get(name)
        own = cls.describe().policies
        policies = len([p for p in spec.policies if p in own]) if len(own) > 1 else 1
        sizes = {r: [s.label for s in spec.sizes(r)] for r in spec.regimes}
        evals = study_evaluations(spec.regimes, sizes, policies, len(spec.temperatures))
        # the reference: the trainer's own list of variants, each tested at every size of its regime
        expected: dict[str, int] = {}
        for v in variants_of(spec, cls):
            for s in spec.sizes(v.regime):
                expected[s.label] = expected.get(s.label, 0) + 1
        assert evals == expected, name
    # rendered_gpu: 64 px is tested in both regimes, 32 and 48 px only zoomed
    assert evals["64"] == 2 * evals["32"]


def test_project_study_by_hand():
    cells = {"a": {"cell_s": 10.0}, "b": {"cell_s": 5.0}}
    one = project_study(cells, seeds=2, workers=1)
    assert (one["cells"], one["wall_s"], one["total_cell_s"]) == (4, 30.0, 30.0)
    two = project_study(cells, seeds=2, workers=2)  # 10 + 5 on each GPU
    assert two["wall_s"] == 15.0 and two["lower_bound_s"] == 15.0
    three = project_study(cells, seeds=2, workers=3)  # 10 | 10 | 5 + 5
    assert three["wall_s"] == 10.0
    many = project_study(cells, seeds=1, workers=8)  # never below the longest cell
    assert many["wall_s"] == 10.0 and many["lower_bound_s"] == 10.0


def test_compare_accuracy():
    ok = compare_accuracy(0.80, 0.79, chance=0.125, n=2000)
    assert ok["verdict"] == "PASS"
    # 3 sigma of a difference of two proportions near 0.8 over 2000 images each
    assert ok["tolerance"] == pytest.approx(max(0.03, 3 * math.sqrt(2 * 0.795 * 0.205 / 2000)))
    assert compare_accuracy(0.80, 0.70, chance=0.125, n=2000)["verdict"] == "FAIL"
    assert compare_accuracy(0.13, 0.12, chance=0.125, n=2000)["verdict"] == "INCONCLUSIVE"
    assert compare_accuracy(0.13, 0.60, chance=0.125, n=2000)["verdict"] == "FAIL"
    small = compare_accuracy(0.5, 0.6, chance=0.25, n=64)  # few images: a wide tolerance
    assert small["tolerance"] > 0.2 and small["verdict"] == "PASS"


def test_format_summary_of_a_handmade_result():
    res = {
        "date": "2026-11-29T10:00:00+00:00", "device": "cuda", "device_info": {"name": "NVIDIA H200"},
        "torch": "2.x", "autocast": "bfloat16", "spec": "studies/rendered_gpu.yaml", "overrides": [],
        "model": {"dim": 384, "depth": 12, "heads": 6}, "train_resolution": 64, "batch_size": 256,
        "eval_batch_size": 512, "matmul_peak": {"dtype": "bfloat16", "flops_per_s": 7.5e14, "size": 8192},
        "encodings": {
            "none": {"train": {"images_per_s": 10000.0, "step_s": 0.0256, "time_over_none": 1.0, "mfu": 0.4,
                               "peak_mem_bytes": 3 * 2**30},
                     "eval": {"64": {"images_per_s": 40000.0, "peak_mem_bytes": 2**30},
                              "128": {"images_per_s": 9000.0, "peak_mem_bytes": 5 * 2**30}},
                     "compiled": {"images_per_s": 12500.0, "compiled_over_eager_time": 0.8, "compile_s": 41.0}},
            "cpb": {"error": "RuntimeError: boom"},
        },
        "projection_eager": {"per_encoding_cell_s": {"none": 300.0}, "wall_s": 3 * 3600 + 60, "cells": 42,
                             "workers": 1, "total_cell_s": 3 * 3600 + 60},
        "compile_cell": {"encoding": "rope_axial", "num_train": 20000, "epochs": 4, "eager": {"wall_s": 30},
                         "compiled": {"wall_s": 80},
                         "comparison": compare_accuracy(0.6, 0.61, chance=0.125, n=2000)},
        "notes": ["a note"], "load_average_before": [0.1], "load_average_after": [0.5],
    }
    text = format_summary(res)
    assert "750.0 TFLOP/s" in text and "NVIDIA H200" in text
    row = next(line for line in text.splitlines() if line.startswith("none "))
    for cell in ("10,000", "40.0%", "3,072", "12,500", "0.800", "41", "9,000", "5,120", "5m00s"):
        assert cell in row, (cell, row)
    assert "eval img/s 128" in text  # the largest test size
    assert "cpb" in text and "RuntimeError: boom" in text
    assert "PASS" in text and "3h01m" in text and "note: a note" in text


# ------------------------------------------------------------------------------ without CUDA
def _no_cuda_env() -> dict[str, str]:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a GPU machine too takes the no-CUDA path


def test_gpu_check_sh_without_cuda_says_so_and_exits_0():
    out = subprocess.run(["bash", "bench/gpu_check.sh"], capture_output=True, text=True, cwd=ROOT,
                         env=_no_cuda_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CUDA is not available here" in out.stdout and "skipped" in out.stdout
    assert "===" not in out.stdout  # no stage started


def test_measure_without_cuda_says_so_and_exits_0():
    out = subprocess.run([sys.executable, "-m", "harness.bench.gpu_check", "measure"], capture_output=True,
                         text=True, cwd=ROOT, env=_no_cuda_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert NO_CUDA in out.stdout


# ------------------------------------------------------------------------------ the whole path, on the CPU
@pytest.mark.slow  # about a minute on 2 cores: every encoding of the smoke spec, a cell trained compiled
def test_measure_runs_end_to_end_on_the_cpu(tmp_path, capsys):
    path = tmp_path / "gc.json"
    rc = main(["measure", "--device", "cpu", "--spec", "studies/smoke.yaml", "--set", f"output={tmp_path}",
               "--cell-train", "128", "--cell-epochs", "1", "--compile-encodings", "1", "--repeats", "1",
               "--min-time-s", "0.02", "--json", str(path)])
    assert rc == 0
    res = json.loads(path.read_text())
    assert set(res["encodings"]) == {"none", "rope_axial", "alibi2d"}
    for d in res["encodings"].values():
        t = d["train"]
        assert t["images_per_s"] == pytest.approx(64 / t["step_s"])
        assert t["mfu"] == pytest.approx(t["flops_per_step"] / t["step_s"] / res["matmul_peak"]["flops_per_s"])
        assert set(d["eval"]) == {"8", "16", "24"}
    assert res["encodings"]["none"]["train"]["time_over_none"] == 1.0
    # --compile-encodings 1: the cell's encoding (rope_axial) is compiled first, no other
    c = res["encodings"]["rope_axial"]["compiled"]
    assert c["images_per_s"] == pytest.approx(64 / c["step_s"]) and c["compile_s"] >= 0
    assert c["compiled_over_eager_time"] == pytest.approx(c["step_s"] / res["encodings"]["rope_axial"]["train"]["step_s"])
    assert "compiled" not in res["encodings"]["none"] and "compiled" not in res["encodings"]["alibi2d"]
    p = res["projection_eager"]
    assert p["cells"] == 3 * 2 and set(p["per_encoding_cell_s"]) == {"none", "rope_axial", "alibi2d"}
    assert p["total_cell_s"] == pytest.approx(2 * sum(p["per_encoding_cell_s"].values()))
    cell = res["compile_cell"]
    assert cell["comparison"]["verdict"] in ("PASS", "INCONCLUSIVE")
    assert main(["summary", "--json", str(path)]) == 0
    assert "projected wall time of the whole study" in capsys.readouterr().out
