"""Exactly-once under a paused worker: a worker stopped (SIGSTOP) past the heartbeat grace is
reaped, another worker retries its cell, and when the paused one continues it notices, drops
its result, closes its run as FAILED (reason: reaped) and ends cleanly."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"


def wait_for(condition, timeout: float, what: str, procs=()) -> None:
    """Poll ``condition`` until it holds (generous timeouts: a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        for p in procs:
            assert p.poll() is None, f"{what}: a process ended early (exit {p.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state T in /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "Tt"


def unlocked(db: Path) -> bool:
    """Whether no other process holds any lock on SQLite file ``db`` (an exclusive transaction
    begins at once; rolled back, nothing written)."""
    con = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN EXCLUSIVE")
        con.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def pause_outside_sqlite(proc: subprocess.Popen, dbs: list[Path], tries: int = 200) -> None:
    """SIGSTOP ``proc`` at a moment it holds no lock on any of ``dbs``: a process stopped while
    it holds a SQLite lock (mid-write; a loaded machine makes that likely) stops every other
    process's writes until it continues, which the docs name as SQLite's limit. Checked once it is
    stopped; else it continues and is stopped again."""
    for _ in range(tries):
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: stopped(proc.pid), 30, "the worker to stop")
        if all(unlocked(db) for db in dbs):
            return
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"the worker held a SQLite lock at each of {tries} pauses")


@pytest.mark.slow
def test_a_paused_worker_that_was_reaped_abandons_its_result(tmp_path):
    import optuna

    out = tmp_path / "runs"
    # one cell, long enough that the pause lands mid-trial; heartbeat 1 s: reaped after 3 s of silence
    sets = ["--set", f"output={out}", "--set", "heartbeat=1", "--set", "encodings=[rope_axial]",
            "--set", "seeds=[0]", "--set", "train.epochs=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = {name: open(tmp_path / f"{name}.err", "w") for name in ("a", "b")}
    a = subprocess.Popen([sys.executable, "-m", "harness", "run", str(SMOKE), *sets, "--no-report"], cwd=tmp_path,
                         env=env, stdout=subprocess.DEVNULL, stderr=logs["a"])
    b = None
    try:
        ckpt = out / "smoke" / "checkpoints" / "evaluate" / "rope_axial_r16_s0.pt"
        storage = f"sqlite:///{out / 'smoke' / 'optuna.db'}"
        wait_for(ckpt.exists, 300, "the first checkpoint", [a])
        study = optuna.load_study(study_name="smoke/evaluate", storage=storage)
        wait_for(lambda: any(t.intermediate_values for t in study.get_trials(deepcopy=False)), 300,
                 "epoch 1 reported", [a])
        # paused mid-trial (its heartbeat goes stale), while it holds no lock on either SQLite store
        pause_outside_sqlite(a, [out / "smoke" / "optuna.db", out / "smoke" / "mlflow.db"])
        assert study.get_trials(deepcopy=False)[-1].state == optuna.trial.TrialState.RUNNING
        b = subprocess.Popen([sys.executable, "-m", "harness", "worker", str(SMOKE), "--storage", storage, *sets],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=logs["b"])

        def retried() -> bool:  # b reaped a's trial and now trains the cell again
            return any(t.user_attrs.get("harness.worker", "").endswith(f":{b.pid}")
                       for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))

        wait_for(retried, 300, "the retry by the second worker", [b])
        os.kill(a.pid, signal.SIGCONT)  # a continues the trial it no longer owns
        assert a.wait(timeout=600) == 0
        assert b.wait(timeout=600) == 0
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
        for f in logs.values():
            f.close()
    errs = {name: (tmp_path / f"{name}.err").read_text() for name in logs}
    for name, err in errs.items():
        assert "Traceback" not in err and "Cannot tell" not in err, f"worker {name}:\n{err[-3000:]}"
    assert "result abandoned" in errs["a"]

    trials = [t for t in optuna.load_study(study_name="smoke/evaluate", storage=storage).trials
              if not t.user_attrs.get("harness.spurious")]
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "FAIL"]
    reaped = next(t for t in trials if t.state == optuna.trial.TrialState.FAIL)
    assert "reaped" in reaped.user_attrs["harness.fail_reason"]

    from harness.tracking import Tracker

    tracker = Tracker(f"sqlite:///{out / 'smoke' / 'mlflow.db'}", "smoke")
    runs = tracker.runs("smoke", "evaluate")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert failed.info.run_id == reaped.user_attrs["mlflow_run_id"]
    assert "reaped" in failed.data.tags["harness.fail_reason"]
    everything = tracker.client.search_runs([tracker.experiment_id])
    assert all(r.info.status != "RUNNING" for r in everything), [(r.info.run_name, r.info.status) for r in everything]
    assert not ckpt.exists()


def test_a_reaped_trial_never_closes_its_run_finished_and_a_rerun_closes_what_was_left(tmp_path):
    """In process, no timing: the paused-after-training case (the run would be closed FINISHED,
    then the trial told: "Cannot tell a FAIL trial"), and the repair of a run left RUNNING."""
    import optuna

    from harness import worker as st
    from harness.schema import EVALUATE, Cell
    from harness.spec import load_spec
    from harness.storage import cell_distributions, enqueue_cells, open_storage, open_studies, repair_runs
    from harness.tracking import Tracker

    spec = load_spec(SMOKE, [f"output={tmp_path / 'runs'}", "heartbeat=1", "encodings=[none]", "seeds=[0]"])
    storage = open_storage(spec.storage_url(), spec.heartbeat)
    studies = open_studies(spec, storage)
    study = studies[EVALUATE]
    tracker = Tracker(spec.tracking(), spec.name)
    parent = tracker.parent_run(spec.name, EVALUATE)
    enqueue_cells(study, spec.cells(), spec.max_retries)
    trial = study.ask(cell_distributions(spec.cells()))
    guard = st._ReapGuard(tracker, storage, trial)
    run_id = guard.child_run(parent, "none_r16_s0", study=spec.name, stage=EVALUATE, params={},
                             tags={"optuna.trial_number": str(trial.number), "harness.cell": "none_r16_s0"})
    study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)  # reaped
    with pytest.raises(st.TrialReaped):
        guard.end(run_id, "FINISHED")
    assert tracker.status(run_id) == "RUNNING"
    assert st._tell_failed(study, trial, "whatever", run_closed=True) is False  # no "Cannot tell a FAIL trial"
    st._abandon(spec, study, Cell("none", 16, 0), trial, guard)
    assert tracker.status(run_id) == "FAILED"
    assert "reaped" in tracker.client.get_run(run_id).data.tags["harness.fail_reason"]

    # a run left RUNNING (its worker killed during its clean-up) whose trial is no longer running
    trial = study.ask(cell_distributions(spec.cells()))
    left = tracker.child_run(parent, "none_r16_s0", study=spec.name, stage=EVALUATE, params={},
                             tags={"optuna.trial_number": str(trial.number), "harness.cell": "none_r16_s0"})
    running = study.ask(cell_distributions(spec.cells()))  # a live worker's: left alone
    live = tracker.child_run(parent, "x", study=spec.name, stage=EVALUATE, params={},
                             tags={"optuna.trial_number": str(running.number), "harness.cell": "x"})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert repair_runs(spec, studies, tracker) == 1
    assert tracker.status(left) == "KILLED" and tracker.status(live) == "RUNNING"


def first_beat(storage, trial_id: int, tries: int = 600) -> None:
    """Wait (real time, up to a minute: a loaded machine) until trial ``trial_id`` has recorded a
    heartbeat in the RDB ``storage``, as the reaper's query sees it."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    rdb = getattr(storage, "_backend", storage)
    for _ in range(tries):
        with _create_scoped_session(rdb.scoped_session) as session:
            if session.query(models.TrialHeartbeatModel).filter(
                    models.TrialHeartbeatModel.trial_id == trial_id).count():
                return
        time.sleep(0.1)
    raise AssertionError(f"trial {trial_id} recorded no heartbeat in {tries / 10:g} s")


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_reaped_after_the_grace(tmp_path, monkeypatch):
    """A worker killed between popping a cell and its first heartbeat leaves a RUNNING trial
    with no heartbeat row, which Optuna's reaper never fails: every other worker would wait for
    it for ever. The harness fails it once this process has seen it beatless for the grace
    period (its own clock), and leaves a trial that beats alone."""
    import optuna
    from optuna.trial import TrialState

    import harness.storage as st
    from harness.schema import T_FAIL_REASON
    from harness.storage import REAPED_REASON
    from harness.tracking import Tracker

    storage = st.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat=1)  # grace 3 s
    study = optuna.create_study(study_name="s", storage=storage)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    dead = study.ask()  # popped, then its worker was killed: no heartbeat ever
    alive = study.ask()
    beat = st.Heartbeat(storage, study, alive.number)
    first_beat(storage, alive._trial_id)  # a live worker's: recorded before the reaper looks (CI: it was not)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the reaper's clock
    try:
        st.reap_stale(study, tracker)  # first seen beatless now
        clock[0] += 2.9
        st.reap_stale(study, tracker)
        assert storage.get_trial(dead._trial_id).state == TrialState.RUNNING  # within the grace
        clock[0] += 0.2
        st.reap_stale(study, tracker)
        failed = storage.get_trial(dead._trial_id)
        assert failed.state == TrialState.FAIL
        assert failed.user_attrs[T_FAIL_REASON] == REAPED_REASON
        assert storage.get_trial(alive._trial_id).state == TrialState.RUNNING  # it beats
    finally:
        beat.stop()
    study.tell(alive, 1.0)
    # a trial seen beatless once and then beating is forgotten, not reaped later
    late = study.ask()
    st.reap_stale(study, tracker)
    beat = st.Heartbeat(storage, study, late.number)
    try:
        first_beat(storage, late._trial_id)
        clock[0] += 10
        st.reap_stale(study, tracker)
        assert storage.get_trial(late._trial_id).state == TrialState.RUNNING
    finally:
        beat.stop()


def test_a_tuning_trial_reaped_after_its_last_report_closes_its_run_failed(tmp_path, monkeypatch, capsys):
    """The tune stage's paused-after-training case, in process: a worker whose tuning trial was
    failed by another worker (the reaper) after the trial's last report used to close its run
    FINISHED beside a FAIL trial. Now the run is FAILED (reason: reaped), the worker warns and
    goes on, and the tuning budget is still met by completed trials."""
    from optuna.trial import TrialState

    import harness.trial as trial_mod
    from harness import study, worker
    from harness.schema import TUNE
    from harness.storage import REAPED_REASON, open_storage, open_studies
    from harness.tracking import Tracker

    overrides = [f"output={tmp_path / 'runs'}", "heartbeat=1", "encodings=[none]", "seeds=[0]",
                 "tune={trials: 2, epochs: 1, seed: 0, space: {train.lr: {low: 0.001, high: 0.01, log: true}}}"]
    study.run_study(str(SMOKE), overrides, workers=0)  # creates the studies, trains nothing
    spec = study.load_spec(SMOKE, overrides)
    tune = open_studies(spec, open_storage(spec.storage_url(), spec.heartbeat), create=False)[f"{TUNE}/none/r16"]
    real_train_model = trial_mod.train_model
    reaped = []

    def train_then_reaped(*args, **kwargs):  # the first trial: paused after its last report, reaped meanwhile
        result = real_train_model(*args, **kwargs)
        if not reaped:
            (running,) = tune.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            tune._storage.set_trial_user_attr(running._trial_id, "harness.fail_reason", REAPED_REASON)
            tune._storage.set_trial_state_values(running._trial_id, state=TrialState.FAIL)
            reaped.append(running.number)
        return result

    monkeypatch.setattr(trial_mod, "train_model", train_then_reaped)
    monkeypatch.setattr(worker, "_evaluate_loop", lambda *a, **k: None)  # the tune stage only
    worker.run_worker(str(SMOKE), overrides)
    assert "result abandoned" in capsys.readouterr().err
    states = {t.number: t.state for t in tune.get_trials(deepcopy=False)}
    assert states[reaped[0]] == TrialState.FAIL
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 2  # the budget, met by others
    tracker = Tracker(spec.tracking(), spec.name)
    runs = {r.data.tags["optuna.trial_number"]: r for r in tracker.runs(spec.name, TUNE)}
    dropped = runs[str(reaped[0])]
    assert dropped.info.status == "FAILED"
    assert dropped.data.tags["harness.fail_reason"] == REAPED_REASON
    assert sorted(r.info.status for r in runs.values()) == ["FAILED", "FINISHED", "FINISHED"]
