"""Heartbeats: a running trial's proof of life, and the reaper of the trials whose worker died.

- :class:`Heartbeat` beats for a trial from a thread (Optuna's heartbeat, every
  ``heartbeat`` seconds of the storage);
- :func:`reap_stale` fails the trials silent for three intervals (and those that never beat,
  after the same grace as seen by this process) and closes their MLflow runs, FAILED, with
  the reason :data:`REAPED_REASON`; :func:`reaped` tells a worker that
  its own trial was.

The storage, the stage studies and the queue of cells are :mod:`harness.study.storage`.
"""

from __future__ import annotations

import threading
import time

import optuna
from optuna.trial import TrialState

from harness.schema import T_FAIL_REASON, U_MLFLOW_RUN, U_RUN_CLOSED
from harness.study.tracking import Tracker

__all__ = ["REAPED_REASON", "Heartbeat", "reap_stale", "reaped"]

#: why a trial whose worker stopped sending heartbeats was failed (its worker died, was killed or paused)
REAPED_REASON = "reaped: the heartbeat went stale (the worker died, was killed or paused)"


class Heartbeat:
    """Records a running trial's heartbeat in the storage from a thread while it trains."""

    def __init__(self, storage, study: optuna.Study, trial_number: int) -> None:
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self._stop = threading.Event()
        self._thread = None
        if interval:
            study_id = storage.get_study_id_from_name(study.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial_number)

            def beat() -> None:
                while True:
                    storage.record_heartbeat(trial_id)
                    if self._stop.wait(interval):
                        return

            self._thread = threading.Thread(target=beat, name="harness-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def reap_stale(study: optuna.Study, tracker: Tracker) -> None:
    """Fail the trials whose worker died (no heartbeat), recording why (:data:`REAPED_REASON`),
    and close their MLflow runs as FAILED."""
    storage = study._storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if interval and hasattr(storage, "_get_stale_trial_ids"):
        # optuna.storages.fail_stale_trials, with the reason recorded while the trial can still take it
        stale = storage._get_stale_trial_ids(study._study_id) + _beatless_stale(storage, study._study_id)
        for trial_id in stale:
            try:
                storage.set_trial_user_attr(trial_id, T_FAIL_REASON, REAPED_REASON)
                storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker reaped it, or its own ended it
                pass
    else:
        optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = t.user_attrs.get(U_MLFLOW_RUN)
        if run_id and not t.user_attrs.get(U_RUN_CLOSED):  # only the trials of dead workers
            if tracker.status(run_id) == "RUNNING":
                tracker.set_tags(run_id, {T_FAIL_REASON: REAPED_REASON})
                tracker.end(run_id, "FAILED")


# (database URL, study id, trial id) -> when this process first saw the trial RUNNING without a heartbeat
_BEATLESS_SINCE: dict[tuple[str, int, int], float] = {}


def _beatless_stale(storage, study_id: int) -> list[int]:
    """The RUNNING trials that have never recorded a heartbeat and were seen so by this process
    more than the grace period ago: their worker died between popping the trial and its first
    beat. Optuna's reaper skips a trial without a heartbeat row, so such a trial would stay
    RUNNING for ever, and every other worker would wait for it (the queue never empties).
    Timed by this process's monotonic clock, so workers on machines whose clocks disagree never
    reap a live trial; a live worker beats within milliseconds of the pop."""
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:  # another Optuna layout: only Optuna's own reaper
        return []
    storage = getattr(storage, "_backend", storage)  # Optuna's cache in front of the RDB storage
    if not hasattr(storage, "scoped_session"):
        return []
    grace = storage.grace_period or 2 * storage.heartbeat_interval  # as Optuna's reaper
    with _create_scoped_session(storage.scoped_session) as session:
        beatless = {
            trial_id
            for (trial_id,) in session.query(models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.RUNNING)
            .filter(~models.TrialModel.trial_id.in_(session.query(models.TrialHeartbeatModel.trial_id)))
        }
    now = time.monotonic()
    db = str(storage.engine.url)
    for key in [k for k in _BEATLESS_SINCE if k[:2] == (db, study_id) and k[2] not in beatless]:
        del _BEATLESS_SINCE[key]  # it beat since, or ended
    stale = []
    for trial_id in sorted(beatless):
        since = _BEATLESS_SINCE.setdefault((db, study_id, trial_id), now)
        if now - since > grace:
            stale.append(trial_id)
    return stale


def reaped(storage, trial: optuna.Trial) -> bool:
    """Whether ``trial`` (this worker's own) is no longer RUNNING in the storage: another worker
    failed it while this one was paused or stalled past the heartbeat grace (see :func:`reap_stale`)."""
    return storage.get_trial(trial._trial_id).state != TrialState.RUNNING
