"""A full disk (or a file size limit) under the output folder: one line naming the folder, the
trial FAILED with that reason in MLflow and Optuna, no partial file left, exit status 2 (issue 14).

No root here (no small tmpfs to fill), so the writes fail for real in two ways: a checkpoint's
``.tmp`` that is a link to ``/dev/full`` (every write: ENOSPC), and ``RLIMIT_FSIZE`` (``ulimit -f``:
EFBIG past the limit; Python ignores SIGXFSZ). A monkeypatched ``torch.save`` covers the plain
OSError."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.errors import HarnessError
from harness.checkpoint import OutputWriteError, save_atomic
from harness.train import TrainConfig, train_model

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full")


@needs_dev_full
def test_a_full_disk_is_one_error_naming_the_folder_and_leaves_no_tmp(tmp_path):
    path = tmp_path / "ckpt" / "cell.pt"
    save_atomic({"epoch": 1}, path)  # a good checkpoint first: it must survive the failed write
    (tmp_path / "ckpt" / "cell.pt.tmp").symlink_to(FULL)  # every write to it: ENOSPC
    with pytest.raises(OutputWriteError) as info:
        save_atomic({"epoch": 2, "w": torch.randn(1000, 100)}, path)
    assert isinstance(info.value, HarnessError)  # the CLI prints it as one line, exit 2
    assert str(info.value) == f"no space left on device in {path.parent} (writing checkpoint cell.pt)"
    assert info.value.folder == path.parent
    assert sorted(p.name for p in path.parent.iterdir()) == ["cell.pt"]  # no .tmp (nor the link) left
    assert torch.load(path, weights_only=True) == {"epoch": 1}  # the previous checkpoint is intact


def test_an_oserror_from_torch_save_is_the_same_error(tmp_path, monkeypatch):
    def full(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputWriteError,
                       match=rf"^no space left on device in {tmp_path} \(writing checkpoint c\.pt\)$"):
        save_atomic({}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


@needs_dev_full
def test_training_stops_with_the_error_at_the_first_checkpoint(tmp_path):
    from harness.conformance import TINY
    from harness.models import build_model
    from tests.test_checkpoint_validation import Noise

    ckpt = tmp_path / "c.pt"
    (tmp_path / "c.pt.tmp").symlink_to(FULL)
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", threads=1)
    n = torch.get_num_threads()
    epochs = []
    try:
        with pytest.raises(OutputWriteError, match="no space left on device"):
            train_model(build_model(TINY, "none"), Noise(), cfg, train_resolution=16, test_resolutions=[], seed=0,
                        checkpoint=ckpt, progress=False, on_epoch=lambda e, m: epochs.append(e))
    finally:
        torch.set_num_threads(n)
    assert epochs == [] and list(tmp_path.iterdir()) == []


def _run(tmp_path: Path, *extra: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    args = ["--no-report", "--set", "output=runs", "--set", "encodings=[none]", "--set", "seeds=[0]",
            "--set", "dataset.num_train=128", "--set", "dataset.num_val=32", "--set", "dataset.num_test=32",
            "--set", "train.batch_size=32", *extra]
    return subprocess.run([sys.executable, "-m", "harness", "run", str(SMOKE), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, preexec_fn=limit)


def _check_failed(tmp_path: Path, r: subprocess.CompletedProcess, what: str) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    folder = Path("runs") / "smoke" / "checkpoints" / "evaluate"
    message = f"{what} in {folder} (writing checkpoint none_r16_s0.pt)"
    assert r.returncode == 2, r.stderr[-3000:]
    from harness.spec import load_spec
    from harness.study import design_warnings

    # the design warnings `run` gives before training (one seed), then one line: no traceback, no retries
    warned = [f"warning: {w}" for w in design_warnings(load_spec(SMOKE, ["encodings=[none]", "seeds=[0]"]))]
    errors = [line for line in r.stderr.splitlines() if not line.startswith("cell 1/1 none r16 seed 0: training")]
    assert errors == [*warned, f"error: {message}"], r.stderr[-3000:]
    run_dir = tmp_path / "runs" / "smoke"
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    child = [x for x in runs if x.data.tags.get("harness.cell") == "none_r16_s0"]
    assert len(child) == 1 and child[0].info.status == "FAILED"
    assert child[0].data.tags["harness.fail_reason"] == message
    assert all(x.info.status != "RUNNING" for x in runs), [(x.info.run_name, x.info.status) for x in runs]
    study = optuna.load_study(study_name="smoke/evaluate", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["harness.fail_reason"] == message
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]  # no partial file


@pytest.mark.slow
@needs_dev_full
def test_harness_run_on_a_full_disk(tmp_path):
    folder = tmp_path / "runs" / "smoke" / "checkpoints" / "evaluate"
    folder.mkdir(parents=True)
    (folder / "none_r16_s0.pt.tmp").symlink_to(FULL)  # the disk is full when the first checkpoint is written
    _check_failed(tmp_path, _run(tmp_path), "no space left on device")


@pytest.mark.slow
def test_harness_run_past_a_file_size_limit(tmp_path):
    """``ulimit -f 8 MB``: the stores fit, the checkpoint of the wide model does not."""
    # a model wide enough that its checkpoint (weights and AdamW moments, ~19 MB) is the largest file
    _check_failed(tmp_path, _run(tmp_path, "--set", "model.dim=256", fsize=8 << 20), "file too large")


def test_a_full_disk_while_keeping_the_model_fails_the_run_not_leaves_it_running(tmp_path, monkeypatch):
    """The kept weights are written after training (MLflow artifacts): a full disk there closes
    the run FAILED with the reason and raises the one-line error, like a full disk in training."""
    from harness.schema import EVALUATE, T_FAIL_REASON, Cell
    from harness.spec import load_spec
    from harness.tracking import Tracker
    from harness.trial import train_one

    spec = load_spec(str(SMOKE), [f"output={tmp_path / 'runs'}", "encodings=[none]", "seeds=[0]",
                                  "dataset.num_train=128", "dataset.num_val=32", "dataset.num_test=32",
                                  "train.batch_size=32", "train.epochs=1"])
    tracker = Tracker(spec.tracking(), spec.name)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Tracker, "log_model", full)
    n = torch.get_num_threads()
    try:
        with pytest.raises(OutputWriteError, match=r"no space left on device in .*smoke \(the results of none_r16_s0\)"):
            train_one(spec, Cell("none", 16, 0), stage=EVALUATE, tracker=tracker,
                      parent=tracker.parent_run(spec.name, EVALUATE), progress=False)
    finally:
        torch.set_num_threads(n)
    (run,) = tracker.runs(spec.name, EVALUATE)
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags[T_FAIL_REASON]


@needs_dev_full
def test_bench_json_on_a_full_disk_is_one_error_and_leaves_no_file(tmp_path):
    from harness.bench.run import _write_json

    path = tmp_path / "bench.json"
    (tmp_path / "bench.json.tmp").symlink_to(FULL)  # every write to it: ENOSPC
    with pytest.raises(OutputWriteError, match=rf"^no space left on device in {tmp_path} \(writing bench\.json\)$"):
        _write_json({"x": list(range(10_000))}, path)
    assert list(tmp_path.iterdir()) == []  # no .tmp (nor the link), no half a file


def test_show_on_a_full_disk_is_one_error_and_leaves_no_partial_figure(tmp_path, monkeypatch):
    import matplotlib.figure

    from harness.show import show_encoding

    def full(self, fname, *args, **kwargs):  # half a PNG, then the disk is full
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(OutputWriteError, match=rf"^no space left on device in {tmp_path} \(writing rope_axial_.*\.png\)$"):
        show_encoding("rope_axial", grid=(4, 4), out=tmp_path, preset="tiny", options={})
    assert list(tmp_path.iterdir()) == []


def test_logging_the_report_on_a_full_disk_is_one_error_naming_the_complete_report(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from harness.tracking import Tracker, TrackingError

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    report = tmp_path / "reports" / "s"
    report.mkdir(parents=True)
    (report / "report.md").write_text("# Report: s\n")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(MlflowClient, "log_artifact", full)
    with pytest.raises(TrackingError, match=rf"^the report could not be logged to MLflow run \w+ \(no space left "
                                            rf"on device\); the report itself is complete in {report}$"):
        tracker.log_report("s", report)
