"""Scale-out inputs that can be wrong: one clear message, exit status 2, nothing written;
passwords never reach what is logged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.spec import load_spec, redact_url
from harness.tracking import flatten

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"


def harness(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize(
    "flag, url, expected",
    [
        ("--storage", "postgresql://alice:hunter2@127.0.0.1:1/harness", "Optuna storage postgresql://alice:***@"),
        ("--storage", "nosuchdb://alice:hunter2@localhost/x", "Optuna storage nosuchdb://alice:***@"),
        ("--tracking-uri", "http://alice:hunter2@127.0.0.1:1", "does not answer"),
    ],
)
def test_unreachable_or_unknown_stores(tmp_path, flag, url, expected):
    r = harness(tmp_path, "run", str(SMOKE), "--set", f"output={tmp_path / 'runs'}", flag, url)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "hunter2" not in r.stderr and "hunter2" not in r.stdout
    assert not (tmp_path / "runs").exists()


def test_output_folder_that_cannot_be_written(tmp_path):
    r = harness(tmp_path, "run", str(SMOKE), "--set", "output=/proc/harness-cannot-write-here")
    assert r.returncode == 2 and "cannot be written" in r.stderr and "Traceback" not in r.stderr


def test_worker_needs_an_existing_study(tmp_path):
    r = harness(tmp_path, "worker", str(SMOKE), "--storage", f"sqlite:///{tmp_path / 'empty.db'}")
    assert r.returncode == 2 and "create it with `harness run` first" in r.stderr


def test_passwords_never_reach_the_logged_config():
    spec = load_spec(SMOKE, ["storage=postgresql://alice:hunter2@db.example:5432/optuna",
                             "tracking_uri=http://bob:pa55@mlflow.example:5000"])
    assert spec.storage_url().endswith("hunter2@db.example:5432/optuna")  # what connects keeps it
    logged = flatten(spec.resolved)
    assert not any("hunter2" in v or "pa55" in v for v in logged.values())
    assert logged["storage"] == "postgresql://alice:***@db.example:5432/optuna"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_a_changed_spec_under_a_running_study_is_refused(tmp_path):
    out = tmp_path / "runs"
    r = harness(tmp_path, "run", str(SMOKE), "--set", f"output={out}", "--set", "train.epochs=1", "--no-report")
    assert r.returncode == 0, r.stderr[-2000:]
    r = harness(tmp_path, "run", str(SMOKE), "--set", f"output={out}", "--set", "train.epochs=3", "--no-report")
    assert r.returncode == 2 and "different spec" in r.stderr and "train" in r.stderr
