"""The GPU check's arithmetic, pure and tested by hand (:mod:`harness.bench.gpu_check` runs the
check): model FLOP utilisation (:func:`mfu`), one cell's seconds from the measured step and
evaluation times (:func:`cell_seconds`, with the test passes of :func:`study_evaluations`), the
whole study's wall time over the workers (:func:`project_study`) and the verdict on whether
``train.compile`` trains the same (:func:`compare_accuracy`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ACC_TOLERANCE", "TRAINED_MARGIN", "cell_seconds", "compare_accuracy", "mfu", "project_study",
           "study_evaluations"]

#: least accuracy difference that counts as "not the same" whatever the sample size (absolute)
ACC_TOLERANCE = 0.03
#: above chance by at least this much: the run trained (otherwise the comparison says nothing)
TRAINED_MARGIN = 0.10


def mfu(flops_per_step: float, step_s: float, peak_flops_per_s: float) -> float | None:
    """Model FLOP utilisation: achieved FLOP/s (``flops_per_step / step_s``) over the peak; None
    when either time or peak is not positive."""
    if step_s <= 0 or peak_flops_per_s <= 0:
        return None
    return flops_per_step / step_s / peak_flops_per_s


def cell_seconds(*, epochs: int, num_train: int, batch_size: int, step_s: float, num_val: int, num_test: int,
                 eval_s_per_image: Mapping[str, float], train_size: str,
                 test_evaluations: Mapping[str, int]) -> float:
    """Seconds one cell takes: ``epochs`` x ``num_train // batch_size`` training steps (the last
    partial batch is dropped, as the trainer does), one validation pass per epoch at the
    training size, and ``test_evaluations[size]`` passes over the test split at each size (one
    per evaluation variant whose regime tests that size). Rendering the data and building the
    model are not counted (seconds, against hours)."""
    train = epochs * (num_train // batch_size) * step_s
    val = epochs * num_val * eval_s_per_image[train_size]
    test = sum(n * num_test * eval_s_per_image[size] for size, n in test_evaluations.items())
    return train + val + test


def study_evaluations(regimes: Sequence[str], sizes: Mapping[str, Sequence[str]], policies: int,
                      temperatures: int) -> dict[str, int]:
    """Test passes per size label of one cell: each regime's sizes, once per (policy, temperature)
    variant (``policies``: the study's policies the encoding has, 1 when it has no choice)."""
    out: Counter[str] = Counter()
    for r in regimes:
        for s in sizes[r]:
            out[s] += max(1, policies) * temperatures
    return dict(out)


def project_study(cells: Mapping[str, dict[str, Any]], seeds: int, workers: int) -> dict[str, Any]:
    """The study's wall time from each encoding's cell time (``cells[label]["cell_s"]``), ``seeds``
    cells per encoding, spread over ``workers`` (one per GPU). The cells are whole: the wall
    time is at least the longest cell, and at least the total over the workers; the greedy
    longest-first schedule (what the study's queue does when the slow cells come first) gives
    the figure."""
    durations = sorted((c["cell_s"] for c in cells.values() for _ in range(seeds)), reverse=True)
    loads = [0.0] * max(1, workers)
    for d in durations:
        i = loads.index(min(loads))
        loads[i] += d
    total = sum(durations)
    return {"cells": len(durations), "workers": max(1, workers), "total_cell_s": total, "wall_s": max(loads),
            "lower_bound_s": max(total / max(1, workers), durations[0] if durations else 0.0)}


def compare_accuracy(eager: float, compiled: float, *, chance: float, n: int) -> dict[str, Any]:
    """Whether two trainings that differ only in ``train.compile`` reach the same accuracy.

    The tolerance is the larger of ``ACC_TOLERANCE`` and 3 standard deviations of the difference
    of two binomial proportions of ``n`` images each (compiled kernels round differently, so
    the two runs part ways after a few steps, like two nearby seeds: a small gap is noise).
    PASS: within it and at least one run trained (``TRAINED_MARGIN`` above ``chance``);
    INCONCLUSIVE: neither trained (both near chance: equal, but it says nothing); FAIL otherwise."""
    p = min(max((eager + compiled) / 2, 1e-6), 1 - 1e-6)
    tol = max(ACC_TOLERANCE, 3 * math.sqrt(2 * p * (1 - p) / max(n, 1)))
    diff = compiled - eager
    trained = max(eager, compiled) >= chance + TRAINED_MARGIN
    verdict = "FAIL" if abs(diff) > tol else "PASS" if trained else "INCONCLUSIVE"
    return {"eager": eager, "compiled": compiled, "diff": diff, "tolerance": tol, "chance": chance,
            "trained": trained, "verdict": verdict}
