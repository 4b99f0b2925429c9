"""What several test files share: the smoke spec, and running ``harness`` as a process or in
this process (the same code as the command, without its start-up: for the many one-line
error checks, where a process start is most of the cost)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.tracking import HTTP_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
TINY = ["--set", "encodings=[none]", "--set", "seeds=[0]", "--set", "train.epochs=1", "--set", "test_resolutions=[16]"]


def harness(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def cli(cwd: Path, capsys, monkeypatch, *args: str) -> subprocess.CompletedProcess:
    """``harness ARGS`` in this process (the same code as the command, without its start-up),
    in ``cwd``; MLflow's environment is restored afterwards (monkeypatch)."""
    from harness.cli import main

    for key in (*HTTP_DEFAULTS, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, os.environ[key]) if key in os.environ else monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])
