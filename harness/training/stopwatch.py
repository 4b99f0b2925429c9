"""Where a run's wall time goes: a stopwatch of named, exclusive phases (torch-free).

A training run logs its breakdown as MLflow metrics ``time/<phase>_s``
(:func:`harness.schema.time_metric`): the seconds spent in each phase of :data:`PHASES`, the
run's total and what no phase covers (``other``). Phases nest without counting twice: time
spent in an inner phase is the inner phase's alone, and the outer phase's clock stops until
the inner one ends (a tracking call made from inside the training loop is tracking, not
training). The report adds the runs' breakdowns into the study's totals.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["OTHER", "PHASES", "TOTAL", "Stopwatch", "TimedTracker"]

#: the phases of a run, in the order a report lists them
PHASES: tuple[str, ...] = (
    "setup",  # building the dataset object and the model, seeding, the optimizer
    "data",  # rendering or loading the splits the run asks for (train, val, every test size)
    "train_steps",  # the optimisation steps
    "validation",  # the per-epoch validation
    "test_eval_zoom",  # the test sizes of the zoom regime, every variant
    "test_eval_canvas",  # ... of the canvas regime
    "checkpoints",  # writing (and removing) the per-epoch checkpoint
    "artifacts",  # the run's files in MLflow: the resolved spec, the kept model
    "tracking",  # every other MLflow and Optuna call: runs, params, metrics, tags, reports
)
TOTAL = "total"
OTHER = "other"


class Stopwatch:
    """Seconds per phase of one run. ``with sw.phase("data"): ...`` times a phase; phases nest
    exclusively (the innermost running phase gets the time). ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.started = clock()
        self._stack: list[tuple[str, float]] = []  # (phase, when its clock last (re)started)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in self.seconds:
            raise ValueError(f"unknown phase {name!r}: the phases are {', '.join(PHASES)}")
        now = self.clock()
        if self._stack:  # the outer phase stops while this one runs
            outer, since = self._stack[-1]
            self.seconds[outer] += now - since
        self._stack.append((name, now))
        try:
            yield
        finally:
            now = self.clock()
            _, since = self._stack.pop()
            self.seconds[name] += now - since
            if self._stack:
                outer, _ = self._stack[-1]
                self._stack[-1] = (outer, now)

    def total(self) -> float:
        """Seconds since the stopwatch was made."""
        return self.clock() - self.started

    def breakdown(self) -> dict[str, float]:
        """Every phase's seconds, then the total and what no phase covers (``other``, >= 0)."""
        total = self.total()
        return {**self.seconds, TOTAL: total, OTHER: max(0.0, total - sum(self.seconds.values()))}


class TimedTracker:
    """A tracker whose every call is timed as ``tracking`` (files: ``artifacts``) on a stopwatch;
    everything else passes through to the tracker it wraps."""

    _FILES = frozenset({"log_text", "log_model", "log_files", "log_report"})

    def __init__(self, tracker: Any, stopwatch: Stopwatch) -> None:
        self._tracker, self._stopwatch = tracker, stopwatch

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._tracker, name)
        if not callable(value) or name.startswith("_"):
            return value
        phase = "artifacts" if name in self._FILES else "tracking"

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._stopwatch.phase(phase):
                return value(*args, **kwargs)

        return timed
