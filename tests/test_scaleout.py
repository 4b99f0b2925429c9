"""Scale-out inputs that can be wrong: one clear message, exit status 2, nothing written;
passwords never reach what is logged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.spec import load_spec, redact_url
from harness.tracking import flatten
from tests.helpers import cli, one_line_error

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
        # a database server that refuses: at once, before the Optuna storage is written (MLflow's
        # own client retried for about two minutes, and the study's optuna.db was left behind)
        ("--tracking-uri", "postgresql://alice:hunter2@127.0.0.1:1/mlflow",
         "MLflow tracking store postgresql://alice:***@127.0.0.1:1/mlflow: cannot be used (OperationalError"),
        # a file where a folder of the store's path would be
        ("--storage", "sqlite:///{tmp}/afile/optuna.db", "{tmp}/afile is a file, not a folder"),
        ("--tracking-uri", "sqlite:///{tmp}/afile/mlflow.db", "{tmp}/afile is a file, not a folder"),
        ("--storage", "sqlite:///{tmp}", "{tmp} is a folder, not a database file"),
    ],
)
def test_unreachable_or_unknown_stores(tmp_path, capsys, monkeypatch, flag, url, expected):
    (tmp_path / "afile").write_text("not a folder")
    url, expected = url.format(tmp=tmp_path), expected.format(tmp=tmp_path)
    r = cli(tmp_path, capsys, monkeypatch, "run", str(SMOKE), "--set", f"output={tmp_path / 'runs'}", flag, url)
    one_line_error(r, expected)
    assert "hunter2" not in r.stderr and "hunter2" not in r.stdout
    assert not (tmp_path / "runs").exists()


def test_output_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    r = cli(tmp_path, capsys, monkeypatch, "run", str(SMOKE), "--set", "output=/proc/harness-cannot-write-here")
    one_line_error(r, "cannot be written")


def test_worker_needs_an_existing_study(tmp_path, capsys, monkeypatch):
    r = cli(tmp_path, capsys, monkeypatch, "worker", str(SMOKE), "--storage", f"sqlite:///{tmp_path / 'empty.db'}")
    one_line_error(r, "create it with `harness run` first")
    assert not (tmp_path / "empty.db").exists()


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


def _spec_with_dataset(tmp_path: Path, dataset: str) -> Path:
    text = SMOKE.read_text()
    start = text.index("dataset:")
    end = text.index("model:")
    p = tmp_path / "spec.yaml"
    p.write_text(text[:start] + dataset + "\n" + text[end:])
    return p


def test_corrupt_cifar_file_is_a_clear_error_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    from tests.test_data import write_fake_cifar

    base, _, _ = write_fake_cifar(tmp_path / "cifar", "cifar10")
    (base / "data_batch_3").write_bytes((base / "data_batch_3").read_bytes()[:100])  # truncated
    spec = _spec_with_dataset(tmp_path, f"dataset: {{name: cifar10, root: {tmp_path / 'cifar'}}}")
    r = cli(tmp_path, capsys, monkeypatch, "run", str(spec), "--set", f"output={tmp_path / 'runs'}")
    one_line_error(r, "data_batch")
    assert not (tmp_path / "runs").exists()


def test_image_folder_without_images_is_a_clear_error(tmp_path, capsys, monkeypatch):
    for c in ("cats", "dogs"):
        (tmp_path / "images" / c).mkdir(parents=True)
    spec = _spec_with_dataset(tmp_path, f"dataset: {{name: imagefolder, root: {tmp_path / 'images'}}}")
    r = cli(tmp_path, capsys, monkeypatch, "run", str(spec), "--set", f"output={tmp_path / 'runs'}")
    one_line_error(r, "images")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_status_and_reproducibility(tmp_path):
    """The same spec and seeds give the same metrics on CPU, run twice; status shows every cell."""
    import json

    metrics = []
    for i in (1, 2):
        out = tmp_path / f"runs{i}"
        r = harness(tmp_path, "run", str(SMOKE), "--set", f"output={out}", "--no-report")
        assert r.returncode == 0, r.stderr[-2000:]
        from harness.tracking import Tracker

        t = Tracker(f"sqlite:///{out / 'smoke' / 'mlflow.db'}", "smoke")
        metrics.append({r.data.tags["harness.cell"]: {k: v for k, v in r.data.metrics.items()
                                                      if k.startswith(("test/", "val/", "train/loss"))}
                        for r in t.runs("smoke", "evaluate")})
    assert metrics[0] == metrics[1] and len(metrics[0]) == 6, json.dumps(metrics, indent=1)[:2000]
    r = harness(tmp_path, "status", str(SMOKE), "--set", f"output={tmp_path / 'runs1'}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" done ") == 6 and "6 done, 0 running, 0 failed, 0 waiting" in r.stdout
