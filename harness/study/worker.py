"""What a worker does (``harness worker``, and each process ``harness run`` starts): every
tune study's budget, then evaluate cells popped from the queue until none is left.

- tune: per (encoding, train resolution), trials of the stage's sampler until the budget of
  completed or pruned trials is spent (:func:`_tune_objective`);
- evaluate: pop a waiting cell, beat for it, train it (:func:`harness.study.trial.train_one`), tell
  Optuna; once the queue is empty, wait for the other workers' running cells, failing those
  whose worker stopped sending heartbeats and queueing them again (:func:`_evaluate_loop`);
- a worker paused past the heartbeat grace, whose trial another worker failed (reaped) and
  retries, drops its result and closes its run FAILED (:class:`_ReapGuard`, :func:`_abandon`).

A worker logs its trials under the stages' parent runs but never closes a parent: only
:func:`harness.study.stages.run_study` does.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from harness.config import StudySpec, TuneConfig
from harness.errors import HarnessError
from harness.files import exclusive_lock
from harness.interrupts import exit_status, handle_interrupts
from harness.schema import (
    EVALUATE,
    O_CELL,
    T_FAIL_REASON,
    TUNE,
    U_ENCODING_NAME,
    U_ENCODING_OPTIONS,
    U_MLFLOW_RUN,
    U_RETRY_OF,
    U_RUN_CLOSED,
    U_SPURIOUS,
    U_WORKER,
    Cell,
)
from harness.spec import load_spec
from harness.study.storage import (
    INTERRUPTED,
    REAPED_REASON,
    cell_distributions,
    cell_params,
    check_one_storage,
    counts_as_try,
    enqueue_cells,
    failures,
    open_storage,
    open_studies,
    study_names,
    taken,
)
from harness.study.heartbeats import Heartbeat, reap_stale, reaped
from harness.study.tracking import Tracker
from harness.study.tracking_uri import check_reachable
from harness.study.trial import TrialError, train_one, worker_id

__all__ = ["TrialReaped", "run_worker", "worker_main"]


# ------------------------------------------------------------------------------ entry points
def worker_main(spec_path: str, overrides: list[str], progress: bool | None, threads: int,
                 gpu: str | None = None) -> None:
    """The entry point of a worker process ``harness run`` starts: its GPU (or none) and its
    threads, then :func:`run_worker`; a user error exits 2, an interruption 130 or 143."""
    from harness.devices import pin_gpu

    pin_gpu(gpu)  # before CUDA starts in this process: the worker sees its one GPU as cuda:0
    torch.set_num_threads(threads)
    try:
        with handle_interrupts():  # SIGTERM from `harness run` (or SLURM): close the runs, exit 143
            run_worker(spec_path, overrides, progress)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as exc:  # the main process says "interrupted"
        raise SystemExit(exit_status(exc)) from None


def run_worker(spec_path: str, overrides: list[str], progress: bool | None = None) -> None:
    """Work on a study until its trials are done: every tune study's budget, then every
    evaluate cell. Plugins named in the spec are loaded again here (``load_spec`` does).
    A worker logs its trials under the stages' parent runs but never closes them: only
    :func:`harness.study.stages.run_study` (``harness run``) does, once its own workers have ended."""
    spec = load_spec(spec_path, overrides)
    check_reachable(spec.tracking())
    storage = open_storage(spec.storage_url(), spec.heartbeat, create=False)  # no empty file left behind
    studies = open_studies(spec, storage, create=False)  # `run` created them, before any worker started
    tracker = Tracker(spec.tracking(), spec.name)
    check_one_storage(spec, studies, tracker)  # not into an experiment fed from another storage
    if spec.tune:
        parent = tracker.parent_run(spec.name, TUNE)
        budget = optuna.study.MaxTrialsCallback(spec.tune.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
        for e in spec.encodings:
            for r in spec.train_resolutions:
                study = studies[f"{TUNE}/{e.label}/r{r}"]
                while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) \
                        < spec.tune.trials:
                    try:
                        study.optimize(lambda t, e=e, r=r: _tune_objective(t, spec, tracker, parent, e.label, r,
                                                                           progress),
                                       callbacks=[budget], catch=())
                    except ValueError as exc:  # "Cannot tell a FAIL trial": reaped while this worker was paused
                        if "Cannot tell a FAIL trial" not in str(exc):
                            raise
                        print(f"warning: {e.label} r{r}: a tuning trial was failed while this worker was paused "
                              "(its heartbeat went stale): result abandoned", file=sys.stderr)
    parent = tracker.parent_run(spec.name, EVALUATE)
    _evaluate_loop(studies[EVALUATE], storage, spec, tracker, parent, progress)


def _evaluate_loop(study: optuna.Study, storage, spec: StudySpec, tracker: Tracker, parent: str,
                   progress: bool | None) -> None:
    """Pop waiting cells until none is left; then wait for the other workers' running cells,
    failing those whose worker stopped sending heartbeats and enqueueing them again (up to
    ``max_retries``), so that the study ends with every cell completed exactly once."""
    cells = spec.cells()
    dist = cell_distributions(cells)
    while True:
        reap_stale(study, tracker)
        enqueue_cells(study, cells, spec.max_retries)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return
            time.sleep(min(spec.heartbeat, 2))  # another worker's cell: wait until it ends or goes stale
            continue
        with _pop_lock(spec):
            trial = study.ask(dist)
        cell = Cell.parse(trial.params[O_CELL]) if "encoding" in trial.user_attrs else None
        if cell is None or taken(study, trial.number, cell) or not _has_cell_params(trial, cell):
            # not an enqueued cell (another worker took the last one), or a cell someone else
            # completes or runs: never train a cell twice. Or a cell queued by a version before
            # the real parameters (only `cell`): Optuna drew the others at random, so it is
            # queued again with them (enqueue_cells, next round) for the dashboards to be right
            trial.set_user_attr(U_SPURIOUS, True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        # from here the trial is this worker's: it beats at once (a RUNNING trial without a heartbeat
        # would never go stale), and an interruption fails it at once (no waiting for the reaper)
        beat = Heartbeat(storage, study, trial.number)
        try:
            trial.set_user_attr(U_WORKER, worker_id())
            enc = spec.encoding(cell.encoding)
            trial.set_user_attr(U_ENCODING_NAME, enc.name)
            trial.set_user_attr(U_ENCODING_OPTIONS, json.dumps(enc.options, sort_keys=True, default=str))
            failed = failures(study, cell)
            if failed:
                trial.set_user_attr(U_RETRY_OF, failed[-1].number)  # the link in Optuna (MLflow: a tag)
            params = _best_params(spec, storage, cell)
        except BaseException as exc:
            beat.stop()
            _tell_failed(study, trial, f"{INTERRUPTED}{type(exc).__name__} (before training)"
                         if isinstance(exc, KeyboardInterrupt) else f"error: {type(exc).__name__}: {exc}"[:500],
                         run_closed=True)
            raise
        guard = _ReapGuard(tracker, storage, trial)  # a reaped trial's run is never closed FINISHED
        try:
            value = train_one(spec, cell, stage=EVALUATE, tracker=guard, parent=parent, trial=trial,
                              overrides=params, progress=progress)
        except optuna.exceptions.UpdateFinishedTrialError:  # reaped while this worker was paused
            beat.stop()
            if not reaped(storage, trial):
                raise
            _abandon(spec, study, cell, trial, guard)
            continue
        except TrialError as exc:
            beat.stop()
            if not _tell_failed(study, trial, exc.reason, run_closed=True):
                _abandon(spec, study, cell, trial, guard)
                continue
            retried = sum(map(counts_as_try, failures(study, cell))) <= spec.max_retries
            print(f"warning: {_cell_name(spec, cell)}: the trial failed: {exc.reason}{' (retried)' if retried else ''}",
                  file=sys.stderr)
            continue
        except BaseException as exc:
            beat.stop()  # train_one closed the run as FAILED or KILLED
            reason = (f"{INTERRUPTED}{type(exc).__name__}" if isinstance(exc, (KeyboardInterrupt, SystemExit))
                      else str(exc) if isinstance(exc, HarnessError) else f"error: {type(exc).__name__}: {exc}")
            _tell_failed(study, trial, reason[:500], run_closed=True)
            raise
        beat.stop()
        try:
            if reaped(storage, trial):  # paused after training (or while closing its run): another worker retries
                raise optuna.exceptions.UpdateFinishedTrialError("reaped")
            study.tell(trial, value)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # ValueError: "Cannot tell a FAIL trial"
            if not reaped(storage, trial):
                raise
            _abandon(spec, study, cell, trial, guard)


class TrialReaped(optuna.exceptions.UpdateFinishedTrialError):
    """This worker's trial was failed by another worker (its heartbeat went stale while this one
    was paused or stalled): its result must not be reported."""


class _ReapGuard:
    """The tracker a trial logs through (everything delegated to the real one), except that the
    trial's run is closed FINISHED only while the trial is still RUNNING in the storage: a worker
    paused past the heartbeat grace, whose cell another worker now retries, raises
    :class:`TrialReaped` instead, and never leaves a second FINISHED run for one cell."""

    def __init__(self, tracker: Tracker, storage, trial: optuna.Trial) -> None:
        self._tracker, self._storage, self._trial = tracker, storage, trial
        self.run_id: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)

    def child_run(self, *args: Any, **kwargs: Any) -> str:
        self.run_id = self._tracker.child_run(*args, **kwargs)
        return self.run_id

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        if status == "FINISHED" and run_id == self.run_id and reaped(self._storage, self._trial):
            raise TrialReaped(f"trial {self._trial.number} was failed by another worker (reaped)")
        self._tracker.end(run_id, status)


def _tell_failed(study: optuna.Study, trial: optuna.Trial, reason: str, *, run_closed: bool) -> bool:
    """Fail this worker's ``trial`` with ``reason``; False when it had already been failed
    (reaped by another worker while this one was paused)."""
    try:
        trial.set_user_attr(T_FAIL_REASON, reason)
        if run_closed:
            trial.set_user_attr(U_RUN_CLOSED, True)
        study.tell(trial, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        if reaped(study._storage, trial):
            return False
        raise
    return True


def _abandon(spec: StudySpec, study: optuna.Study, cell: Cell, trial: optuna.Trial, guard: _ReapGuard) -> None:
    """This worker's trial was reaped while it was paused: drop its result, close its run as
    FAILED (reason: reaped), say so in one line, and move on. The checkpoint is the retry's
    now; it is removed only when the cell is already completed."""
    _close_reaped_run(guard, guard.run_id or study._storage.get_trial(trial._trial_id).user_attrs.get(U_MLFLOW_RUN))
    print(f"warning: {_cell_name(spec, cell)}: trial {trial.number} was failed while this worker was paused "
          "(its heartbeat went stale) and another worker retries the cell: result abandoned", file=sys.stderr)
    if taken(study, -1, cell):  # completed by the retry (a paused worker may have written the file again)
        (spec.run_dir / "checkpoints" / EVALUATE / f"{cell.tag}.pt").unlink(missing_ok=True)


def _close_reaped_run(guard: _ReapGuard, run_id: str | None) -> None:
    """Close the run of a reaped trial as FAILED (reason: reaped): also a run closed FINISHED
    just before its trial was found reaped; one that training already failed is left as it is."""
    if not run_id:
        return
    try:
        if guard.status(run_id) != "FAILED":
            guard.set_tags(run_id, {T_FAIL_REASON: REAPED_REASON})
            guard.end(run_id, "FAILED")
    except Exception as exc:  # noqa: BLE001 - the next run's repair closes it
        print(f"warning: could not close run {run_id}: {exc}", file=sys.stderr)


def _cell_name(spec: StudySpec, cell: Cell) -> str:
    return f"cell {cell.encoding} r{cell.train_resolution} seed {cell.seed}"


def _has_cell_params(trial: optuna.Trial, cell: Cell) -> bool:
    """Whether a popped trial's parameters are its cell's (every one of :func:`cell_params`)."""
    return all(trial.params.get(k) == v for k, v in cell_params(cell).items())


@contextlib.contextmanager
def _pop_lock(spec: StudySpec) -> Iterator[None]:
    """Hold an exclusive lock while popping a waiting trial from a SQLite storage. Optuna claims
    a waiting trial with SELECT ... FOR UPDATE, which SQLite ignores: two worker processes can
    both read the trial as WAITING and both set it RUNNING, and then train the same cell
    (seen with two workers: "Cannot tell a COMPLETE trial"). A SQLite file lives on one
    machine, so a file lock beside it serialises the pops; a server database needs none."""
    url = spec.storage_url()
    if not url.startswith("sqlite:///"):
        yield
        return
    with exclusive_lock(spec.run_dir / ".queue.lock"):
        yield


def _best_params(spec: StudySpec, storage, cell: Cell) -> dict[str, Any]:
    """The tuned training parameters of the cell's (encoding, resolution), or none without a tune stage."""
    if not spec.tune:
        return {}
    name = study_names(spec)[f"{TUNE}/{cell.encoding}/r{cell.train_resolution}"]
    study = optuna.load_study(study_name=name, storage=storage)
    try:
        return {k.partition(".")[2]: v for k, v in study.best_params.items()}
    except ValueError:  # no completed tuning trial: the recipe as written
        return {}


def _suggest(trial: optuna.Trial, tune: TuneConfig) -> dict[str, Any]:
    """Training parameters for a tuning trial, drawn from the search space."""
    params = {}
    for key, d in tune.space.items():
        name = key.partition(".")[2]
        if "choices" in d:
            params[name] = trial.suggest_categorical(key, d["choices"])
        elif isinstance(d["low"], int) and isinstance(d["high"], int) and not d.get("log"):
            params[name] = trial.suggest_int(key, d["low"], d["high"])
        else:
            params[name] = trial.suggest_float(key, float(d["low"]), float(d["high"]), log=bool(d.get("log")))
    if tune.epochs:
        params["epochs"] = tune.epochs
    return params


def _tune_objective(trial: optuna.Trial, spec: StudySpec, tracker: Tracker, parent: str, label: str, res: int,
                    progress: bool | None) -> float:
    params = _suggest(trial, spec.tune)
    cell = Cell(label, res, spec.tune.seed * 1000 + trial.number)
    guard = _ReapGuard(tracker, trial.study._storage, trial)  # a reaped trial's run is never closed FINISHED
    try:
        return train_one(spec, cell, stage=TUNE, tracker=guard, parent=parent, trial=trial, overrides=params,
                         progress=progress)
    except optuna.exceptions.UpdateFinishedTrialError:  # reaped while this worker was paused: see run_worker
        _close_reaped_run(guard, guard.run_id)
        raise optuna.TrialPruned(REAPED_REASON) from None
    except TrialError as exc:
        trial.set_user_attr(T_FAIL_REASON, exc.reason)
        raise optuna.TrialPruned(exc.reason) from None
    except HarnessError as exc:  # a full disk: the trial FAILs (Optuna) with the reason, the run stops
        trial.set_user_attr(T_FAIL_REASON, str(exc))
        raise
