"""The smoke study end to end: Optuna, MLflow, resume, interruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
CELLS = 3 * 1 * 2  # encodings x train resolutions x seeds
EPOCH_METRICS = {"train/loss", "val/acc", "lr"}


def run(out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "harness", "run", str(SMOKE), "--set", f"output={out}", *extra],
                       capture_output=True, text=True, cwd=out.parent, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def finished_runs(out: Path, stage: str = "evaluate"):
    from harness.tracking import Tracker

    t = Tracker(f"sqlite:///{out / 'smoke' / 'mlflow.db'}", "smoke")
    return t, t.runs("smoke", stage)


@pytest.mark.slow
def test_smoke_study_end_to_end_and_resume(tmp_path):
    import optuna

    out = tmp_path / "runs"
    run(out)
    tracker, runs = finished_runs(out)
    assert len(runs) == CELLS and all(r.info.status == "FINISHED" for r in runs)
    cells = {(r.data.params["encoding"], r.data.params["train_resolution"], r.data.params["seed"]) for r in runs}
    assert cells == {(e, "16", s) for e in ("none", "rope_axial", "alibi2d") for s in ("0", "1")}
    parent = tracker.parent_run("smoke", "evaluate")
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == parent
        assert r.data.tags["harness.study"] == "smoke" and r.data.tags["harness.stage"] == "evaluate"
        m = r.data.metrics
        # every evaluation variant of the run: the encoding's policies (none of them for `none`)
        policies = ("na",) if r.data.params["encoding"] == "none" else ("extrapolate", "interpolate")
        tested = {k for k in m if k.startswith("test/")}
        # accuracy and loss, and the accuracy on each half of the test images (issue #21)
        assert tested == {f"test/{kind}/zoom/{p}/none/r{res}" for kind in ("acc", "acc_a", "acc_b", "loss")
                          for p in policies for res in (8, 16, 24)}
        for p in policies:
            for res in (8, 16, 24):
                assert 0 <= m[f"test/acc/zoom/{p}/none/r{res}"] <= 1 and m[f"test/loss/zoom/{p}/none/r{res}"] > 0
        assert m["data/chance"] == 0.25 and m["data/val_images"] == 128  # the smoke spec's num_val
        assert m["params/count"] > 0 and m["train/images_per_s"] > 0 and EPOCH_METRICS <= set(m)
        assert "config.model.dim" in r.data.params and "config.train.lr" in r.data.params
        history = tracker.client.get_metric_history(r.info.run_id, "val/acc")
        assert [h.step for h in history] == [1, 2]  # per epoch
        arts = [a.path for a in tracker.client.list_artifacts(r.info.run_id)]
        assert "spec.resolved.json" in arts
    study = optuna.load_study(study_name="smoke/evaluate", storage=f"sqlite:///{out / 'smoke' / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == CELLS and len(states) == CELLS

    # a second run trains nothing again
    run(out)
    _, again = finished_runs(out)
    assert len(again) == CELLS
    study = optuna.load_study(study_name="smoke/evaluate", storage=f"sqlite:///{out / 'smoke' / 'optuna.db'}")
    assert len(study.trials) == CELLS


@pytest.mark.slow
def test_interrupted_trial_resumes_from_its_checkpoint(tmp_path):
    out = tmp_path / "runs"
    # long enough that the Ctrl-C lands mid-trial even when an epoch takes milliseconds
    longer = ["--set", "train.epochs=100", "--set", "encodings=[rope_axial]", "--set", "seeds=[0]"]
    # Ctrl-C must reach it: a job started in the background (`bash .ci/run &`) inherits SIGINT
    # ignored, and Python then keeps it ignored; give the child the terminal's default back
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(SMOKE), "--set", f"output={out}", *longer],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt = out / "smoke" / "checkpoints" / "evaluate" / "rope_axial_r16_s0.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint appeared"
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the trial
    _, err = proc.communicate(timeout=120)
    # one line, no traceback, exit 130 (128 + SIGINT); tests/test_signals.py: double Ctrl-C, SIGKILL, SIGTERM
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted: the study can be resumed by running the same command"
    tracker, runs = finished_runs(out)
    assert [r.info.status for r in runs] == ["KILLED"]

    run(out, *longer)
    tracker, runs = finished_runs(out)
    done = [r for r in runs if r.info.status == "FINISHED"]
    assert len(done) == 1
    assert done[0].data.metrics["train/resumed_from_epoch"] >= 1
    assert done[0].data.tags["harness.retry_of"] == next(r.info.run_id for r in runs if r.info.status == "KILLED")
    assert not ckpt.exists()  # removed once the trial finished


@pytest.mark.slow
def test_tune_stage_gives_every_encoding_the_same_budget_and_hands_over_the_best(tmp_path):
    import optuna

    out = tmp_path / "runs"
    tune = "tune={trials: 3, epochs: 1, seed: 0, space: {train.lr: {low: 0.0005, high: 0.01, log: true}}}"
    run(out, "--set", tune, "--set", "encodings=[none, rope_axial]", "--set", "seeds=[0]")
    storage = f"sqlite:///{out / 'smoke' / 'optuna.db'}"
    tracker, tune_runs = finished_runs(out, "tune")
    assert len(tune_runs) == 2 * 3
    best = {}
    for enc in ("none", "rope_axial"):
        study = optuna.load_study(study_name=f"smoke/tune/{enc}/r16", storage=storage)
        counted = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                          optuna.trial.TrialState.PRUNED)]
        assert len(counted) == 3 == len(study.trials)
        best[enc] = study.best_params["train.lr"]
    _, evaluated = finished_runs(out)
    assert len(evaluated) == 2
    for r in evaluated:
        assert float(r.data.params["config.train.lr"]) == pytest.approx(best[r.data.params["encoding"]])


@pytest.mark.slow
def test_two_workers_complete_every_cell_once(tmp_path):
    import optuna

    out = tmp_path / "runs"
    run(out, "--workers", "2")
    _, runs = finished_runs(out)
    keys = sorted(r.data.tags["harness.cell"] for r in runs)
    assert len(keys) == CELLS == len(set(keys)) and all(r.info.status == "FINISHED" for r in runs)
    study = optuna.load_study(study_name="smoke/evaluate", storage=f"sqlite:///{out / 'smoke' / 'optuna.db'}")
    done = [t.params["cell"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == CELLS == len(set(done))


@pytest.mark.slow
def test_train_command_tracks_one_run(tmp_path):
    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "harness", "train", "--spec", str(SMOKE), "--encoding", "rope_axial",
                        "--seed", "3", "--set", f"output={out}"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    tracker, runs = finished_runs(out, "train")
    assert len(runs) == 1
    m, p = runs[0].data.metrics, runs[0].data.params
    assert p["encoding"] == "rope_axial" and p["seed"] == "3" and p["train_resolution"] == "16"
    assert {f"test/acc/zoom/{p}/none/r{res}" for p in ("extrapolate", "interpolate") for res in (8, 16, 24)} <= set(m)

    # an entry of the spec, named by its label, trains with the spec's options
    r = subprocess.run([sys.executable, "-m", "harness", "train", "--spec", str(SMOKE), "--encoding", "axial50",
                        "--set", "encodings=[none, {name: rope_axial, label: axial50, options: {base: 50.0}}]",
                        "--set", "train.epochs=1", "--set", f"output={out}"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run = next(x for x in finished_runs(out, "train")[1] if x.data.params["encoding"] == "axial50")
    assert run.data.params["config.encoding.options.base"] == "50.0"
    assert run.data.params["config.encoding.name"] == "rope_axial"


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_retried_from_its_checkpoint(tmp_path):
    import optuna

    out = tmp_path / "runs"
    longer = ["--set", "train.epochs=40", "--set", "encodings=[rope_axial]", "--set", "seeds=[0]",
              "--set", "heartbeat=1"]
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(SMOKE), "--set", f"output={out}", *longer],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "smoke" / "checkpoints" / "evaluate" / "rope_axial_r16_s0.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint appeared"
    proc.kill()  # SIGKILL: no handler runs, the trial and the run stay RUNNING
    proc.wait(timeout=60)

    run(out, *longer)
    tracker, runs = finished_runs(out)
    by_status = {r.info.status: r for r in runs}
    assert sorted(by_status) == ["FAILED", "FINISHED"] and len(runs) == 2
    killed, done = by_status["FAILED"], by_status["FINISHED"]
    assert "heartbeat" in killed.data.tags["harness.fail_reason"]
    assert done.data.tags["harness.retry_of"] == killed.info.run_id
    assert done.data.metrics["train/resumed_from_epoch"] >= 1
    study = optuna.load_study(study_name="smoke/evaluate", storage=f"sqlite:///{out / 'smoke' / 'optuna.db'}")
    states = sorted(t.state.name for t in study.trials if not t.user_attrs.get("harness.spurious"))
    assert states == ["COMPLETE", "FAIL"]


def test_design_warnings_name_too_few_seeds_and_a_missing_control():
    from harness.spec import load_spec
    from harness.study import design_warnings

    main = load_spec(ROOT / "studies" / "resolution_extrapolation.yaml")
    assert design_warnings(main) == []  # three seeds and `none`
    two = design_warnings(load_spec(SMOKE, ["seeds=[0, 1]", "encodings=[rope_axial]"]))
    assert two == ["2 seed(s): the report cannot test any difference between encodings (a paired test needs 3 "
                   "seeds; more find smaller differences)",
                   "no position-free control (an encoding labelled `none`): nothing in the report will tell whether "
                   "the task can be solved without positions",
                   # the smoke spec's declared comparison names an encoding the override left out
                   "analysis.primary[0] 'rope_axial vs alibi2d': alibi2d not in the study's encodings (set by --set "
                   "encodings=...): the comparison is dropped from the report's declared question; none is left, so "
                   "every test in the report is exploratory"]
