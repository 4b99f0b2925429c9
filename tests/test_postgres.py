"""Scale-out on a real PostgreSQL server: three workers on one study, one killed with SIGKILL
in the middle of a trial; and an MLflow server with a PostgreSQL backend, logged over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import mlflow_server, postgres_server

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
CELLS = 6


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


@pytest.mark.slow
def test_three_workers_on_postgres_one_killed(tmp_path):
    import optuna

    with postgres_server() as pg:
        storage = pg + "optuna"
        sets = ["--set", f"output={tmp_path / 'runs'}", "--set", "heartbeat=1", "--set", "train.epochs=12"]
        r = subprocess.run(harness_cmd("run", str(SMOKE), "--storage", storage, "--workers", "0", *sets),
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        workers = [subprocess.Popen(harness_cmd("worker", str(SMOKE), "--storage", storage, *sets), cwd=tmp_path,
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                   for _ in range(3)]
        study = optuna.load_study(study_name="smoke/evaluate", storage=storage)
        ckpts = tmp_path / "runs" / "smoke" / "checkpoints" / "evaluate"
        victim = None
        deadline = time.time() + 300
        while victim is None and time.time() < deadline:
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                a = t.user_attrs
                if "harness.worker" in a and (ckpts / f"{a['encoding']}_r{a['train_resolution']}_s{a['seed']}.pt").exists():
                    pid = int(a["harness.worker"].rsplit(":", 1)[1])
                    victim = next((w for w in workers if w.pid == pid), None)
                    killed_cell = (a["encoding"], a["train_resolution"], a["seed"])
                    break
            time.sleep(0.1)
        assert victim is not None, "no worker was caught in the middle of a trial"
        victim.send_signal(signal.SIGKILL)
        for w in workers:
            w.wait(timeout=600)
        assert victim.returncode == -signal.SIGKILL
        for w in workers:
            if w is not victim:
                assert w.returncode == 0, w.stderr.read()[-2000:]

        trials = optuna.load_study(study_name="smoke/evaluate", storage=storage).trials
        real = [t for t in trials if not t.user_attrs.get("harness.spurious")]
        done = [(t.user_attrs["encoding"], t.user_attrs["train_resolution"], t.user_attrs["seed"])
                for t in real if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(done) == CELLS == len(set(done))  # every cell exactly once
        failed = [t for t in real if t.state == optuna.trial.TrialState.FAIL]
        assert len(failed) == 1
        retry = next(t for t in real if t.state == optuna.trial.TrialState.COMPLETE
                     and (t.user_attrs["encoding"], t.user_attrs["train_resolution"], t.user_attrs["seed"]) == killed_cell)
        assert retry.user_attrs["harness.retry_of_trial"] == failed[0].number

        from harness.tracking import Tracker

        tracker = Tracker(f"sqlite:///{tmp_path / 'runs' / 'smoke' / 'mlflow.db'}", "smoke")
        runs = tracker.runs("smoke", "evaluate")
        killed_run = tracker.client.get_run(failed[0].user_attrs["mlflow_run_id"])
        assert killed_run.info.status == "FAILED"
        retry_run = tracker.client.get_run(retry.user_attrs["mlflow_run_id"])
        assert retry_run.data.tags["harness.retry_of"] == killed_run.info.run_id
        assert retry_run.data.metrics["train/resumed_from_epoch"] >= 1
        assert sum(r.info.status == "FINISHED" for r in runs) == CELLS
        assert all(r.info.status != "RUNNING" for r in runs)


@pytest.mark.slow
def test_mlflow_server_with_postgres_backend_and_report(tmp_path):
    with postgres_server() as pg, mlflow_server(pg + "mlflow", tmp_path / "artifacts") as url:
        r = subprocess.run(harness_cmd("run", str(SMOKE), "--set", f"output={tmp_path / 'runs'}",
                                       "--set", "encodings=[none, rope_axial]", "--tracking-uri", url,
                                       "--storage", pg + "optuna", "--no-report"),
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "secret" not in r.stdout + r.stderr
        r = subprocess.run(harness_cmd("report", "--experiment", "smoke", "--tracking-uri", url,
                                       "--out", str(tmp_path / "report")),
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        import pandas as pd

        df = pd.read_csv(tmp_path / "report" / "results.csv")
        # 2 seeds x 3 sizes x (none: one variant; rope_axial: the two default policies)
        assert len(df) == 2 * 3 * (1 + 2) and (df.status == "FINISHED").all()
        assert set(df.policy) == {"na", "extrapolate", "interpolate"} and set(df.regime) == {"zoom"}
        html = (tmp_path / "report" / "report.html").read_text()
        assert "secret" not in html


@pytest.mark.slow
def test_workers_logging_one_new_dataset_at_once_on_postgres_all_succeed():
    """Workers that start cells at the same moment each log the study's dataset, new to the
    experiment: MLflow reads, then inserts, so on PostgreSQL one met the other's row and the
    worker died (IntegrityError; the three-worker test above caught it in CI on 2026-12-07). Four
    threads, ten rounds, a new dataset each round, released together by a barrier."""
    import threading

    from harness.study.tracking import Tracker

    threads, rounds = 4, 10
    with postgres_server(databases=("mlflow",)) as pg:
        trackers = [Tracker(pg + "mlflow", "race") for _ in range(threads)]
        barrier, errors, runs = threading.Barrier(threads), [], []

        def work(t: Tracker) -> None:
            for r in range(rounds):
                run_id = t.client.create_run(t.experiment_id).info.run_id
                runs.append(run_id)
                barrier.wait()
                try:
                    t.log_dataset(run_id, "rendered", {"num_train": 100 + r, "num_val": 4, "num_test": 4},
                                  resolution=16, regimes=["zoom"])
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    errors.append(repr(exc)[:300])

        pool = [threading.Thread(target=work, args=(t,)) for t in trackers]
        for p in pool:
            p.start()
        for p in pool:
            p.join(timeout=300)
        assert not errors, errors[:2]
        client = trackers[0].client
        assert len(runs) == threads * rounds
        for run_id in runs:
            assert len(client.get_run(run_id).inputs.dataset_inputs) == 3  # train, val, test
        # one dataset row per (name, digest): the runs of a round share them
        digests = {d.dataset.digest for run_id in runs for d in client.get_run(run_id).inputs.dataset_inputs}
        assert len(digests) == 3 * rounds
