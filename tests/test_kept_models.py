"""Issue #24: kept models in MLflow's PyTorch flavour, and what ``harness evaluate`` makes of them.

- A trained cell's model is the run's logged model ``model`` (``data/model.pt2``, a
  ``torch.export`` graph, and ``model.json``): plain ``mlflow.pytorch.load_model`` of
  ``runs:/<run_id>/model``, in a process that imports nothing of this project, scores on the
  run's test split at the training size exactly the accuracy the run logged.
- A kept model that cannot be read, or does not fit its ``model.json``, is a cell ``harness
  evaluate`` could not evaluate (exit 3, one line naming the cell and the file), never a
  traceback; in both formats: the new one, and the previous one (the run's artifacts
  ``model/weights.pt`` and ``model/model.json``), which a study written before the change has.
- With the kept model as it was, the same command evaluates the cell, in both formats.

Two one-cell smoke studies: one written by ``harness run``, one written in-process by the
previous version's code path (``Tracker.log_model`` as it was: the run's ``model/`` artifacts).
Each damage case damages the kept file in the artifact store, runs ``harness evaluate`` with a
new test size, and puts the file back.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
ONE_CELL = ["encodings=[none]", "seeds=[0]"]
CELL = "none_r16_s0"
#: the kept file of each format, as found in the study's artifact store, and as errors name it
KEPT = {"pt2": ("data/model.pt2", "model/data/model.pt2"), "weights": ("model/weights.pt", "model/weights.pt")}


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A one-cell smoke study written by ``harness run``: its output folder."""
    base = tmp_path_factory.mktemp("kept")
    out = base / "runs"
    r = harness("run", str(SMOKE), "--set", f"output={out}", *ONE_CELL, "--no-report", cwd=base)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def old_study(tmp_path_factory) -> Path:
    """A one-cell smoke study as earlier versions wrote it: ``harness run``'s code path in-process,
    with ``Tracker.log_model`` as it was before (:func:`_old_log_model`: ``model/weights.pt`` and
    ``model/model.json`` as run artifacts, no logged model)."""
    import torch

    import harness.study as study
    from harness.tracking import Tracker

    out = tmp_path_factory.mktemp("kept_old") / "runs"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Tracker, "log_model", _old_log_model)
        try:
            study.run_study(str(SMOKE), [f"output={out}", *ONE_CELL], workers=1)
        finally:
            torch.set_num_threads(threads)
    return out


def _old_log_model(self, run_id: str, state_dict: dict, meta: dict, example=None) -> None:
    """``Tracker.log_model`` of the versions before the PyTorch flavour (e2f3e87^), as it was."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, weights)
        meta_file = Path(tmp) / "model.json"
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
        self.client.log_artifact(run_id, str(weights), "model")
        self.client.log_artifact(run_id, str(meta_file), "model")


def kept_file(out: Path, fmt: str) -> Path:
    (path,) = (out / "smoke" / "artifacts").rglob(KEPT[fmt][0])
    return path


def _random_bytes(good: bytes, fmt: str) -> bytes:
    return os.urandom(4096)


def _truncated(good: bytes, fmt: str) -> bytes:
    return good[: len(good) // 2]


def _another_model(good: bytes, fmt: str) -> bytes:
    """A readable kept model of another model: a ``Linear``'s state dict, or its exported graph."""
    import torch

    other = torch.nn.Linear(3, 4)
    buf = io.BytesIO()
    if fmt == "weights":
        torch.save(other.state_dict(), buf)
    else:
        torch.export.save(torch.export.export(other, (torch.zeros(2, 3),)), buf)
    return buf.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(KEPT))
@pytest.mark.parametrize("damage, says", [(_random_bytes, "cannot be read"), (_truncated, "cannot be read"),
                                          (_another_model, "does not fit the model of its model.json")])
def test_a_damaged_kept_model_is_a_cell_not_evaluated_exit_3_one_line(request, fmt, tmp_path, damage, says):
    out = request.getfixturevalue("study" if fmt == "pt2" else "old_study")
    path = kept_file(out, fmt)
    good = path.read_bytes()
    try:
        path.write_bytes(damage(good, fmt))
        r = harness("evaluate", str(SMOKE), "--set", f"output={out}", *ONE_CELL, "test_resolutions=[8,16,24,40]",
                    "--no-report", cwd=tmp_path)
    finally:
        path.write_bytes(good)
    assert r.returncode == 3, r.stderr[-3000:]
    assert "Traceback" not in r.stderr + r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and CELL in errors[0] and KEPT[fmt][1] in errors[0] and says in errors[0], errors
    assert r.stderr.strip() == errors[0]  # that one line, nothing else


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(KEPT))
def test_with_its_kept_model_back_the_same_command_evaluates_the_cell(request, fmt, tmp_path):
    """The damaged cases logged nothing: the cell still misses 40 px, and the kept model scores
    it, in either format (a study written before the change too)."""
    out = request.getfixturevalue("study" if fmt == "pt2" else "old_study")
    r = harness("evaluate", str(SMOKE), "--set", f"output={out}", *ONE_CELL, "test_resolutions=[8,16,24,40]",
                "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "added to 1 cell, " in r.stdout and "error" not in r.stderr


#: loads a kept model with nothing but MLflow and torch, and scores it on saved test images
LOAD_AND_SCORE = """
import json, sys
import mlflow.pytorch, torch
model = mlflow.pytorch.load_model(sys.argv[1])
split = torch.load(sys.argv[2])
with torch.no_grad():
    hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in zip(split["images"].split(50), split["labels"].split(50)))
print(json.dumps({"acc": hits / len(split["labels"]), "type": type(model).__module__,
                  "ours": sorted(m for m in sys.modules if m.split(".")[0] == "harness")}))
"""


@pytest.mark.slow
def test_mlflow_pytorch_load_model_gives_the_accuracy_its_run_logged(study, tmp_path, monkeypatch):
    """``mlflow.pytorch.load_model("runs:/<run_id>/model")`` in a fresh process that imports
    nothing of this project (a plugin's class need not be importable there): its accuracy on the
    run's test split at the training size is the run's logged ``test/acc`` at that size; the
    batch size is free (50 and the 28 left); the logged model is READY, linked to the run as its
    output, with a signature and an input example at the training size."""
    import torch
    from mlflow.models import Model

    from harness import schema
    from harness.spec import load_spec
    from harness.tracking import Tracker
    from harness.trial import dataset_of

    t = Tracker(f"sqlite:///{study / 'smoke' / 'mlflow.db'}", "smoke", create=False)
    (run,) = t.runs("smoke", schema.EVALUATE, status="FINISHED")
    logged = [t.client.get_logged_model(o.model_id) for o in run.outputs.model_outputs]
    assert [(m.name, str(m.status).split(".")[-1]) for m in logged] == [("model", "READY")]
    split = dataset_of(load_spec(str(SMOKE), [f"output={study}"])).split("test", 16, "cpu")
    torch.save({"images": split.images, "labels": split.labels}, tmp_path / "split.pt")
    env = {**os.environ, "MLFLOW_TRACKING_URI": t.client_uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    r = subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, f"runs:/{run.info.run_id}/model",
                        str(tmp_path / "split.pt")], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    at_train = {v for key, v in run.data.metrics.items()
                if (p := schema.parse_test_metric(key)) and p[0] == "acc" and p[2] == schema.Size(16, 16)}
    assert len(at_train) == 1 and got["acc"] == at_train.pop()
    assert got["ours"] == [] and got["type"].startswith("torch.")  # a graph module: no class of ours
    monkeypatch.setenv("MLFLOW_TRACKING_URI", t.client_uri)
    mlmodel = Model.load(f"models:/{logged[0].model_id}")
    assert mlmodel.signature.inputs.inputs[0].shape == (-1, 3, 16, 16)
    assert mlmodel.signature.outputs.inputs[0].shape == (-1, 4)
    assert "pytorch" in mlmodel.flavors and mlmodel.saved_input_example_info is not None
