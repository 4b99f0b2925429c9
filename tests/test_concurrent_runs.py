"""Two `harness run` of one fresh study started together, and the outcomes `run` and `status`
report: cells failed on every try (exit 3, named with their reasons; an interruption is not a
try), a spec other than the pinned one (refused), one tracking store fed from two storages (refused)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"

BOOM = '''
"""A test plugin: an encoding that always fails in training."""
from dataclasses import dataclass

from harness.encodings import PositionalEncoding, register_encoding


@register_encoding("boom")
class Boom(PositionalEncoding):
    """Test plugin: raises in training."""

    @dataclass(frozen=True)
    class Options:
        pass

    def tokens(self, x, grid, state):
        raise RuntimeError("boom: this encoding always fails")
'''


def harness(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.mark.slow
def test_two_runs_of_a_fresh_study_started_together_both_finish_and_train_each_cell_once(tmp_path):
    import optuna

    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "harness", "run", str(SMOKE), "--set", f"output={out}", "--set", "seeds=[0]",
           "--set", "encodings=[none, rope_axial]", "--set", "train.epochs=1", "--no-report"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
    trials = optuna.load_study(study_name="smoke/evaluate", storage=f"sqlite:///{out / 'smoke' / 'optuna.db'}").trials
    done = sorted(t.params["cell"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert done == ["none|r16|s0", "rope_axial|r16|s0"]
    from harness.tracking import Tracker

    tracker = Tracker(f"sqlite:///{out / 'smoke' / 'mlflow.db'}", "smoke")
    runs = tracker.runs("smoke", "evaluate")
    assert sorted(r.data.tags["harness.cell"] for r in runs) == ["none_r16_s0", "rope_axial_r16_s0"]
    assert all(r.info.status == "FINISHED" for r in tracker.client.search_runs([tracker.experiment_id]))
    parents = [r for r in tracker.client.search_runs([tracker.experiment_id]) if r.data.tags.get("harness.parent") == "1"]
    assert len(parents) == 1


@pytest.mark.slow
def test_cells_failed_on_every_try_status_and_refusals(tmp_path):
    (tmp_path / "boom.py").write_text(BOOM)
    out = tmp_path / "runs"
    sets = ["--set", f"output={out}", "--set", "seeds=[0]", "--set", "encodings=[none, boom]",
            "--set", f"plugins=[{tmp_path / 'boom.py'}]", "--set", "train.epochs=1", "--set", "max_retries=1"]
    r = harness(tmp_path, "run", str(SMOKE), *sets, "--no-report")
    # a cell that fails on every try: not "done", exit 3, the cell and its recorded reason named
    assert r.returncode == 3, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "done" not in r.stdout
    assert "boom r16 seed 0: 2 tries, last: error: RuntimeError: boom: this encoding always fails" in r.stderr

    # a worker joining the ended study finds nothing to train, and says the study did not end done
    r = harness(tmp_path, "worker", str(SMOKE), *sets, "--storage", f"sqlite:///{out / 'smoke' / 'optuna.db'}")
    assert r.returncode == 3 and "boom r16 seed 0: 2 tries" in r.stderr and "Traceback" not in r.stderr, r.stderr

    r = harness(tmp_path, "status", str(SMOKE), *sets)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("boom"))
    assert "failed" in line and "boom: this encoding always fails" in line and "worker died" not in line

    # status with another spec than the one the study is pinned to: refused, as run and worker do
    r = harness(tmp_path, "status", str(SMOKE), *sets, "--set", "train.epochs=3")
    assert r.returncode == 2 and "different spec" in r.stderr and "train" in r.stderr, r.stderr

    # the same study name against another storage but the same tracking store: refused
    tracking = f"sqlite:///{out / 'smoke' / 'mlflow.db'}"
    r = harness(tmp_path, "run", str(SMOKE), *sets, "--storage", f"sqlite:///{tmp_path / 'other.db'}",
                "--tracking-uri", tracking, "--no-report")
    assert r.returncode == 2 and "another Optuna storage" in r.stderr and "Traceback" not in r.stderr, r.stderr
    from harness.tracking import Tracker

    tracker = Tracker(tracking, "smoke")
    assert len(tracker.runs("smoke", "evaluate")) == 3  # none once, boom twice: nothing trained again


def test_interruptions_are_not_tries_but_failures_are(tmp_path):
    """In process, no timing: a cell stopped by Ctrl-C or SIGTERM (a preempted job) more often than
    1 + max_retries is still queued, and still waiting in `status`; failures of the cell (an error,
    a reaped worker, a failure recorded before reasons were) use up its tries."""
    import optuna

    from harness.schema import EVALUATE, STAGE_CELLS_FAILED, U_RUN_CLOSED, Cell
    from harness.spec import load_spec
    from harness.storage import cell_distributions, enqueue_cells, open_storage, open_studies
    from harness.study.heartbeats import REAPED_REASON
    from harness.study.stages import _stage_summary, failed_cells, study_status
    from harness.study.worker import _tell_failed

    spec = load_spec(SMOKE, [f"output={tmp_path / 'runs'}", "encodings=[none]", "seeds=[0]", "max_retries=2"])
    studies = open_studies(spec, open_storage(spec.storage_url(), spec.heartbeat))
    study = studies[EVALUATE]
    cell = Cell("none", 16, 0)

    def stop(reason: str | None, **attrs) -> int:
        """Pop the cell's queued trial, fail it with ``reason``; then how many cells are queued again."""
        trial = study.ask(cell_distributions(spec.cells()))
        assert trial.params["cell"] == cell.key
        if reason is None:  # a trial failed by a version before reasons were recorded
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            assert _tell_failed(study, trial, reason, run_closed=True)
        return enqueue_cells(study, spec.cells(), spec.max_retries)

    def status() -> tuple[str, str]:
        row = study_status(spec)[0]
        return row["state"], row["detail"]

    assert enqueue_cells(study, spec.cells(), spec.max_retries) == 1
    for reason in ("interrupted: Interrupted", "interrupted: SystemExit", "interrupted: Interrupted (before training)",
                   "interrupted: Interrupted"):  # four stops > 1 + max_retries
        assert stop(reason) == 1
    assert status() == ("waiting", "after 0 failed tries and 4 interruptions, last: interrupted: Interrupted")
    assert failed_cells(spec) == [] and _stage_summary(spec, studies, EVALUATE)[STAGE_CELLS_FAILED] == 0

    assert stop(REAPED_REASON) == 1  # a worker that died (SIGKILL, out of memory) is a try
    assert stop("error: RuntimeError: boom") == 1
    assert status() == ("waiting", "after 2 failed tries and 4 interruptions, last: error: RuntimeError: boom")
    assert stop(None, **{U_RUN_CLOSED: True}) == 0  # "worker died or interrupted": counted, as before
    assert status() == ("failed", "3 tries, last: worker died or interrupted")
    assert failed_cells(spec) == [(cell, 3, "worker died or interrupted")]
    assert _stage_summary(spec, studies, EVALUATE)[STAGE_CELLS_FAILED] == 1
