"""The tidy results table's common ground, under every statistic of :mod:`harness.report.stats`
(and of :mod:`harness.report.selection` and :mod:`harness.report.comparisons`): which rows count
(:func:`tested_rows`: FINISHED, with an accuracy; :func:`per_seed`: of runs that trained, one per
cell and seed), a cell's key (:data:`CELL`) and labels (:func:`variant_label`, the size label,
:func:`side` of the training size), and the interval every statistic gives
(:func:`t_interval`, :func:`interval_stats`, :data:`INTERVAL_METHOD`). The table itself
and the conventions are told in :mod:`harness.report.stats`, which re-exports these names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from harness.schema import NO_POLICY, Size

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CELL",
    "CELL_OUT",
    "CONFIDENCE",
    "FINISHED",
    "INTERVAL_METHOD",
    "VARIANT",
    "cell_columns",
    "finished",
    "interval_stats",
    "per_seed",
    "require",
    "side",
    "t_interval",
    "tested_rows",
    "variant_label",
]

FINISHED = "FINISHED"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
#: how every interval of the report is computed, in words (the report prints it next to them)
INTERVAL_METHOD = ("95% Student-t interval of the mean over seeds (mean ± t(0.975, n - 1) · sd / √n, cut to the "
                   "values' possible range; runs that did not train left out)")

VARIANT = ["encoding", "policy", "temperature"]
#: a cell's key, in sort order (the size by its numbers, not by its label)
CELL = ["regime", *VARIANT, "train_resolution", "test_rows", "test_cols"]
#: the columns a cell's row shows
CELL_OUT = ["regime", "variant", *VARIANT, "train_resolution", "test_resolution", "test_rows", "test_cols"]


def require(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}; it has {list(df.columns)}")


def finished(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The FINISHED rows, with the columns checked first."""
    require(df, ["status", *columns])
    return df.loc[df["status"] == FINISHED].copy()


def tested_rows(df: pd.DataFrame) -> pd.DataFrame:
    """FINISHED rows with an accuracy (trained or not)."""
    return finished(df, [*CELL, "seed", "test_acc", "trained", "run_id"]).dropna(subset=["test_acc", "regime"])


def per_seed(df: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """FINISHED rows of runs that trained -> one per (cell, seed), repeated runs averaged."""
    fin = tested_rows(df)
    fin = fin.loc[fin["trained"].astype(bool)].dropna(subset=[value])
    return fin.groupby([*CELL, "seed"], as_index=False, sort=True)[value].mean()


def cell_columns(out: pd.DataFrame) -> pd.DataFrame:
    """Add the variant's and the size's labels to rows keyed by CELL."""
    out = out.copy()
    out["variant"] = [variant_label(*v) for v in out[VARIANT].itertuples(index=False)]
    out["test_resolution"] = [Size(int(r), int(c)).label for r, c in zip(out["test_rows"], out["test_cols"])]
    for col in ("train_resolution", "test_rows", "test_cols"):
        out[col] = out[col].astype("int64")
    return out


def interval_stats(values: Sequence[float], bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict[str, float]:
    """n, mean, sd (ddof=1) and the :func:`t_interval` of a cell's per-seed values, cut to
    ``bounds`` (accuracies by default; differences of accuracies: (-1, 1); None: unbounded)."""
    x = np.asarray(values, dtype=float)
    lo, hi = t_interval(x, bounds=bounds)
    return {"n_seeds": len(x), "mean": float(x.mean()) if len(x) else math.nan,
            "std": float(x.std(ddof=1)) if len(x) > 1 else math.nan, "ci_low": lo, "ci_high": hi}


def variant_label(encoding: str, policy: str, temperature: str) -> str:
    """The name of an encoding variant, never the encoding's name alone:
    ``rope_axial (interpolate, temp log)``; ``learned (no policy, temp none)``."""
    pol = "no policy" if policy == NO_POLICY else f"{policy} policy" if policy == "default" else policy
    return f"{encoding} ({pol}, temp {temperature})"


def side(test_rows: int, test_cols: int, train_resolution: int) -> str:
    """Where a test size lies relative to the (square) training size: ``at``; ``above`` (no
    side shorter, one longer); ``below`` (no side longer, one shorter); ``mixed`` (one of each)."""
    r, c, t = int(test_rows), int(test_cols), int(train_resolution)
    if r == c == t:
        return "at"
    if r >= t and c >= t:
        return "above"
    if r <= t and c <= t:
        return "below"
    return "mixed"


def t_interval(values: Iterable[float], *, level: float = CONFIDENCE,
               bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """The Student-t confidence interval of the mean of ``values`` (NaN left out): mean ±
    t_{(1 + level) / 2, n - 1} · sd / √n, sd with ddof 1, then cut to ``bounds`` (what the values
    can be: an accuracy's mean is in [0, 1]; cutting an interval to the parameter's range never
    lowers its coverage). (NaN, NaN) with fewer than two values.

    The interval that matches the paired t-test the report uses: an interval of differences
    excludes 0 exactly when that test's p is below 1 - level. With 3 seeds it is wide (t = 4.30,
    about 2.5 sd either side of the mean), as it must be: a percentile bootstrap over 3 seeds
    would be their range, which covers a normal mean about 75 % of the time, not 95 %.
    """
    x = np.asarray([v for v in values if not math.isnan(float(v))], dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    if not 0.0 < level < 1.0:
        raise ValueError(f"an interval needs 0 < level < 1, got level={level}")
    half = float(stats.t.ppf((1.0 + level) / 2.0, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    lo, hi = float(x.mean()) - half, float(x.mean()) + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return lo, hi
