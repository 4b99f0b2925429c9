"""Optuna studies: the optional tune stage and the evaluate stage, on one shared storage.

- evaluate: one trial per cell (encoding, train resolution, seed), enqueued when the study
  is created; workers pop waiting trials until none is left. A re-run enqueues only the cells
  that have no completed, waiting or running trial, so finished cells are never trained
  again, and an interrupted cell continues from its checkpoint.
- tune (optional): per (encoding, train resolution), the same number of trials of a seeded
  TPE sampler over the spec's search space, scored on the validation split, pruned on the
  per-epoch validation accuracy; the best parameters go to the evaluate stage.

The storage and the queue of cells are ``harness.storage``; one trial is ``harness.trial``.
Every trial is an MLflow child run under its stage's parent run. Only :func:`run_study`
(``harness run``, in its main process, after its workers end) closes the parent runs:
FINISHED with the stage's summary metrics, FAILED when the run raises, KILLED on Ctrl-C; it
re-opens them (RUNNING) on a re-run and logs the resolved spec on them (parameters and the
``spec.resolved.json`` artifact). :func:`run_worker` (``harness worker``) never closes a
parent: with ``--workers 0`` the parents stay RUNNING until a later ``harness run`` of the
study (which finds nothing left to train) closes them.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from harness.config import StudySpec, TuneConfig
from harness.errors import HarnessError, redact_url
from harness.files import exclusive_lock
from harness.interrupts import exit_status, handle_interrupts
from harness.schema import (
    EVALUATE,
    O_CELL,
    STAGE_CELLS,
    STAGE_CELLS_DONE,
    STAGE_CELLS_FAILED,
    STAGE_TRIALS_COMPLETE,
    STAGE_TRIALS_FAILED,
    STAGE_TRIALS_PRUNED,
    SPEC_ARTIFACT,
    T_FAIL_REASON,
    T_STUDY,
    TUNE,
    U_ENCODING_NAME,
    U_ENCODING_OPTIONS,
    U_RETRY_OF,
    U_RUN_CLOSED,
    U_MLFLOW_RUN,
    U_SPURIOUS,
    U_WORKER,
    Cell,
)
from harness.spec import SpecError, load_spec
from harness.storage import (
    REAPED_REASON,
    Heartbeat,
    StorageError,
    cell_distributions,
    cell_params,
    enqueue_cells,
    fail_reason,
    failures,
    open_storage,
    open_studies,
    reap_stale,
    reaped,
    repair_runs,
    storage_identity,
    study_names,
    taken,
    trial_cell,
)
from harness.tracking import Tracker, check_reachable
from harness.trial import TrialError, dataset_of, train_one, worker_id

__all__ = ["StorageError", "failed_cells", "run_study", "run_worker", "study_status"]

#: tags of a study's parent runs: the id of the Optuna storage its runs come from, and its URL (redacted)
T_STORAGE_ID = "harness.storage_id"
T_STORAGE = "harness.storage"


# ------------------------------------------------------------------------------ entry points
def run_study(spec_path: str, overrides: list[str], *, workers: int | None = None, storage: str | None = None,
              tracking_uri: str | None = None, progress: bool | None = None) -> StudySpec:
    """Run a whole study: create the storage and studies, then the tune and evaluate stages
    with ``workers`` processes (None: the spec's ``workers``). Returns the resolved spec.

    Opens (or re-opens) each stage's MLflow parent run with the resolved spec, and closes it
    once the workers end: FINISHED with the stage's summary metrics, FAILED when they raise,
    KILLED on Ctrl-C. With ``workers=0`` the parents stay open for ``harness worker`` processes."""
    extra = [f"storage={storage}"] if storage else []
    extra += [f"tracking_uri={tracking_uri}"] if tracking_uri else []
    spec = load_spec(spec_path, [*overrides, *extra])
    dataset_of(spec)  # a missing, corrupt or empty dataset: fail before writing anything
    check_reachable(spec.tracking())  # a tracking server that does not answer: likewise
    if spec.storage:
        # likewise an unreachable database (a server's table-creation race with another run: tried again)
        storage_obj = _retry_races(lambda: open_storage(spec.storage_url(), spec.heartbeat))
    try:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        probe = spec.run_dir / f".write-test-{os.getpid()}"  # its own: two runs started together
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SpecError(f"{spec.source}: key 'output': folder {spec.run_dir} cannot be written ({exc.strerror})") from None
    # two `harness run` of one fresh study started together: the stores, the studies, the parent
    # runs and the queue are created by one while the other waits (SQLite and a shared output
    # folder); server stores retry the schema creation races they report
    with _stores_lock(spec):
        if not spec.storage:
            # retried too: another command (`status`, `worker`) may open the new file at the same time
            storage_obj = _retry_races(lambda: open_storage(spec.storage_url(), spec.heartbeat))
        tracker = _retry_races(lambda: Tracker(spec.tracking(), spec.name))
        studies = _retry_races(lambda: open_studies(spec, storage_obj))
        _check_one_storage(spec, studies, tracker)  # one experiment, the runs of one storage
        resolved_file = spec.run_dir / SPEC_ARTIFACT
        try:
            resolved_file.write_text(json.dumps(spec.resolved, indent=2, default=str))
        except OSError as exc:  # a full disk: one line naming the folder, no half-written file
            with contextlib.suppress(OSError):
                resolved_file.unlink(missing_ok=True)
            from harness.checkpoint import OutputWriteError

            raise OutputWriteError.of(exc, spec.run_dir, f"writing {SPEC_ARTIFACT}") from None
        parents = {}
        for stage in ([TUNE] if spec.tune else []) + [EVALUATE]:
            parents[stage] = tracker.parent_run(spec.name, stage, reopen=True)  # a re-run re-opens it
            tracker.log_params(parents[stage], spec.resolved)
            tracker.log_files(parents[stage], [resolved_file])
            tracker.set_tags(parents[stage], {T_STORAGE_ID: storage_identity(studies[EVALUATE]) or "",
                                              T_STORAGE: redact_url(spec.storage_url())})
        reap_stale(studies[EVALUATE], tracker)
        repair_runs(spec, studies, tracker)  # child runs an earlier interrupted run could not close
        enqueue_cells(studies[EVALUATE], spec.cells(), spec.max_retries)
    args = (spec_path, [*overrides, *extra], progress)
    from harness.devices import assign_devices, resolve_workers, visible_gpus

    # "auto": one worker per GPU on a GPU machine, one single-thread worker per core on a CPU one
    workers = resolve_workers(spec.workers if workers is None else workers, train_device=spec.train.device,
                              cells=len(spec.cells()))
    if workers == 0:  # only create the study: `harness worker` processes do the work (the parents stay open)
        return spec
    procs: list = []  # the worker processes, when there are several
    try:
        if workers == 1:
            run_worker(*args)
        else:
            ctx = mp.get_context("spawn")
            # one process per share of the cores: oversubscribed OpenMP threads slow torch down many times
            threads = max(1, (os.cpu_count() or 1) // workers)
            # each worker its own GPU, round robin over the visible ones (None: the CPU, as before)
            gpus = assign_devices(workers, visible_gpus() if spec.train.device != "cpu" else [])
            procs = [ctx.Process(target=_worker_main, args=(*args, threads, gpus[i]), name=f"harness-worker-{i}")
                     for i in range(workers)]
            with _sigint_ignored():  # they inherit SIGINT ignored: Ctrl-C stops this process, which stops them
                for p in procs:
                    p.start()
            for p in procs:
                p.join()
            bad = [p.exitcode for p in procs if p.exitcode]
            if bad:
                raise HarnessError(f"{len(bad)} of {workers} workers exited with an error (exit codes {bad})")
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        if interrupted:
            _stop_workers(procs, getattr(exc, "signum", signal.SIGINT))
        _repair_quietly(spec, studies, tracker)
        _close_parents(spec, studies, tracker, parents, "KILLED" if interrupted else "FAILED")
        raise
    _repair_quietly(spec, studies, tracker)
    _close_parents(spec, studies, tracker, parents, "FINISHED")
    return spec


def _stop_workers(procs: list, signum: int) -> None:
    """After Ctrl-C or SIGTERM in `harness run`: SIGTERM each worker still alive (they started
    with SIGINT ignored, so only this process sees the terminal's Ctrl-C; SLURM's SIGTERM may
    reach them too, and a worker ignores a second one) and wait while they close their runs
    and fail their trials; a worker still alive after two minutes is killed (the next run
    repairs what it left)."""
    for p in procs:
        if p.is_alive():
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 120
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)


def _repair_quietly(spec: StudySpec, studies: dict[str, optuna.Study], tracker: Tracker) -> None:
    """:func:`repair_runs` while closing: a tracking error never hides the run's own outcome."""
    try:
        repair_runs(spec, studies, tracker)
    except Exception as exc:  # noqa: BLE001
        print(f"warning: could not check the study's runs: {exc}", file=sys.stderr)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes start (they inherit it so)."""
    if not hasattr(signal, "SIGINT") or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _stores_lock(spec: StudySpec) -> Iterator[None]:
    """An exclusive lock on the output folder while ``harness run`` creates or opens the stores,
    the studies and the parent runs, and fills the queue: a second run started at the same time
    (SQLite stores: MLflow's schema migration and Optuna's table creation race) waits for it."""
    with exclusive_lock(spec.run_dir / ".stores.lock"):
        yield


#: what server stores say when two processes create the same schema at once
_RACES = ("already exists", "duplicate", "uniqueviolation", "integrityerror", "alembic", "database is locked",
          "deadlock", "unique constraint")


def _retry_races(make, attempts: int = 6):
    """``make()``, tried again (up to ``attempts`` times, a second or two apart) while it fails
    with a schema-creation race of a server store (another process creating the same tables)."""
    for i in range(attempts):
        try:
            return make()
        except SpecError:  # the user's (a different spec under this name): at once
            raise
        except Exception as exc:  # noqa: BLE001 - HarnessError or the driver's own, re-raised unless a race
            if i == attempts - 1 or not any(r in str(exc).lower() for r in _RACES):
                raise
            time.sleep(1 + i * 0.5)


def _check_one_storage(spec: StudySpec, studies: dict[str, optuna.Study], tracker: Tracker) -> None:
    """Refuse a study whose MLflow experiment already holds its runs from another Optuna storage
    (the same study name run against two storages but one tracking store would train every cell
    again into the one experiment). The parent runs record the storage's id (and its redacted URL)."""
    mine = storage_identity(studies[EVALUATE])
    if not mine:
        return
    for run in tracker.client.search_runs(
            [tracker.experiment_id], filter_string=f"tags.`{T_STORAGE_ID}` != ''", max_results=50):
        tags = run.data.tags
        if tags.get(T_STUDY) == spec.name and tags.get(T_STORAGE_ID) not in (None, "", mine):
            raise SpecError(
                f"{spec.source}: MLflow experiment {spec.name!r} at {redact_url(spec.tracking())} already holds "
                f"the runs of study {spec.name!r} from another Optuna storage ({tags.get(T_STORAGE, '?')}); this "
                f"run's storage is {redact_url(spec.storage_url())}: use another study name (or tracking store), "
                "or the storage the study was run with")


def _close_parents(spec: StudySpec, studies: dict[str, optuna.Study], tracker: Tracker, parents: dict[str, str],
                   status: str) -> None:
    """Log each stage's summary metrics on its parent run and close it: ``status`` for a stage
    that did not complete (a tune stage whose every study spent its budget is FINISHED even
    when the evaluate stage then failed). Tracking errors while closing never hide ``status``'s cause."""
    for stage, run_id in parents.items():
        try:
            summary = _stage_summary(spec, studies, stage)
            tracker.log_metrics(run_id, summary)
            done = status == "FINISHED" or (stage == TUNE and summary[STAGE_TRIALS_COMPLETE]
                                            + summary[STAGE_TRIALS_PRUNED] >= spec.tune.trials * (len(studies) - 1))
            tracker.end(run_id, "FINISHED" if done else status)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome matters more than its parent's bookkeeping
            if status == "FINISHED":
                raise
            print(f"warning: could not close the {stage} parent run {run_id}: {exc}", file=sys.stderr)


def _stage_summary(spec: StudySpec, studies: dict[str, optuna.Study], stage: str) -> dict[str, float]:
    """A stage's summary metrics: evaluate: cells, cells done, cells failed for good;
    tune: trials complete, pruned and failed over every (encoding, train resolution)."""
    if stage == TUNE:
        trials = [t for key, s in studies.items() if key.startswith(TUNE) for t in s.get_trials(deepcopy=False)]
        return {STAGE_TRIALS_COMPLETE: sum(t.state == TrialState.COMPLETE for t in trials),
                STAGE_TRIALS_PRUNED: sum(t.state == TrialState.PRUNED for t in trials),
                STAGE_TRIALS_FAILED: sum(t.state == TrialState.FAIL for t in trials)}
    trials = studies[EVALUATE].get_trials(deepcopy=False)
    cells = spec.cells()
    done = {trial_cell(t) for t in trials if t.state == TrialState.COMPLETE}
    tries = Counter(trial_cell(t) for t in trials if t.state == TrialState.FAIL)
    return {STAGE_CELLS: len(cells), STAGE_CELLS_DONE: sum(c in done for c in cells),
            STAGE_CELLS_FAILED: sum(c not in done and tries[c] > spec.max_retries for c in cells)}


def study_status(spec: StudySpec) -> list[dict[str, str]]:
    """Each cell of the evaluate stage: done, running (which worker, since when), failed (why), waiting."""
    # nothing created for a study that does not exist; another spec under this name is refused,
    # as `run` and `worker` do
    study = open_studies(spec, open_storage(spec.storage_url(), create=False), create=False)[EVALUATE]
    trials = study.get_trials(deepcopy=False)
    rows = []
    for cell in spec.cells():
        mine = [t for t in trials if trial_cell(t) == cell]
        done = [t for t in mine if t.state == TrialState.COMPLETE]
        running = [t for t in mine if t.state == TrialState.RUNNING]
        failed = [t for t in mine if t.state == TrialState.FAIL]
        if done:
            state, detail = "done", f"score {done[-1].value:.4f}"
        elif running:
            t = running[-1]
            state, detail = "running", f"worker {t.user_attrs.get(U_WORKER, '?')} since {t.datetime_start:%Y-%m-%d %H:%M:%S}"
        elif failed and len(failed) > spec.max_retries:
            state, detail = "failed", f"{len(failed)} tries, last: {fail_reason(failed[-1])}"
        else:
            state = "waiting"
            detail = f"after {len(failed)} failed tries, last: {fail_reason(failed[-1])}" if failed else ""
        rows.append({"encoding": cell.encoding, "train_resolution": str(cell.train_resolution),
                     "seed": str(cell.seed), "state": state, "detail": detail})
    return rows


def failed_cells(spec: StudySpec) -> list[tuple[Cell, int, str]]:
    """The cells of the evaluate stage that failed on every try (``max_retries`` + 1 failed
    trials, none completed): (cell, tries, the last try's recorded reason)."""
    storage = open_storage(spec.storage_url())
    trials = optuna.load_study(study_name=study_names(spec)[EVALUATE], storage=storage).get_trials(deepcopy=False)
    out = []
    for cell in spec.cells():
        mine = [t for t in trials if trial_cell(t) == cell]
        failed = [t for t in mine if t.state == TrialState.FAIL]
        if len(failed) > spec.max_retries and not any(t.state == TrialState.COMPLETE for t in mine):
            out.append((cell, len(failed), fail_reason(failed[-1])))
    return out


def _worker_main(spec_path: str, overrides: list[str], progress: bool | None, threads: int,
                 gpu: str | None = None) -> None:
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
    :func:`run_study` (``harness run``) does, once its own workers have ended."""
    spec = load_spec(spec_path, overrides)
    check_reachable(spec.tracking())
    storage = open_storage(spec.storage_url(), spec.heartbeat, create=False)  # no empty file left behind
    studies = open_studies(spec, storage, create=False)  # `run` created them, before any worker started
    tracker = Tracker(spec.tracking(), spec.name)
    _check_one_storage(spec, studies, tracker)  # not into an experiment fed from another storage
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
            _tell_failed(study, trial, f"interrupted: {type(exc).__name__} (before training)"
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
            print(f"warning: {_cell_name(spec, cell)}: the trial failed: {exc.reason}"
                  f"{' (retried)' if len(failures(study, cell)) <= spec.max_retries else ''}", file=sys.stderr)
            continue
        except BaseException as exc:
            beat.stop()  # train_one closed the run as FAILED or KILLED
            reason = (f"interrupted: {type(exc).__name__}" if isinstance(exc, (KeyboardInterrupt, SystemExit))
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
