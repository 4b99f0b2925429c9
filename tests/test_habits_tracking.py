"""Issue #13: what the MLflow UI and optuna-dashboard show of a study.

- a stage's parent run is closed (FINISHED / FAILED / KILLED) by ``harness run``, re-opened
  on a re-run (never duplicated), and holds the resolved spec, the stage's summary metrics
  and (evaluate) the report;
- per evaluation variant, a series of test accuracy against the square test size;
- the parameter count as a run parameter (the report reads it, falling back to the metric);
- Optuna: named objectives, the cell's real parameters, per-epoch intermediate values.

The fast tests drive ``run_study`` in-process with a stand-in worker; the slow ones share one
``harness run`` of the smoke study (with its report).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness import schema
from harness.schema import EVALUATE, Cell, Variant

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
CELLS = 3 * 1 * 2  # encodings x train resolutions x seeds


def tracker_of(out: Path):
    from harness.tracking import Tracker

    return Tracker(f"sqlite:///{out / 'smoke' / 'mlflow.db'}", "smoke")


def parents(tracker, stage: str = EVALUATE) -> list:
    return tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`{schema.T_STUDY}` = 'smoke' and tags.`{schema.T_STAGE}` = '{stage}' "
                      f"and tags.`{schema.T_PARENT}` = '1'")


# ------------------------------------------------------------------------------ fast
def test_parent_run_is_reopened_never_duplicated(tmp_path):
    from harness.tracking import Tracker

    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    first = t.parent_run("smoke", EVALUATE)
    t.end(first, "FINISHED")
    assert t.parent_run("smoke", EVALUATE) == first and t.status(first) == "FINISHED"  # a worker only finds it
    assert t.parent_run("smoke", EVALUATE, reopen=True) == first
    assert t.status(first) == "RUNNING" and len(parents(t)) == 1


def test_harness_run_closes_its_parent_runs_failed_killed_and_finished(tmp_path, monkeypatch):
    """The parent's status follows how ``run_study`` ends; each re-run re-opens the same parent."""
    import harness.study.stages as study  # run_study reads run_worker from the stages' module

    out = tmp_path / "runs"
    overrides = [f"output={out}"]

    def crash(*args, **kwargs):
        raise RuntimeError("the worker broke")

    monkeypatch.setattr(study, "run_worker", crash)
    with pytest.raises(RuntimeError):
        study.run_study(str(SMOKE), overrides, workers=1)
    t = tracker_of(out)
    (parent,) = parents(t)
    assert parent.info.status == "FAILED" and parent.info.end_time
    run_id = parent.info.run_id
    # the resolved spec: flattened as parameters and whole as an artifact
    assert parent.data.params["train.epochs"] == "2" and parent.data.params["name"] == "smoke"
    assert "spec.resolved.json" in [a.path for a in t.client.list_artifacts(run_id)]
    assert parent.data.metrics[schema.STAGE_CELLS] == CELLS and parent.data.metrics[schema.STAGE_CELLS_DONE] == 0

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "run_worker", interrupted)
    with pytest.raises(KeyboardInterrupt):
        study.run_study(str(SMOKE), overrides, workers=1)
    (parent,) = parents(t)
    assert parent.info.run_id == run_id and parent.info.status == "KILLED"

    monkeypatch.setattr(study, "run_worker", lambda *args, **kwargs: None)
    study.run_study(str(SMOKE), overrides, workers=1)
    (parent,) = parents(t)
    assert parent.info.run_id == run_id and parent.info.status == "FINISHED"

    # --workers 0 only creates the study: `harness worker` processes work, nobody closes the parent yet
    study.run_study(str(SMOKE), overrides, workers=0)
    (parent,) = parents(t)
    assert parent.info.run_id == run_id and parent.info.status == "RUNNING"


def test_report_reads_the_parameter_count_param_and_falls_back_to_the_metric(tmp_path):
    from harness.report import results_table
    from harness.tracking import Tracker

    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    parent = t.parent_run("s", EVALUATE)
    counts = {}
    for seed, param, metric in ((0, 123, 999.0), (1, None, 456.0)):  # a new run, and an old one (metric only)
        cell = Cell("none", 16, seed)
        run = t.child_run(parent, cell.tag, study="s", stage=EVALUATE, params=cell.params(),
                          tags={schema.T_CELL: cell.tag})
        t.log_metrics(run, {schema.PARAM_COUNT: metric, schema.acc_at(16, Variant()): 0.5, schema.VAL_ACC: 0.5})
        if param is not None:
            t.log_params(run, {schema.P_PARAM_COUNT: param})
        t.end(run)
        counts[seed] = param or metric
    df = results_table(t, "s").results
    assert {int(s): float(p) for s, p in zip(df["seed"], df["params"])} == counts


def test_acc_vs_res_key_is_named_by_the_schema_and_is_not_a_test_metric():
    key = schema.acc_vs_res(Variant("canvas", "extrapolate", "log"))
    assert key == "test_acc_vs_res/canvas/extrapolate/log"
    assert schema.parse_test_metric(key) is None  # the report's readers never mistake it for a test accuracy


# ------------------------------------------------------------------------------ slow: one smoke run
@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """One `harness run` of the smoke study, with its report (written under <tmp>/reports/smoke)."""
    base = tmp_path_factory.mktemp("habits")
    out = base / "runs"
    r = subprocess.run([sys.executable, "-m", "harness", "run", str(SMOKE), "--set", f"output={out}"],
                       capture_output=True, text=True, cwd=base, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    (base / "stdout.txt").write_text(r.stdout)
    (base / "stderr.txt").write_text(r.stderr)
    return out


@pytest.mark.slow
def test_a_piped_run_logs_a_line_per_trial_and_prints_the_results(smoke):
    """stderr is a pipe here (as under nohup, SLURM or CI): one start and one end line per cell,
    labelled with its place in the study; stdout ends with the headlines and accuracy tables."""
    err = (smoke.parent / "stderr.txt").read_text()
    out = (smoke.parent / "stdout.txt").read_text()
    for i in range(1, CELLS + 1):
        assert sum(f"cell {i}/{CELLS} " in line and "training started" in line for line in err.splitlines()) == 1
        assert sum(f"cell {i}/{CELLS} " in line and "training done" in line for line in err.splitlines()) == 1
    assert "\r" not in err  # no progress bars drawn into a log
    report = (smoke.parent / "reports" / "smoke" / "report.md").read_text()
    assert report.split("\n## ")[0].strip() in out  # the headlines
    assert "## Test accuracy per encoding variant" in out and "| encoding variant |" in out


@pytest.mark.slow
def test_parent_run_is_finished_with_spec_summary_and_report(smoke):
    t = tracker_of(smoke)
    (parent,) = parents(t)
    assert parent.info.status == "FINISHED" and parent.info.end_time
    m, p = parent.data.metrics, parent.data.params
    assert m[schema.STAGE_CELLS] == CELLS and m[schema.STAGE_CELLS_DONE] == CELLS and m[schema.STAGE_CELLS_FAILED] == 0
    assert p["dataset.name"] == "rendered" and [e["label"] for e in json.loads(p["encodings"])] == \
        ["none", "rope_axial", "alibi2d"]
    top = [a.path for a in t.client.list_artifacts(parent.info.run_id)]
    assert "spec.resolved.json" in top and schema.REPORT_ARTIFACTS in top
    report = {Path(a.path).name for a in t.client.list_artifacts(parent.info.run_id, schema.REPORT_ARTIFACTS)}
    on_disk = {f.name for f in (smoke.parent / "reports" / "smoke").iterdir() if f.suffix in schema.REPORT_SUFFIXES}
    assert {"report.html", "report.md", "results.csv", "comparisons.csv"} <= report
    assert any(n.endswith(".png") for n in report) and report == on_disk
    for r in t.runs("smoke", EVALUATE):  # the children hang under that one parent
        assert r.data.tags[schema.T_PARENT_RUN] == parent.info.run_id


@pytest.mark.slow
def test_accuracy_against_resolution_series_and_parameter_count_param(smoke):
    t = tracker_of(smoke)
    runs = t.runs("smoke", EVALUATE)
    assert len(runs) == CELLS
    for r in runs:
        m = r.data.metrics
        tested = {}
        for key, value in m.items():
            parsed = schema.parse_test_metric(key)
            if parsed and parsed[0] == "acc":
                tested.setdefault(parsed[1], {})[parsed[2].rows] = value
        assert tested
        for variant, by_size in tested.items():
            history = t.client.get_metric_history(r.info.run_id, schema.acc_vs_res(variant))
            assert {h.step: h.value for h in history} == pytest.approx(by_size)
            assert sorted(h.step for h in history) == [8, 16, 24]
        assert int(r.data.params[schema.P_PARAM_COUNT]) == m[schema.PARAM_COUNT] > 0  # the metric is kept


@pytest.mark.slow
def test_optuna_trials_have_named_objective_real_parameters_and_intermediate_values(smoke):
    import optuna

    study = optuna.load_study(study_name="smoke/evaluate", storage=f"sqlite:///{smoke / 'smoke' / 'optuna.db'}")
    assert study.metric_names == [schema.OBJECTIVE_EVALUATE]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == CELLS
    found = set()
    for t in done:
        cell = Cell.parse(t.params[schema.O_CELL])  # the queue's key is still there
        assert (t.params["encoding"], t.params["train_resolution"], t.params["seed"]) == \
               (cell.encoding, cell.train_resolution, cell.seed)
        assert isinstance(t.params["seed"], int) and isinstance(t.params["train_resolution"], int)
        assert sorted(t.intermediate_values) == [1, 2] and all(0 <= v <= 1 for v in t.intermediate_values.values())
        assert t.user_attrs[schema.U_ENCODING_NAME] == cell.encoding  # the smoke study's labels are the names
        assert json.loads(t.user_attrs[schema.U_ENCODING_OPTIONS]) == {}
        assert not math.isnan(t.value)
        found.add(cell)
    assert len(found) == CELLS


@pytest.mark.slow
def test_each_trained_cell_keeps_its_final_weights_and_what_rebuilds_the_model(smoke, tmp_path):
    """The kept weights are the final ones: the model rebuilt from the run's logged model (its
    graph's weights and ``model.json``) scores, on the test split at the training size, exactly
    the accuracy its run logged when it finished training. Nothing is kept in the run's own
    ``model/`` artifacts (the previous format)."""
    from harness.config import ViTConfig
    from harness.models.vit import build_model
    from harness.spec import load_spec
    from harness.train import evaluate
    from harness.trial import dataset_of

    t = tracker_of(smoke)
    data = dataset_of(load_spec(str(SMOKE), [f"output={smoke}"]))
    split = data.split("test", 16, device="cpu")
    runs = t.runs("smoke", EVALUATE)
    assert len(runs) == CELLS
    for r in runs:
        # the run's own artifacts (listed at the root: MLflow lists "model/" through the logged model)
        assert schema.MODEL_ARTIFACTS not in {a.path for a in t.client.list_artifacts(r.info.run_id)}
        assert t.kept_model(r.info.run_id) is not None
        state, meta, weights = t.load_model(r.info.run_id, tmp_path / r.info.run_id)
        assert weights == f"{schema.MODEL_ARTIFACTS}/{schema.MODEL_PT2}"
        assert meta["encoding"]["name"] == r.data.params["encoding"] and meta["train_resolution"] == 16
        model = build_model(ViTConfig.from_dict(meta["model"]), meta["encoding"]["name"], meta["encoding"]["options"])
        model.load_state_dict(state)
        at_train = {v for key, v in r.data.metrics.items()  # every policy: the same grid at the training size
                    if (p := schema.parse_test_metric(key)) and p[0] == "acc" and p[2] == schema.Size(16, 16)}
        assert len(at_train) == 1 and evaluate(model, split, 256, "cpu")["acc"] == at_train.pop()


@pytest.mark.slow
def test_evaluate_adds_a_test_resolution_to_a_finished_study_without_training(smoke, monkeypatch, capsys):
    """`harness evaluate` with an added test size: every run gets the new metrics and series
    point, the Optuna study is untouched, the report shows the new column, and no training step
    runs (the step and the training loop raise if called)."""
    import optuna

    import harness.train as train
    import harness.trial as trial
    from harness.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("harness evaluate trained")

    monkeypatch.setattr(train.TrainStep, "__call__", no_training)
    monkeypatch.setattr(train, "train_model", no_training)
    monkeypatch.setattr(trial, "train_model", no_training)
    monkeypatch.chdir(smoke.parent)  # reports/ beside the fixture's
    storage = f"sqlite:///{smoke / 'smoke' / 'optuna.db'}"
    before = [(t.number, t.state, t.value) for t in optuna.load_study(study_name="smoke/evaluate",
                                                                        storage=storage).trials]
    args = ["evaluate", str(SMOKE), f"output={smoke}", "test_resolutions=[8, 16, 24, 32]"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # r32 once per variant: none has one (no policy), rope_axial and alibi2d two (their policies); 2 seeds each
    assert f"{2 * (1 + 2 + 2)} evaluations added to {CELLS} cells" in out
    t = tracker_of(smoke)
    for r in t.runs("smoke", EVALUATE):
        variants = [v for key in r.data.metrics if (p := schema.parse_test_metric(key)) for v in [p[1]]]
        for variant in set(variants):
            assert schema.eval_metric("acc", variant, 32) in r.data.metrics
            steps = sorted(h.step for h in t.client.get_metric_history(r.info.run_id, schema.acc_vs_res(variant)))
            assert steps == [8, 16, 24, 32]
        assert r.data.tags[schema.T_EVALUATED]
    after = [(t.number, t.state, t.value) for t in optuna.load_study(study_name="smoke/evaluate",
                                                                       storage=storage).trials]
    assert after == before
    table = (smoke.parent / "reports" / "smoke" / "report.md").read_text()
    assert "| 8 px | 16 px | 24 px | 32 px |" in table
    # again: nothing is missing, nothing is added
    assert main(args + ["--no-report"]) == 0
    assert f"0 evaluations added to 0 cells, {CELLS} cells had them all already" in capsys.readouterr().out
    # `harness run` of the finished study with one more size: nothing to train, the kept models measured
    assert main(["run", str(SMOKE), f"output={smoke}", "test_resolutions=[8, 16, 24, 32, 40]", "--no-report"]) == 0
    assert f"{2 * (1 + 2 + 2)} evaluations added to {CELLS} cells trained before" in capsys.readouterr().out
    assert all(any(k.endswith("/r40") for k in r.data.metrics) for r in t.runs("smoke", EVALUATE))
    assert len(t.runs("smoke", EVALUATE)) == CELLS


@pytest.mark.slow
def test_evaluate_refuses_a_spec_whose_training_keys_differ(smoke, capsys):
    from harness.cli import main

    assert main(["evaluate", str(SMOKE), f"output={smoke}", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "different spec" in err and "train" in err and err.count("\n") == 1


def test_cells_queued_by_an_older_version_are_trained_with_their_real_parameters(tmp_path, monkeypatch):
    """A study queued before trials had real parameters carries only ``cell``; Optuna would draw
    encoding, resolution and seed at random for it. The worker queues such a cell again with its
    parameters, so every completed trial's parameters are its cell's."""
    import optuna

    import harness.worker as worker
    from harness.spec import load_spec
    from harness.storage import open_storage, open_studies
    from harness.tracking import Tracker

    spec = load_spec(str(SMOKE), [f"output={tmp_path / 'runs'}"])
    storage = open_storage(spec.storage_url())
    evaluate = open_studies(spec, storage)[EVALUATE]
    for cell in spec.cells():  # as the version before issue #13 queued them
        evaluate.enqueue_trial({schema.O_CELL: cell.key}, user_attrs=cell.params())
    trained = []
    monkeypatch.setattr(worker, "train_one", lambda spec, cell, **kw: trained.append(cell) or 0.5)
    tracker = Tracker(spec.tracking(), spec.name)
    worker._evaluate_loop(evaluate, storage, spec, tracker, tracker.parent_run(spec.name, EVALUATE), False)
    assert sorted(trained) == sorted(spec.cells())  # each cell once
    done = [t for t in evaluate.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == CELLS
    for t in done:
        cell = Cell.parse(t.params[schema.O_CELL])
        assert (t.params["encoding"], t.params["train_resolution"], t.params["seed"]) == \
               (cell.encoding, cell.train_resolution, cell.seed)


@pytest.mark.slow
def test_every_run_logs_its_time_breakdown_and_the_report_adds_it_up(smoke):
    """Issue #20: each finished run's phases (time/<phase>_s) add up to at most its total, the
    evaluate parent holds the wall time and workers, the report's totals are the runs' sums, and
    the progress lines carry how far the study is."""
    import pandas as pd

    from harness.stopwatch import OTHER, PHASES, TOTAL

    t = tracker_of(smoke)
    sums = dict.fromkeys((*PHASES, OTHER, TOTAL), 0.0)
    for r in t.runs("smoke", EVALUATE):
        m = r.data.metrics
        b = {ph: m[schema.time_metric(ph)] for ph in sums}
        assert all(v >= 0 for v in b.values()) and b["train_steps"] > 0 and b["test_eval_zoom"] > 0
        assert sum(b[ph] for ph in PHASES) + b[OTHER] == pytest.approx(b[TOTAL])
        for ph in sums:
            sums[ph] += b[ph]
    (parent,) = parents(t)
    assert parent.data.metrics[schema.STAGE_WALL_S] > 0 and parent.data.metrics[schema.STAGE_WORKERS] == 1
    md = (smoke.parent / "reports" / "smoke" / "report.md").read_text()
    section = md.split("## Where the time went")[1].split("\n## ")[0]
    table = pd.read_csv(__import__("io").StringIO("\n".join(
        line.strip("|") for line in section.splitlines() if line.startswith("| ") and "---" not in line)), sep="|")
    seconds = {p.strip(): float(s) for p, s in zip(table.iloc[:, 0], table.iloc[:, 1])}
    for ph in PHASES:
        assert seconds[ph] == pytest.approx(sums[ph], abs=0.051)
    assert seconds[f"total of {CELLS} runs (worker-seconds)"] == pytest.approx(sums[TOTAL], abs=0.051)
    err = (smoke.parent / "stderr.txt").read_text()
    starts = [line for line in err.splitlines() if "training started" in line]
    assert starts[0].endswith(f"study: 0 done, {CELLS} left, no estimate until a cell has finished")
    assert starts[-1].endswith("to go") and f"study: {CELLS - 1} done, 1 left, about " in starts[-1]


@pytest.mark.slow
def test_parent_run_description_is_the_report_headline_with_a_link_to_the_report(smoke):
    """Issue #24: the evaluate parent's description (``mlflow.note.content``) starts with the
    report's headline, word for word, and links report.html among the run's artifacts."""
    t = tracker_of(smoke)
    (parent,) = parents(t)
    note = parent.data.tags[schema.T_NOTE]
    md = (smoke.parent / "reports" / "smoke" / "report.md").read_text()
    headline = md.split("\n## ")[0].strip()
    assert headline.startswith("# Report: smoke") and note.startswith(headline)
    link = f"#/experiments/{t.experiment_id}/runs/{parent.info.run_id}/artifacts/report/report.html"
    assert f"]({link})" in note
    logged = {Path(a.path).name for a in t.client.list_artifacts(parent.info.run_id, schema.REPORT_ARTIFACTS)}
    assert "report.html" in logged and any(name.endswith(".png") for name in logged)  # PNGs: inline in the viewer


@pytest.mark.slow
def test_optuna_dashboard_shows_the_evaluate_trials_parameters_objective_and_epochs(smoke):
    """Issue #24: what optuna-dashboard serves (its HTTP API, the app on loopback): the evaluate
    study's objective by name, each trial's encoding, train resolution and seed as parameters,
    and one intermediate value per epoch; the same as the trial's own record in the storage."""
    import threading
    import urllib.request
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna

    dashboard = pytest.importorskip("optuna_dashboard")  # pip install '.[dashboard]'

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    storage = optuna.storages.RDBStorage(f"sqlite:///{smoke / 'smoke' / 'optuna.db'}")
    server = make_server("127.0.0.1", 0, dashboard.wsgi(storage), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as r:
            (summary,) = [s for s in json.load(r)["study_summaries"] if s["study_name"] == "smoke/evaluate"]
        with urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}?after=0", timeout=30) as r:
            shown = json.load(r)
    finally:
        server.shutdown()
    assert shown["objective_names"] == [schema.OBJECTIVE_EVALUATE] and shown["has_intermediate_values"]
    study = optuna.load_study(study_name="smoke/evaluate", storage=storage)
    mine = {t.number: t for t in study.trials}
    complete = [t for t in shown["trials"] if t["state"] == "Complete"]
    assert len(complete) == CELLS
    for t in complete:
        params = {p["name"]: p["param_external_value"] for p in t["params"]}
        own = mine[t["number"]]
        assert {k: params[k] for k in ("encoding", "train_resolution", "seed")} == \
               {k: str(own.params[k]) for k in ("encoding", "train_resolution", "seed")}
        epochs = {iv["step"]: iv["value"] for iv in t["intermediate_values"]}
        assert epochs == own.intermediate_values and sorted(epochs) == [1, 2]  # the smoke study's 2 epochs
        assert t["values"] == [own.value]
