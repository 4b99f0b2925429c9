"""Issue #24: what a user sees of a study in MLflow's UI (3.17).

- The experiment's kind is model training (``mlflow.experimentKind`` =
  ``custom_model_development``): set when the experiment is created, and again on an existing
  one by ``run`` (a creating tracker) and ``evaluate``; read back through a real ``mlflow
  server``'s REST API.
- The page the harness prints opens on the runs table, in the real UI in headless Chromium.
  MLflow 3.17.2's UI chooses an experiment's first page from its global workflow type (the
  sidebar's "GenAI | Model training" switch, GenAI unless picked), not from the tag: the plain
  experiment URL opens on the GenAI overview whatever the tag says, so the printed page names
  ``workflowType=machine_learning``.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from harness.schema import EVALUATE, X_KIND, X_KIND_TRAINING
from tests.servers import mlflow_server
from tests.test_report import require_chromium


def rest_tags(url: str, name: str) -> dict[str, str]:
    """The experiment's tags, as the tracking server's REST API answers them."""
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}",
                                timeout=30) as r:
        exp = json.load(r)["experiment"]
    return {t["key"]: t["value"] for t in exp.get("tags", [])}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui")
    with mlflow_server(f"sqlite:///{base / 'mlflow.db'}", base / "artifacts") as url:
        yield url


def test_a_new_experiment_is_model_training(server):
    from harness.tracking import Tracker

    Tracker(server, "fresh")
    assert rest_tags(server, "fresh")[X_KIND] == X_KIND_TRAINING


def test_run_and_evaluate_tag_an_experiment_written_before(server):
    """An experiment created without the tag (as earlier versions did) gets it from a creating
    tracker (``run``, ``worker``) and from ``mark_training`` (``evaluate``), not from a reader."""
    from mlflow.tracking import MlflowClient

    from harness.tracking import Tracker

    client = MlflowClient(server)
    for name in ("old_run", "old_evaluate"):
        client.create_experiment(name)
        assert X_KIND not in rest_tags(server, name)
    Tracker(server, "old_evaluate", create=False)  # `report` reads: it writes nothing
    assert X_KIND not in rest_tags(server, "old_evaluate")
    Tracker(server, "old_run")
    assert rest_tags(server, "old_run")[X_KIND] == X_KIND_TRAINING
    Tracker(server, "old_evaluate", create=False).mark_training()
    assert rest_tags(server, "old_evaluate")[X_KIND] == X_KIND_TRAINING


def headless(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """``url`` in headless Chromium with ``args`` (``--dump-dom``, ``--screenshot=...``), its
    scripts run for 20 s of virtual time; wide: the runs table renders only the columns in view."""
    r = subprocess.run([require_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp / 'chrome'}", "--virtual-time-budget=20000",
                        "--window-size=2400,1400", *args, url], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def dump_dom(url: str, tmp: Path) -> str:
    return headless(url, tmp, "--dump-dom").stdout


def painted(url: str, tmp: Path, colour: tuple[int, int, int]) -> int:
    """How many pixels of a screenshot of ``url`` are exactly ``colour``: what the browser drew,
    inside frames too (a DOM dump holds only the page's own document)."""
    from PIL import Image

    shot = tmp / "shot.png"
    headless(url, tmp, f"--screenshot={shot}", "--hide-scrollbars")
    with Image.open(shot) as im:
        return sum(n for n, c in im.convert("RGB").getcolors(maxcolors=1 << 24) if c == colour)


def visible_text(dom: str) -> str:
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.mark.slow
def test_the_printed_page_opens_the_experiment_on_its_runs_table_in_the_real_ui(server, tmp_path):
    """The printed page, in the real UI: the runs table (not the GenAI overview), one row per
    cell's run (not folded under its parent), its Dataset column naming the dataset's splits
    (``Tracker.log_dataset``) and its Models column the logged model ``model``
    (``Tracker.log_model``); the parent's row has neither."""
    import dataclasses

    import torch

    from harness.config import ViTConfig
    from harness.models.vit import build_model
    from harness.tracking import Tracker

    t = Tracker(server, "ui_study")
    parent = t.parent_run("ui_study", EVALUATE)
    child = t.child_run(parent, "none_r16_s0", study="ui_study", stage=EVALUATE, params={"encoding": "none"}, tags={})
    t.log_metrics(child, {"val_acc": 0.5}, step=1)
    digest = t.log_dataset(child, "rendered", {"num_train": 8, "num_val": 4, "num_test": 4}, resolution=16,
                           regimes=["zoom"])
    cfg = ViTConfig(image_size=16, in_chans=3, num_classes=4, dim=16, depth=1, heads=2, patch_kernel=8, patch_stride=8)
    meta = {"model": dataclasses.asdict(cfg), "encoding": {"name": "none", "options": {}, "label": "none"},
            "train_resolution": 16}
    t.log_model(child, build_model(cfg, "none", {}).state_dict(), meta, torch.zeros(2, 3, 16, 16))
    t.end(child)
    page = t.runs_page()
    assert page.startswith(server) and "workflowType=machine_learning" in page
    text = visible_text(dump_dom(page, tmp_path))
    assert f"Runs - Experiment {t.experiment_id}" in text  # the page's title: the runs table
    assert "Run Name" in text and "ui_study/evaluate" in text and "2 matching runs" in text, text[:1500]
    assert "Token Usage" not in text and "Detect Issues" not in text  # not the GenAI overview
    header = text.index("Run Name")
    assert text.index("Dataset", header) < text.index("Models", header)  # both columns are shown
    rows = text[header:text.index("matching runs")]
    assert "none_r16_s0" in rows, rows  # the cell's own row: the parent does not fold it away
    assert f"rendered ({digest}-train) train" in rows.lower(), rows  # its Dataset cell: the splits by digest
    assert re.search(r"- model\b", rows), rows  # its Models cell: the logged model "model"


@pytest.mark.slow
def test_a_training_run_logs_its_dataset_as_mlflow_inputs(tmp_path):
    """A one-cell smoke study on a real store: its run's inputs are the dataset of each split,
    named, with the options' digest and the split's size as the spec gives them."""
    import hashlib

    import yaml
    from mlflow.tracking import MlflowClient

    from tests.test_kept_models import SMOKE, harness

    out = tmp_path / "runs"
    r = harness("run", str(SMOKE), "--set", f"output={out}", "encodings=[none]", "seeds=[0]", "--no-report",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{out / 'smoke' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    assert exp.tags[X_KIND] == X_KIND_TRAINING
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("harness.parent") == "0"]
    spec = yaml.safe_load(SMOKE.read_text())["dataset"]
    got = {}
    for d in run.inputs.dataset_inputs:
        context = {t.key: t.value for t in d.tags}["mlflow.data.context"]
        assert d.dataset.name == spec["name"]
        got[context] = d.dataset
    assert set(got) == {"train", "val", "test"}
    digests = {ds.digest.rsplit("-", 1)[0] for ds in got.values()}  # <options digest>-<split>
    assert len(digests) == 1 and len(digests.pop()) == 8
    for split, ds in got.items():
        assert json.loads(ds.profile)["num_rows"] == 1
        cols = [c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]]
        assert {"dataset", "options_digest", "split", "examples", "train_resolution", "regimes"} == set(cols)
        source = json.loads(ds.source)["tags"]
        options = json.loads(source["harness.dataset_options"])
        assert options[f"num_{split}"] == spec[f"num_{split}"]  # the split's size, as the spec gives it
        assert ds.digest == f"{hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]}-{split}"


def test_the_report_is_the_evaluate_parents_description_and_artifacts(tmp_path):
    """``log_report``: the parent's description is the report's text up to its first section,
    then a link to report.html in the run's artifacts; the figures are logged beside it."""
    from harness.schema import T_NOTE
    from harness.tracking import Tracker

    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.md").write_text("# Report: s\n\nThe headline: rope wins.\n\n## Table\n\n| a |\n")
    (folder / "report.html").write_text("<html><body>report</body></html>")
    (folder / "acc.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    run_id = t.log_report("s", folder)
    note = t.client.get_run(run_id).data.tags[T_NOTE]
    link = f"#/experiments/{t.experiment_id}/runs/{run_id}/artifacts/report/report.html"
    assert note.startswith("# Report: s\n\nThe headline: rope wins.\n\nThe full report: [report/report.html]("
                           + link + ")")
    assert "## Table" not in note
    assert {a.path for a in t.client.list_artifacts(run_id, "report")} >= {"report/report.html", "report/acc.png"}


@pytest.mark.slow
def test_the_report_shows_in_the_real_uis_run_page_and_artifact_viewer(server, tmp_path):
    """The report as a user meets it in the real UI: the evaluate parent's page shows the
    description (the headline and the link); the artifact viewer draws ``report/report.html``
    with its embedded figure (the viewer frames the file: a screenshot, not the DOM, shows what
    is inside) and draws a figure's PNG. The figures are the report's own PNG files, logged as
    artifacts: ``mlflow.log_figure`` is ``savefig`` into a temporary file and ``log_artifact`` of
    it, so it would log the same kind of file, drawn again."""
    import base64

    from PIL import Image

    from harness.tracking import Tracker

    red, green = (255, 0, 0), (0, 200, 0)  # colours the UI itself never paints over 100 x 100 pixels
    folder = tmp_path / "report"
    folder.mkdir()
    Image.new("RGB", (160, 120), green).save(folder / "accuracy_vs_resolution.png")
    Image.new("RGB", (160, 120), red).save(tmp_path / "embedded.png")
    embedded = base64.b64encode((tmp_path / "embedded.png").read_bytes()).decode()
    (folder / "report.md").write_text("# Report: ui_report\n\nHeadline: rope_golden keeps 0.97 on a larger canvas.\n\n"
                                      "## Table\n\n| a |\n|---|\n| 1 |\n")
    (folder / "report.html").write_text("<html><body><h1>Report: ui_report</h1><p>Body of the report page.</p>"
                                        f'<img alt="Accuracy" src="data:image/png;base64,{embedded}"></body></html>')
    t = Tracker(server, "ui_report")
    run_id = t.log_report("ui_report", folder)
    base = f"{server}/#/experiments/{t.experiment_id}/runs/{run_id}"
    ml = "?workflowType=machine_learning"

    page = visible_text(dump_dom(base + ml, tmp_path / "run"))
    assert "Headline: rope_golden keeps 0.97 on a larger canvas." in page, page[:3000]  # the description
    assert "report/report.html" in page  # its link

    html = tmp_path / "html"
    frames = re.findall(r"<iframe[^>]*>", dump_dom(f"{base}/artifacts/report/report.html{ml}", html))
    assert len(frames) == 1 and 'src="blob:' in frames[0], frames  # the viewer frames the fetched file
    assert painted(f"{base}/artifacts/report/report.html{ml}", html, red) >= 0.9 * 160 * 120  # and draws it
    png = tmp_path / "png"
    assert painted(f"{base}/artifacts/report/accuracy_vs_resolution.png{ml}", png, green) >= 0.9 * 160 * 120
    assert painted(f"{base}/artifacts/report/report.html{ml}", png, green) == 0  # the colours tell them apart


def test_a_kept_model_is_the_runs_logged_model_on_a_tracking_server(server, tmp_path):
    """``Tracker.log_model`` against a real ``mlflow server``: the REST API answers the run's
    model output (the runs table's Models column) and a READY logged model named ``model`` whose
    source is the run; ``mlflow.pytorch.load_model`` of ``runs:/<run_id>/model`` through the
    server gives the model's outputs, and ``load_model`` gives back its weights (downloaded through
    the server's artifact proxy) under the name of the graph's file."""
    import dataclasses

    import mlflow.pytorch
    import torch

    from harness.config import ViTConfig
    from harness.models.vit import build_model
    from harness.tracking import Tracker

    t = Tracker(server, "kept")
    parent = t.parent_run("kept", EVALUATE)
    run_id = t.child_run(parent, "rope_axial_r16_s0", study="kept", stage=EVALUATE, params={}, tags={})
    cfg = ViTConfig(image_size=16, in_chans=3, num_classes=4, dim=32, depth=2, heads=4, patch_kernel=4, patch_stride=4)
    torch.manual_seed(0)
    model = build_model(cfg, "rope_axial", {}).eval()
    meta = {"model": dataclasses.asdict(cfg),
            "encoding": {"name": "rope_axial", "options": {}, "label": "rope_axial"}, "train_resolution": 16}
    images = torch.randn(5, 3, 16, 16)
    where = t.log_model(run_id, model.state_dict(), meta, images[:2])
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=30) as r:
        outputs = json.load(r)["run"].get("outputs", {}).get("model_outputs", [])
    assert [f"models:/{o['model_id']}" for o in outputs] == [where]
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/logged-models/{where.split('/')[-1]}", timeout=30) as r:
        logged = json.load(r)["model"]["info"]
    assert (logged["name"], logged["status"], logged["source_run_id"]) == ("model", "LOGGED_MODEL_READY", run_id)
    mlflow.set_tracking_uri(server)
    try:
        loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/model", dst_path=str(tmp_path))
    finally:
        mlflow.set_tracking_uri(None)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)  # a batch of 5: the batch size is free
    state, got_meta, weights = t.load_model(run_id, tmp_path / "harness")
    assert weights == "model/data/model.pt2" and got_meta == meta
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
