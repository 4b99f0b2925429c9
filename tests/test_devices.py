"""Worker device assignment (harness.devices), tested with fake device lists: no CUDA needed."""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.devices import (
    assign_devices,
    auto_workers,
    parse_visible,
    pin_gpu,
    pin_visible_index,
    resolve_workers,
    visible_gpus,
)
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ CUDA_VISIBLE_DEVICES
@pytest.mark.parametrize("value, expected", [
    ("2,3", ["2", "3"]),
    ("", []),
    ("GPU-8f1c2e3a-aaaa-bbbb-cccc-0123456789ab", ["GPU-8f1c2e3a-aaaa-bbbb-cccc-0123456789ab"]),
    (" 1 , 0 ", ["1", "0"]),
    ("0,1,-1,2", ["0", "1"]),  # CUDA stops at the first invalid entry
    ("-1", []),
    ("MIG-1234,MIG-5678", ["MIG-1234", "MIG-5678"]),
])
def test_parse_visible_reads_the_variable_as_cuda_does(value, expected):
    assert parse_visible(value) == expected


def test_visible_gpus_follows_the_variable_capped_by_the_device_count():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, lambda: 2) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, lambda: 1) == ["2"]  # one of them cannot be opened
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, lambda: 0) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-abc"}, lambda: 1) == ["GPU-abc"]
    assert visible_gpus({}, lambda: 4) == ["0", "1", "2", "3"]  # unset: every device torch counts
    assert visible_gpus({}, lambda: 0) == []  # a CPU machine
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}, lambda: 0) == []  # set, but no CUDA here


def test_visible_gpus_on_this_machine_matches_torch():
    import torch

    assert len(visible_gpus()) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


# ------------------------------------------------------------------------------ round robin
def test_assign_devices_round_robin():
    assert assign_devices(4, ["0", "1"]) == ["0", "1", "0", "1"]
    assert assign_devices(3, ["2", "3", "5"]) == ["2", "3", "5"]
    assert assign_devices(5, ["GPU-a", "GPU-b", "GPU-c"]) == ["GPU-a", "GPU-b", "GPU-c", "GPU-a", "GPU-b"]
    assert assign_devices(1, ["7"]) == ["7"]
    assert assign_devices(0, ["0", "1"]) == []
    # every GPU used as evenly as possible
    got = assign_devices(10, ["0", "1", "2", "3"])
    counts = sorted(got.count(g) for g in ["0", "1", "2", "3"])
    assert counts == [2, 2, 3, 3]


def test_assign_devices_without_gpus_leaves_every_worker_on_the_cpu():
    assert assign_devices(3, []) == [None, None, None]
    with pytest.raises(HarnessError):
        assign_devices(-1, ["0"])


# ------------------------------------------------------------------------------ --workers auto
def test_auto_workers_one_per_gpu_on_a_gpu_machine():
    assert auto_workers(["0", "1", "2", "3"], cpus=64) == 4
    assert auto_workers(["GPU-x"], cpus=2) == 1
    assert auto_workers(["0", "1", "2", "3"], cpus=64, cells=3) == 3  # no worker without a cell
    # a recipe on the CPU ignores the GPUs: one single-thread worker per core
    assert auto_workers(["0", "1"], cpus=16, use_gpu=False) == 16


def test_auto_workers_one_single_thread_worker_per_core_on_a_cpu_machine():
    assert auto_workers([], cpus=2) == 2  # measured on the 2-core machine: 2 x 1 thread beats 1 x 2 threads
    assert auto_workers([], cpus=1) == 1
    assert auto_workers([], cpus=0) == 1
    assert auto_workers([], cpus=16, cells=6) == 6
    assert auto_workers([], cpus=2, cells=0) == 1


def test_resolve_workers():
    assert resolve_workers(3) == 3 and resolve_workers(0) == 0
    assert resolve_workers("auto", visible=["0", "1"], cpus=8) == 2
    assert resolve_workers("auto", visible=[], cpus=2) == 2
    assert resolve_workers("auto", train_device="cpu", visible=["0", "1"], cpus=4) == 4
    assert resolve_workers("auto", visible=["0", "1", "2"], cpus=8, cells=2) == 2
    for bad in (-1, "two", True, 1.5):
        with pytest.raises(HarnessError):
            resolve_workers(bad)


def test_pin_gpu_sets_the_variable_the_child_reads():
    env: dict[str, str] = {"CUDA_VISIBLE_DEVICES": "2,3"}
    pin_gpu("3", env)
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    env = {}
    pin_gpu("GPU-abc", env)
    assert env == {"CUDA_VISIBLE_DEVICES": "GPU-abc"}
    pin_gpu(None, env)  # the CPU: nothing changes
    assert env == {"CUDA_VISIBLE_DEVICES": "GPU-abc"}


def test_spawned_worker_gets_its_device_before_cuda_starts(tmp_path, monkeypatch):
    """run_study's worker entry point pins the GPU in the child: the child's environment shows it."""
    script = (
        "import os, sys\n"
        "import harness.worker as w\n"
        "w.run_worker = lambda *a, **k: print('CVD=' + os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'))\n"
        "w.worker_main('spec', [], False, 1, sys.argv[1] if sys.argv[1] != 'none' else None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    for gpu, expected in (("GPU-abc", "CVD=GPU-abc"), ("none", "CVD=<unset>")):
        out = subprocess.run([sys.executable, "-c", script, gpu], capture_output=True, text=True, cwd=ROOT, env=env,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert expected in out.stdout


# ------------------------------------------------------------------------------ the CLI
def test_cli_parses_workers_auto_and_gpu():
    from harness.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "s.yaml", "--workers", "auto"]).workers == "auto"
    assert parser.parse_args(["run", "s.yaml", "--workers", "0"]).workers == 0
    assert parser.parse_args(["run", "s.yaml", "--workers", "3"]).workers == 3
    assert parser.parse_args(["worker", "s.yaml", "--storage", "sqlite:///x", "--gpu", "1"]).gpu == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "s.yaml", "--workers", "many"])


def test_pin_visible_index_counts_in_the_visible_order():
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert pin_visible_index(1, env) == "3" and env["CUDA_VISIBLE_DEVICES"] == "3"
    env = {"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"}
    assert pin_visible_index(0, env) == "GPU-a" and env["CUDA_VISIBLE_DEVICES"] == "GPU-a"
    env = {}
    assert pin_visible_index(1, env) == "1" and env == {"CUDA_VISIBLE_DEVICES": "1"}
    for bad_env, k in (({"CUDA_VISIBLE_DEVICES": "2,3"}, 2), ({"CUDA_VISIBLE_DEVICES": ""}, 0), ({}, -1)):
        before = dict(bad_env)
        with pytest.raises(HarnessError, match="--gpu"):
            pin_visible_index(k, bad_env)
        assert bad_env == before  # nothing changed


def test_cli_worker_gpu_without_cuda_is_a_user_error():
    """In a child process: --gpu sets CUDA_VISIBLE_DEVICES, which must not leak into this one."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    import torch

    if torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""  # a GPU machine: hide them, --gpu 0 then names no GPU
    out = subprocess.run([sys.executable, "-m", "harness", "worker", "studies/smoke.yaml", "--storage",
                          "sqlite:////nonexistent/x.db", "--gpu", "0"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120)
    assert out.returncode == 2
    assert "--gpu 0" in out.stderr and ("no CUDA GPU" in out.stderr or "hides every GPU" in out.stderr)


def test_spec_workers_auto_validates(tmp_path):
    from harness.spec import SpecError, load_spec

    spec = load_spec(ROOT / "studies/smoke.yaml", ["workers=auto"])
    assert spec.workers == "auto"
    with pytest.raises(SpecError, match="workers"):
        load_spec(ROOT / "studies/smoke.yaml", ["workers=automatic"])


# ------------------------------------------------------------------------------ rendered_gpu.yaml
def test_rendered_gpu_study_is_gpu_scale():
    from harness.spec import load_spec

    spec = load_spec(ROOT / "studies/rendered_gpu.yaml", [])
    assert spec.dataset.name == "rendered" and spec.dataset.options.num_train == 50_000
    assert spec.train_resolutions == (64,)
    sides = [s.rows for s in spec.test_resolutions] + [s.cols for s in spec.test_resolutions]
    assert min(sides) == 32 and max(sides) == 128
    assert set(spec.regimes) == {"zoom", "canvas"}
    assert spec.seeds == (0, 1, 2)
    assert spec.train.device == "auto" and spec.workers == "auto"
    # ViT-S (DeiT-S): dim 384, 12 layers, 6 heads: about 21-22 M parameters in the blocks
    m = spec.model
    assert (m.dim, m.depth, m.heads, m.mlp_ratio) == (384, 12, 6, 4.0)
    from harness.encodings import ENCODINGS

    builtin = {n for n, _ in ENCODINGS.items() if ENCODINGS.source(n) == "built-in"}
    names = {e.name for e in spec.encodings}
    main = load_spec(ROOT / "studies/resolution_extrapolation.yaml", [])
    assert names == {e.name for e in main.encodings} == builtin and len(names) == 14
    assert len(spec.cells()) == 14 * 3


def test_rendered_gpu_study_is_created_and_queued_with_workers_0(tmp_path):
    """`harness run studies/rendered_gpu.yaml --workers 0` creates the study and queues its 42
    cells, training nothing (the scenes are sampled, no image is rendered)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "harness", "run", "studies/rendered_gpu.yaml", "--workers", "0",
                          "--set", f"output={tmp_path}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    took = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert "created with its cells queued" in out.stdout
    run_dir = tmp_path / "rendered_gpu"
    # the command a worker joins with: the same spec, overrides and storage (it said `--storage URL`)
    join = shlex.join(["studies/rendered_gpu.yaml", f"output={tmp_path}", "--storage",
                       f"sqlite:///{run_dir / 'optuna.db'}"])
    assert f"start workers with `harness worker {join}`" in out.stdout, out.stdout
    assert (run_dir / "optuna.db").is_file() and (run_dir / "mlflow.db").is_file()
    with sqlite3.connect(run_dir / "optuna.db") as db:
        waiting = db.execute("SELECT COUNT(*) FROM trials WHERE state = 'WAITING'").fetchone()[0]
        other = db.execute("SELECT COUNT(*) FROM trials WHERE state != 'WAITING'").fetchone()[0]
    assert (waiting, other) == (42, 0)
    assert took < 60, f"creating the study took {took:.1f}s"
