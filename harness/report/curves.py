"""The learning-curve check of a report: which runs "had not converged" when their training ended.

A ranking of runs whose validation accuracy was still rising when the budget ran out is a
statement about the budget, not about the encodings (DESIGN 9, "cannot" is not "not yet").
Every run logs its validation accuracy per epoch (:data:`harness.schema.VAL_ACC`, step = the
epoch) on a validation split of ``n_val`` images (:data:`harness.schema.VAL_IMAGES`; for runs
logged before it, the dataset's ``num_val`` run parameter). The check, per run:

- the **window** is k = max(2, epochs // 4) epochs: the last quarter of training, and never a
  single epoch (one epoch's accuracy is one noisy draw);
- the run is **still rising** when the mean validation accuracy of its last k epochs exceeds
  the mean of the k epochs before them by more than two binomial standard errors of one
  validation accuracy, 2 * sqrt(p (1 - p) / n_val), p the mean of those 2k epochs: it is
  flagged :data:`NOT_CONVERGED`;
- with fewer than 2k epochs, or no known ``n_val``, there is nothing to compare: the run is
  :data:`CANNOT_TELL`, never flagged; otherwise it is :data:`CONVERGED` (levelled off, or
  falling).

Why this threshold: sqrt(p (1 - p) / n_val) is the sampling error with which ``n_val`` images
measure a model's accuracy, so a rise below two of them is one the validation split cannot tell
from the luck of its draw. It is a single accuracy's error, not the (smaller) error of a
difference of two k-epoch means: the k epochs of a window score the same images with weights a
few hundred steps apart, so their errors are not independent and averaging them does not shrink
the error by sqrt(k). Were they independent, the difference of the two means would have the
standard error sqrt(2 / k) times a single one, at most one for k >= 2, so the threshold is at
least two of its standard errors: a flag needs a rise the split can see, and a run that jitters
within its noise is not flagged. A model still improving more slowly than that per quarter of
its training is, for this check, converged: it is a test of "the budget cut a visible rise
short", not of having reached the optimum.

Pure functions of the report's curve table (``encoding, train_resolution, seed, epoch, val_acc,
run_id``) and its results table (``run_id``, ``val_images``, ``status``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["CANNOT_TELL", "CONVERGED", "CONVERGENCE_COLUMNS", "NOT_CONVERGED", "curve_check", "convergence",
           "convergence_counts", "convergence_text", "check_note", "not_converged", "window"]

NOT_CONVERGED = "had not converged"
CONVERGED = "converged"
CANNOT_TELL = "cannot tell"
#: how many binomial standard errors a rise must exceed to count
STANDARD_ERRORS = 2.0
#: the per-run table of :func:`convergence`
CONVERGENCE_COLUMNS = ["encoding", "train_resolution", "seed", "run_id", "epochs", "window", "n_val", "previous_mean",
                       "last_mean", "rise", "threshold", "status", "reason"]


def window(epochs: int) -> int:
    """The number of epochs k each mean of the check covers: max(2, epochs // 4)."""
    return max(2, int(epochs) // 4)


def curve_check(val_acc: Sequence[float], n_val: float | None) -> dict:
    """The check of one run's validation accuracies, in epoch order (see the module's docstring):
    ``epochs``, ``window`` (k), ``previous_mean`` and ``last_mean`` (the two k-epoch means),
    ``rise`` (their difference), ``threshold`` (2 * sqrt(p (1 - p) / n_val)), ``status`` and,
    for :data:`CANNOT_TELL`, the ``reason``."""
    acc = np.asarray([v for v in val_acc if not math.isnan(float(v))], dtype=float)
    k = window(len(acc))
    out = {"epochs": len(acc), "window": k, "n_val": n_val, "previous_mean": math.nan, "last_mean": math.nan,
           "rise": math.nan, "threshold": math.nan, "status": CANNOT_TELL, "reason": ""}
    if len(acc) < 2 * k:
        return {**out, "reason": f"{len(acc)} epoch(s), fewer than the {2 * k} of two windows of {k}"}
    previous, last = float(acc[-2 * k:-k].mean()), float(acc[-k:].mean())
    out.update(previous_mean=previous, last_mean=last, rise=last - previous)
    if n_val is None or not n_val > 0 or math.isnan(float(n_val)):
        return {**out, "reason": "the validation split's size is unknown"}
    p = (previous + last) / 2.0
    threshold = STANDARD_ERRORS * math.sqrt(p * (1.0 - p) / float(n_val))
    return {**out, "threshold": threshold, "status": NOT_CONVERGED if last - previous > threshold else CONVERGED}


def convergence(curves: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """One row per FINISHED run of ``results`` (:data:`CONVERGENCE_COLUMNS`): its learning curve
    (the rows of ``curves`` with its ``run_id``; an epoch logged twice counts once, its last
    value) checked by :func:`curve_check` against its ``val_images``. A run without a curve has 0
    epochs: :data:`CANNOT_TELL`. Sorted by encoding, train_resolution, seed, run_id."""
    fin = results.loc[results["status"] == "FINISHED"]
    if fin.empty:
        return pd.DataFrame(columns=CONVERGENCE_COLUMNS)
    n_val = fin["val_images"] if "val_images" in fin.columns else pd.Series(math.nan, index=fin.index)
    runs = fin.assign(n_val_=pd.to_numeric(n_val, errors="coerce")).drop_duplicates("run_id")
    if "run_id" in curves.columns and len(curves):
        curves = curves.dropna(subset=["run_id", "val_acc"]).sort_values(["run_id", "epoch"], kind="stable")
        curves = curves.drop_duplicates(["run_id", "epoch"], keep="last")
        by_run = {k: g["val_acc"].to_numpy(dtype=float) for k, g in curves.groupby("run_id", sort=False)}
    else:
        by_run = {}
    rows = []
    for r in runs.itertuples(index=False):
        n = None if pd.isna(r.n_val_) else float(r.n_val_)
        rows.append({"encoding": r.encoding, "train_resolution": int(r.train_resolution), "seed": int(r.seed),
                     "run_id": r.run_id, **curve_check(by_run.get(r.run_id, []), n)})
    out = pd.DataFrame(rows, columns=CONVERGENCE_COLUMNS)
    return out.sort_values(["encoding", "train_resolution", "seed", "run_id"], ignore_index=True)


def convergence_counts(conv: pd.DataFrame) -> pd.DataFrame:
    """Per (encoding, train_resolution) of :func:`convergence`: ``n_runs``, ``n_not_converged``
    and ``n_cannot_tell``."""
    columns = ["encoding", "train_resolution", "n_runs", "n_not_converged", "n_cannot_tell"]
    if conv.empty:
        return pd.DataFrame(columns=columns)
    out = conv.groupby(["encoding", "train_resolution"], as_index=False, sort=True).agg(
        n_runs=("run_id", "nunique"), n_not_converged=("status", lambda s: int((s == NOT_CONVERGED).sum())),
        n_cannot_tell=("status", lambda s: int((s == CANNOT_TELL).sum())))
    return out[columns]


def not_converged(conv: pd.DataFrame) -> pd.DataFrame:
    """The runs of :func:`convergence` that had not converged, as the report lists them."""
    columns = ["encoding", "train_resolution", "seed", "epochs", "window", "previous_mean", "last_mean", "rise",
               "threshold", "run_id"]
    return conv.loc[conv["status"] == NOT_CONVERGED, columns].reset_index(drop=True)


def check_note(conv: pd.DataFrame) -> str:
    """The check in words, with its counts over the runs of :func:`convergence`."""
    flagged, unknown = int((conv["status"] == NOT_CONVERGED).sum()), int((conv["status"] == CANNOT_TELL).sum())
    return (f"Validation accuracy still rising when training ended: the mean of a run's last k epochs (k = max(2, "
            f"epochs // 4)) exceeds the mean of the k before them by more than {STANDARD_ERRORS:g} binomial "
            "standard errors of one validation accuracy, sqrt(p (1 − p) / n_val) (p: the mean of those 2k epochs, "
            "n_val: the validation images). Such a run was cut short by the budget: its encoding's place in a "
            f"ranking says how far it got, not how far it can go. {flagged} of {len(conv)} finished run(s) had "
            f"not converged; {unknown} cannot tell (fewer than 2k epochs, or no known validation size). Every run's "
            "check is in convergence.csv.")


def convergence_text(n_runs: int, n_not: int, n_cannot: int) -> str:
    """An encoding's count as a cell reads it: ``1 of 3 runs``, ``0 of 3 runs``, ``cannot tell
    (3 runs)``, ``0 of 2 runs (1 cannot tell)``."""
    if n_runs == 0:
        return "–"
    if n_cannot == n_runs:
        return f"cannot tell ({n_runs} run{'s' if n_runs != 1 else ''})"
    told = n_runs - n_cannot
    return f"{n_not} of {told} run{'s' if told != 1 else ''}" + (f" ({n_cannot} cannot tell)" if n_cannot else "")
