"""Optuna studies: the optional tune stage and the evaluate stage, on one shared storage.

- evaluate: one trial per cell (encoding, train resolution, seed), enqueued when the study
  is created; workers pop waiting trials until none is left. A re-run enqueues only the cells
  that have no completed, waiting or running trial, so finished cells are never trained
  again, and an interrupted cell continues from its checkpoint.
- tune (optional): per (encoding, train resolution), the same number of trials of a seeded
  TPE sampler over the spec's search space, scored on the validation split, pruned on the
  per-epoch validation accuracy; the best parameters go to the evaluate stage.

The storage and the queue of cells are ``harness.study.storage``; what a worker does is
``harness.study.worker``; one trial is ``harness.study.trial``.
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
from collections.abc import Iterator

import optuna
from optuna.trial import TrialState

from harness.config import StudySpec
from harness.spec.design import design_warnings
from harness.errors import HarnessError, redact_url
from harness.files import exclusive_lock
from harness.schema import (
    EVALUATE,
    STAGE_CELLS,
    STAGE_CELLS_DONE,
    STAGE_CELLS_FAILED,
    STAGE_TRIALS_COMPLETE,
    STAGE_TRIALS_FAILED,
    STAGE_TRIALS_PRUNED,
    STAGE_WALL_S,
    STAGE_WORKERS,
    SPEC_ARTIFACT,
    T_STORAGE,
    T_STORAGE_ID,
    TUNE,
    U_WORKER,
    Cell,
)
from harness.spec import SpecError, load_spec
from harness.study.storage import (
    StorageError,
    check_one_storage,
    counts_as_try,
    enqueue_cells,
    fail_reason,
    failed_tries,
    open_storage,
    open_studies,
    repair_runs,
    storage_identity,
    study_names,
    trial_cell,
)
from harness.study.heartbeats import reap_stale
from harness.study.tracking import Tracker
from harness.study.tracking_uri import check_reachable
from harness.study.trial import dataset_of
from harness.study.worker import run_worker, worker_main

__all__ = ["StorageError", "design_warnings", "failed_cells", "run_study", "study_status"]



# ------------------------------------------------------------------------------ entry points
def run_study(spec_path: str, overrides: list[str], *, workers: int | None = None, storage: str | None = None,
              tracking_uri: str | None = None, progress: bool | None = None) -> StudySpec:
    """Run a whole study: create the storage and studies, then the tune and evaluate stages
    with ``workers`` processes (None: the spec's ``workers``). Returns the resolved spec.

    Opens (or re-opens) each stage's MLflow parent run with the resolved spec, and closes it
    once the workers end: FINISHED with the stage's summary metrics, FAILED when they raise,
    KILLED on Ctrl-C. With ``workers=0`` the parents stay open for ``harness worker`` processes."""
    started = time.monotonic()  # the stage's wall time, logged on its parent run when it closes
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
        check_one_storage(spec, studies, tracker)  # one experiment, the runs of one storage
        resolved_file = spec.run_dir / SPEC_ARTIFACT
        try:
            resolved_file.write_text(json.dumps(spec.resolved, indent=2, default=str))
        except OSError as exc:  # a full disk: one line naming the folder, no half-written file
            with contextlib.suppress(OSError):
                resolved_file.unlink(missing_ok=True)
            from harness.training.checkpoint import OutputWriteError

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
    for line in design_warnings(spec):  # once everything checked out: never beside an error's one line
        print(f"warning: {line}", file=sys.stderr)
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
            procs = [ctx.Process(target=worker_main, args=(*args, threads, gpus[i]), name=f"harness-worker-{i}")
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
        _close_parents(spec, studies, tracker, parents, "KILLED" if interrupted else "FAILED",
                       wall={STAGE_WALL_S: time.monotonic() - started, STAGE_WORKERS: workers})
        raise
    _repair_quietly(spec, studies, tracker)
    _close_parents(spec, studies, tracker, parents, "FINISHED",
                   wall={STAGE_WALL_S: time.monotonic() - started, STAGE_WORKERS: workers})
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


def _close_parents(spec: StudySpec, studies: dict[str, optuna.Study], tracker: Tracker, parents: dict[str, str],
                   status: str, wall: dict[str, float] | None = None) -> None:
    """Log each stage's summary metrics on its parent run and close it: ``status`` for a stage
    that did not complete (a tune stage whose every study spent its budget is FINISHED even
    when the evaluate stage then failed). ``wall``: this run's wall time and worker count, logged
    on the evaluate parent (the report sets the runs' summed time against it). Tracking errors
    while closing never hide ``status``'s cause."""
    for stage, run_id in parents.items():
        try:
            summary = _stage_summary(spec, studies, stage)
            tracker.log_metrics(run_id, {**summary, **(wall or {})} if stage == EVALUATE else summary)
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
    tries = failed_tries(trials)
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
        stopped = [t for t in mine if t.state == TrialState.FAIL]  # failed tries and interruptions
        failed = [t for t in stopped if counts_as_try(t)]
        if done:
            state, detail = "done", f"score {done[-1].value:.4f}"
        elif running:
            t = running[-1]
            state, detail = "running", f"worker {t.user_attrs.get(U_WORKER, '?')} since {t.datetime_start:%Y-%m-%d %H:%M:%S}"
        elif len(failed) > spec.max_retries:
            state, detail = "failed", f"{len(failed)} tries, last: {fail_reason(failed[-1])}"
        else:
            state, breaks = "waiting", len(stopped) - len(failed)
            detail = (f"after {len(failed)} failed tries{f' and {breaks} interruptions' if breaks else ''}, "
                      f"last: {fail_reason(stopped[-1])}") if stopped else ""
        rows.append({"encoding": cell.encoding, "train_resolution": str(cell.train_resolution),
                     "seed": str(cell.seed), "state": state, "detail": detail})
    return rows


def failed_cells(spec: StudySpec) -> list[tuple[Cell, int, str]]:
    """The cells of the evaluate stage that failed on every try (``max_retries`` + 1 failed
    trials, interruptions not counted, none completed): (cell, tries, the last try's recorded reason)."""
    storage = open_storage(spec.storage_url())
    trials = optuna.load_study(study_name=study_names(spec)[EVALUATE], storage=storage).get_trials(deepcopy=False)
    out = []
    for cell in spec.cells():
        mine = [t for t in trials if trial_cell(t) == cell]
        failed = [t for t in mine if counts_as_try(t)]
        if len(failed) > spec.max_retries and not any(t.state == TrialState.COMPLETE for t in mine):
            out.append((cell, len(failed), fail_reason(failed[-1])))
    return out
