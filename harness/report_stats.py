"""Statistics for reports: pure functions of the tidy results table.

The input of every function is the tidy table built from MLflow, one row per (run, test
resolution), with the columns

    study, stage, encoding, options, train_resolution, test_resolution, seed,
    test_acc, test_loss, params, images_per_s, run_id, status

Conventions shared by all functions (each one applies them itself):

- Only rows with ``status == "FINISHED"`` count in the statistics; failed, killed and
  running runs are dropped first (``missing_cells`` is the one function that looks at them).
  A FINISHED row without an accuracy (NaN ``test_acc``) is left out of the accuracy statistics.
- A cell is (encoding, train_resolution, test_resolution); its unit of replication is the
  seed. Should a seed have several finished runs in one cell (a run repeated), their
  accuracies are averaged first, so that every seed counts once.
- The table is taken as it comes: pass the rows of one study and one stage (the caller
  selects them); ``encoding`` is the encoding's label in the study, options included.
- Results are new DataFrames with a default index, sorted by their key columns, so the
  order of the input rows never matters.

No I/O, no plotting, no MLflow. scipy is used for the t distribution when it imports;
otherwise a plain implementation of the same formulas (regularised incomplete beta
function) takes its place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from harness.schema import Cell

__all__ = [
    "accuracy_summary",
    "cost_table",
    "default_baseline",
    "extrapolation_scores",
    "holm",
    "missing_cells",
    "paired_comparisons",
    "ranking",
    "retention",
]

FINISHED = "FINISHED"
TOO_FEW = "too few seeds (n pairs < min_pairs)"
NO_VARIANCE = "no variance in the differences"
# Differences whose spread (max - min) is below this are "identical": accuracies are
# fractions in [0, 1], and 0.7 - 0.6 and 0.8 - 0.7 differ by rounding alone.
_ZERO_SPREAD = 1e-12
# Means are compared for ranking after rounding to this many decimals (ties up to rounding).
_RANK_DECIMALS = 12

_CELL = ["encoding", "train_resolution", "test_resolution"]


# ---------------------------------------------------------------------------- helpers


def _require(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}; it has {list(df.columns)}")


def _finished(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The FINISHED rows, with the columns checked first."""
    _require(df, ["status", *columns])
    return df.loc[df["status"] == FINISHED].copy()


def _per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """FINISHED rows with an accuracy -> one per (encoding, train, test, seed): repeated runs averaged."""
    fin = _finished(df, [*_CELL, "seed", "test_acc"]).dropna(subset=["test_acc"])
    return fin.groupby([*_CELL, "seed"], as_index=False, sort=True)["test_acc"].mean()


def _cell_means(df: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over seeds per (encoding, train, test): columns _CELL + mean."""
    seeds = _per_seed(df)
    return (
        seeds.groupby(_CELL, as_index=False, sort=True)["test_acc"].mean().rename(columns={"test_acc": "mean"})
    )


# ---------------------------------------------------- t distribution (scipy or plain)


def _scipy_stats():
    try:
        from scipy import stats
    except ImportError:  # pragma: no cover - scipy comes with mlflow
        return None
    return stats


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side only
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.lgamma(a) - math.lgamma(b) + math.lgamma(a + b)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def _t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def _t_quantile(q: float, df: float) -> float:
    """The q quantile of Student's t (0.5 < q < 1 in use), by bisection on the CDF."""
    stats = _scipy_stats()
    if stats is not None:
        return float(stats.t.ppf(q, df))
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -_t_quantile(1.0 - q, df)
    tail = 2.0 * (1.0 - q)  # two-sided tail probability of the quantile
    lo, hi = 0.0, 1.0
    while _t_two_sided_p(hi, df) > tail:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_p(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * hi:
            break
    return 0.5 * (lo + hi)


def _paired_t_p(diffs: np.ndarray) -> float:
    """Two-sided p of the paired t-test on differences (t = mean / (sd / sqrt(n)), n - 1 df)."""
    stats = _scipy_stats()
    if stats is not None:
        return float(stats.ttest_1samp(diffs, 0.0).pvalue)  # = ttest_rel(a, b) on a - b
    n = len(diffs)
    t = float(np.mean(diffs) / (np.std(diffs, ddof=1) / math.sqrt(n)))
    return _t_two_sided_p(t, n - 1)


# ---------------------------------------------------------------------------- public


def accuracy_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy over seeds per (encoding, train_resolution, test_resolution).

    FINISHED rows only; a seed's repeated runs are averaged first. Columns: encoding,
    train_resolution, test_resolution, n_seeds, mean, std (sample standard deviation,
    ddof=1; NaN when n_seeds == 1), ci_low, ci_high: the 95% confidence interval of the mean,
    mean -/+ t_{0.975, n-1} * std / sqrt(n) (Student t quantile); NaN when n_seeds < 2.
    """
    seeds = _per_seed(df)
    g = seeds.groupby(_CELL, sort=True)["test_acc"]
    out = g.agg(n_seeds="count", mean="mean", std=lambda s: s.std(ddof=1)).reset_index()
    half = [
        _t_quantile(0.975, n - 1) * s / math.sqrt(n) if n >= 2 else math.nan
        for n, s in zip(out["n_seeds"], out["std"])
    ]
    out["n_seeds"] = out["n_seeds"].astype("int64")
    out["std"] = out["std"].astype(float)
    out["ci_low"] = out["mean"] - np.asarray(half, dtype=float)
    out["ci_high"] = out["mean"] + np.asarray(half, dtype=float)
    return out[[*_CELL, "n_seeds", "mean", "std", "ci_low", "ci_high"]]


def retention(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy kept at each test resolution relative to the training resolution.

    FINISHED rows only. Per (encoding, train_resolution, test_resolution): ``retention`` =
    (mean accuracy over seeds at test_resolution) / (mean accuracy over seeds at
    test_resolution == train_resolution), for the same encoding and train resolution: a
    ratio of means, not a mean of per-seed ratios (robust to a seed with a near-zero
    accuracy). NaN when the training resolution was not tested (or its mean accuracy is 0).
    Columns: encoding, train_resolution, test_resolution, mean, mean_at_train, retention.
    """
    means = _cell_means(df)
    at = means.loc[means["test_resolution"] == means["train_resolution"], ["encoding", "train_resolution", "mean"]]
    at = at.rename(columns={"mean": "mean_at_train"})
    out = means.merge(at, on=["encoding", "train_resolution"], how="left")
    denom = out["mean_at_train"].where(out["mean_at_train"] != 0)
    out["retention"] = (out["mean"] / denom).astype(float)
    out["mean_at_train"] = out["mean_at_train"].astype(float)
    return out.sort_values(_CELL, ignore_index=True)[[*_CELL, "mean", "mean_at_train", "retention"]]


def extrapolation_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (encoding, train_resolution): accuracy below, at and above the training resolution.

    FINISHED rows only. ``below`` / ``above``: the mean over the test resolutions smaller /
    larger than the training one of each resolution's mean accuracy over seeds (every test
    resolution weighs the same); ``at``: the mean accuracy at the training resolution. NaN
    where there is no such test resolution. ``n_below`` / ``n_above`` count the test
    resolutions. Columns: encoding, train_resolution, below, at, above, n_below, n_above.
    """
    means = _cell_means(df)
    rows = []
    for (enc, train), g in means.groupby(["encoding", "train_resolution"], sort=True):
        below = g.loc[g["test_resolution"] < train, "mean"]
        above = g.loc[g["test_resolution"] > train, "mean"]
        at = g.loc[g["test_resolution"] == train, "mean"]
        rows.append({
            "encoding": enc,
            "train_resolution": train,
            "below": below.mean() if len(below) else math.nan,
            "at": at.mean() if len(at) else math.nan,
            "above": above.mean() if len(above) else math.nan,
            "n_below": len(below),
            "n_above": len(above),
        })
    columns = ["encoding", "train_resolution", "below", "at", "above", "n_below", "n_above"]
    return pd.DataFrame(rows, columns=columns)


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Step-down: with the m finite p-values sorted p_(1) <= ... <= p_(m), the adjusted value of
    p_(i) is max_{j <= i} min(1, (m - j + 1) * p_(j)) (monotone, capped at 1). NaN entries stay
    NaN and are not counted in m. Example: [0.01, 0.04, 0.03, 0.005] -> [0.03, 0.06, 0.06, 0.02].
    """
    p = [float(v) for v in pvalues]
    for v in p:
        if not math.isnan(v) and not 0.0 <= v <= 1.0:
            raise ValueError(f"p-value {v} is outside [0, 1]")
    idx = sorted((i for i, v in enumerate(p) if not math.isnan(v)), key=lambda i: p[i])
    m = len(idx)
    out = [math.nan] * len(p)
    running = 0.0
    for j, i in enumerate(idx):
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def paired_comparisons(df: pd.DataFrame, baseline: str, min_pairs: int = 3) -> pd.DataFrame:
    """Every encoding against ``baseline``, paired by seed, per (train_resolution, test_resolution).

    FINISHED rows only; a seed's repeated runs are averaged first. For each encoding other
    than the baseline and each (train_resolution, test_resolution) where that encoding has
    runs: the seeds present for both are paired; ``n_pairs``; ``mean_diff`` = mean of
    (encoding - baseline) over the pairs (NaN with no pair); ``p_value`` of the two-sided
    paired t-test (scipy.stats.ttest_rel's formula); ``p_holm``: Holm-Bonferroni adjusted
    over all the p-values of the table (one family); ``note``:

    - "too few seeds (n pairs < min_pairs)" when n_pairs < min_pairs: p_value and p_holm NaN;
    - "no variance in the differences" when all differences are equal (spread below 1e-12,
      a mean difference of 0 included): the t statistic is undefined, p_value and p_holm NaN;
    - "" otherwise.

    NaN p-values are left out of the Holm family. Raises ValueError when the baseline has no
    FINISHED row (naming the baseline and the encodings present) or when min_pairs < 2.
    Columns: encoding, baseline, train_resolution, test_resolution, n_pairs, mean_diff,
    p_value, p_holm, note.
    """
    if min_pairs < 2:
        raise ValueError(f"min_pairs must be at least 2 (a t-test needs two pairs), got {min_pairs}")
    seeds = _per_seed(df)
    present = sorted(seeds["encoding"].unique())
    if baseline not in present:
        raise ValueError(f"baseline encoding {baseline!r} has no finished run; encodings present: {present}")
    keys = ["train_resolution", "test_resolution", "seed"]
    base = seeds.loc[seeds["encoding"] == baseline, [*keys, "test_acc"]].rename(columns={"test_acc": "base"})
    rows = []
    others = seeds.loc[seeds["encoding"] != baseline]
    for (enc, train, test), g in others.groupby(_CELL, sort=True):
        b = base.loc[(base["train_resolution"] == train) & (base["test_resolution"] == test)]
        pairs = g.merge(b, on=keys, how="inner")
        diffs = (pairs["test_acc"] - pairs["base"]).to_numpy(dtype=float)
        n = len(diffs)
        mean_diff = float(diffs.mean()) if n else math.nan
        p, note = math.nan, ""
        if n < min_pairs:
            note = TOO_FEW
        elif np.ptp(diffs) <= _ZERO_SPREAD:
            note = NO_VARIANCE
        else:
            p = _paired_t_p(diffs)
        rows.append({
            "encoding": enc,
            "baseline": baseline,
            "train_resolution": train,
            "test_resolution": test,
            "n_pairs": n,
            "mean_diff": mean_diff,
            "p_value": p,
            "note": note,
        })
    columns = ["encoding", "baseline", "train_resolution", "test_resolution", "n_pairs", "mean_diff",
               "p_value", "p_holm", "note"]
    out = pd.DataFrame(rows, columns=[c for c in columns if c != "p_holm"])
    out["p_value"] = out["p_value"].astype(float)
    out["mean_diff"] = out["mean_diff"].astype(float)
    out["p_holm"] = holm(out["p_value"])
    out["p_holm"] = out["p_holm"].astype(float)
    return out[columns]


def default_baseline(encodings: Iterable[str], requested: str | None = None) -> str | None:
    """The baseline for paired comparisons: ``requested`` if given, else "learned" if present, else None.

    ``requested`` is returned as is (paired_comparisons raises if it has no run).
    """
    if requested is not None:
        return requested
    return "learned" if "learned" in set(encodings) else None


def ranking(df: pd.DataFrame) -> pd.DataFrame:
    """Encodings ranked by mean accuracy per (train_resolution, test_resolution).

    FINISHED rows only. Rank 1 is the best; equal means (to 12 decimals, so that rounding
    noise does not break a tie) share the smallest rank (method="min": 1, 1, 3). Columns:
    train_resolution, test_resolution, encoding, mean, rank; sorted by resolutions, rank,
    encoding.
    """
    means = _cell_means(df)
    key = means["mean"].round(_RANK_DECIMALS)
    means["rank"] = (
        key.groupby([means["train_resolution"], means["test_resolution"]])
        .rank(method="min", ascending=False)
        .astype("int64")
    )
    out = means.sort_values(["train_resolution", "test_resolution", "rank", "encoding"], ignore_index=True)
    return out[["train_resolution", "test_resolution", "encoding", "mean", "rank"]]


def cost_table(df: pd.DataFrame, per_train_resolution: bool = False) -> pd.DataFrame:
    """Cost per encoding: parameters and training throughput, relative to ``none``.

    FINISHED rows only, taken once per run (a run has one row per test resolution).
    ``params``: the first value, in the order of train_resolution then run_id (a learned
    table's size depends on the training grid: use ``per_train_resolution``);
    ``params_vs_none``: params minus the params of ``none``; ``images_per_s``: the mean over
    runs; ``throughput_vs_none``: images_per_s / none's images_per_s. The ``_vs_none``
    columns are NaN when ``none`` has no run. With ``per_train_resolution=True`` there is a
    row per (encoding, train_resolution), compared with ``none`` at the same resolution.
    Columns: encoding, [train_resolution,] params, params_vs_none, images_per_s,
    throughput_vs_none.
    """
    fin = _finished(df, ["encoding", "train_resolution", "params", "images_per_s", "run_id"])
    runs = fin.sort_values(["train_resolution", "run_id"]).drop_duplicates("run_id")
    keys = ["encoding", "train_resolution"] if per_train_resolution else ["encoding"]
    out = runs.groupby(keys, sort=True).agg(params=("params", "first"), images_per_s=("images_per_s", "mean"))
    out = out.reset_index()
    none = out.loc[out["encoding"] == "none", [*keys[1:], "params", "images_per_s"]]
    none = none.rename(columns={"params": "_p0", "images_per_s": "_t0"})
    if keys[1:]:
        out = out.merge(none, on=keys[1:], how="left")
    else:
        out["_p0"] = none["_p0"].iloc[0] if len(none) else math.nan
        out["_t0"] = none["_t0"].iloc[0] if len(none) else math.nan
    out["params_vs_none"] = (out["params"] - out["_p0"]).astype(float)
    out["throughput_vs_none"] = (out["images_per_s"] / out["_t0"].where(out["_t0"] != 0)).astype(float)
    out["images_per_s"] = out["images_per_s"].astype(float)
    return out[[*keys, "params", "params_vs_none", "images_per_s", "throughput_vs_none"]]


def missing_cells(df: pd.DataFrame, expected: Sequence[Cell | tuple[str, int, int]]) -> pd.DataFrame:
    """The expected cells (``harness.schema.Cell``, or (encoding, train_resolution, seed)
    tuples) that have no FINISHED run.

    One row per such cell, in the order of ``expected`` (duplicates once): encoding,
    train_resolution, seed, state, detail. ``state``: "running" if a RUNNING (or SCHEDULED)
    run exists for the cell (a retry in progress wins over an earlier failure), else
    "failed" if a FAILED or KILLED run exists, else "missing"; ``detail``: the run ids of the
    cell's non-finished runs, sorted, joined by ", " ("" when none).
    """
    _require(df, ["encoding", "train_resolution", "seed", "run_id", "status"])
    runs = df[["encoding", "train_resolution", "seed", "run_id", "status"]].drop_duplicates("run_id")
    by_cell: dict[tuple[str, int, int], list[tuple[str, str]]] = {}
    for enc, train, seed, run_id, status in runs.itertuples(index=False):
        by_cell.setdefault((str(enc), int(train), int(seed)), []).append((str(run_id), str(status)))
    rows, seen = [], set()
    for c in expected:
        enc, train, seed = (c.encoding, c.train_resolution, c.seed) if isinstance(c, Cell) else c
        cell = (str(enc), int(train), int(seed))
        if cell in seen:
            continue
        seen.add(cell)
        cell_runs = by_cell.get(cell, [])
        statuses = {s for _, s in cell_runs}
        if FINISHED in statuses:
            continue
        if statuses & {"RUNNING", "SCHEDULED"}:
            state = "running"
        elif statuses & {"FAILED", "KILLED"}:
            state = "failed"
        else:
            state = "missing"
        detail = ", ".join(sorted(r for r, _ in cell_runs))
        rows.append({"encoding": cell[0], "train_resolution": cell[1], "seed": cell[2], "state": state,
                     "detail": detail})
    return pd.DataFrame(rows, columns=["encoding", "train_resolution", "seed", "state", "detail"])
