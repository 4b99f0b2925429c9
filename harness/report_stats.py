"""Statistics for reports: pure functions of the tidy results table.

The input of every function is the tidy table built from MLflow (``harness.report``), one row
per (run, regime, test size, policy, temperature), with the columns

    study, stage, encoding, options, train_resolution, regime, test_resolution, test_rows,
    test_cols, policy, temperature, variant, seed, test_acc, test_loss, retention, chance,
    final_val_acc, trained, params, images_per_s, device, run_id, status

``test_resolution`` is the size label (``"32"``, ``"32x64"``: rows x cols), ``test_rows`` and
``test_cols`` its numbers; ``chance`` is 1 / number of classes of the run's dataset;
``final_val_acc`` the run's last validation accuracy. :func:`derive` adds the columns that
follow from the others (``variant``, ``trained``, ``retention``).

Conventions shared by all functions (each one applies them itself):

- Only rows with ``status == "FINISHED"`` count; failed, killed and running runs are dropped
  first (``missing_cells`` is the one function that looks at them). A FINISHED row without
  an accuracy (NaN ``test_acc``) is left out.
- A run that **did not train** (``trained`` False: its final validation accuracy is within
  :data:`CHANCE_MARGIN` of chance) is never averaged in: every mean, interval, ranking and
  comparison is over the runs that trained, and :func:`untrained_runs` lists the others.
- A *variant* of an encoding is (encoding, policy, temperature); a cell is (regime, variant,
  train_resolution, test size); its unit of replication is the seed. A seed's repeated runs
  in one cell are averaged first, so that every seed counts once.
- Intervals are 95% percentile-bootstrap intervals over seeds (:func:`bootstrap_interval`:
  :data:`BOOTSTRAP_RESAMPLES` resamples drawn with the seed :data:`BOOTSTRAP_SEED`): the
  interval of a mean of accuracies lies inside [0, 1], and it is reproducible.
- Results are new DataFrames with a default index, sorted by their key columns, so the
  order of the input rows never matters.

No I/O, no plotting, no MLflow. scipy is used for the t distribution when it imports;
otherwise a plain implementation of the same formulas (regularised incomplete beta
function) takes its place.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from harness.schema import NO_POLICY, NO_TEMPERATURE, Cell, Size

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CHANCE_MARGIN",
    "INTERVAL_METHOD",
    "MIN_PAIRS",
    "accuracy_summary",
    "bootstrap_interval",
    "cost_table",
    "default_baseline",
    "derive",
    "extrapolation_scores",
    "headline",
    "holm",
    "missing_cells",
    "paired_comparisons",
    "ranking",
    "retention",
    "run_retention",
    "side",
    "trained",
    "untrained_runs",
    "variant_label",
]

FINISHED = "FINISHED"
#: a run whose final validation accuracy is no more than this above chance did not train; a
#: run this close to chance at the training size has no retention
CHANCE_MARGIN = 0.05
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
#: how every interval of the report is computed, in words (the report prints it next to them)
INTERVAL_METHOD = (f"95% percentile bootstrap over seeds ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; "
                   "runs that did not train left out)")
#: the significance level of the Holm-corrected tests
ALPHA = 0.05
#: the fewest pairs a paired test is run on
MIN_PAIRS = 3
TOO_FEW = "too few pairs (n pairs < min_pairs)"
NO_VARIANCE = "no variance in the differences"
# Differences whose spread (max - min) is below this are "identical": accuracies are
# fractions in [0, 1], and 0.7 - 0.6 and 0.8 - 0.7 differ by rounding alone.
_ZERO_SPREAD = 1e-12
# Means are compared for ranking after rounding to this many decimals (ties up to rounding).
_RANK_DECIMALS = 12

_VARIANT = ["encoding", "policy", "temperature"]
#: a cell's key, in sort order (the size by its numbers, not by its label)
_CELL = ["regime", *_VARIANT, "train_resolution", "test_rows", "test_cols"]
#: the columns a cell's row shows
_CELL_OUT = ["regime", "variant", *_VARIANT, "train_resolution", "test_resolution", "test_rows", "test_cols"]
_SIDES = ("below", "at", "above", "mixed")


# ---------------------------------------------------------------------------- helpers


def _require(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}; it has {list(df.columns)}")


def _finished(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The FINISHED rows, with the columns checked first."""
    _require(df, ["status", *columns])
    return df.loc[df["status"] == FINISHED].copy()


def _tested(df: pd.DataFrame) -> pd.DataFrame:
    """FINISHED rows with an accuracy (trained or not)."""
    return _finished(df, [*_CELL, "seed", "test_acc", "trained", "run_id"]).dropna(subset=["test_acc", "regime"])


def _per_seed(df: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """FINISHED rows of runs that trained -> one per (cell, seed), repeated runs averaged."""
    fin = _tested(df)
    fin = fin.loc[fin["trained"].astype(bool)].dropna(subset=[value])
    return fin.groupby([*_CELL, "seed"], as_index=False, sort=True)[value].mean()


def _cell_columns(out: pd.DataFrame) -> pd.DataFrame:
    """Add the variant's and the size's labels to rows keyed by _CELL."""
    out = out.copy()
    out["variant"] = [variant_label(*v) for v in out[_VARIANT].itertuples(index=False)]
    out["test_resolution"] = [Size(int(r), int(c)).label for r, c in zip(out["test_rows"], out["test_cols"])]
    for col in ("train_resolution", "test_rows", "test_cols"):
        out[col] = out[col].astype("int64")
    return out


def _interval_stats(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sd (ddof=1) and the bootstrap interval of a cell's per-seed values."""
    x = np.asarray(values, dtype=float)
    lo, hi = bootstrap_interval(x)
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


def _paired_t_p(diffs: np.ndarray) -> float:
    """Two-sided p of the paired t-test on differences (t = mean / (sd / sqrt(n)), n - 1 df)."""
    stats = _scipy_stats()
    if stats is not None:
        return float(stats.ttest_1samp(diffs, 0.0).pvalue)  # = ttest_rel(a, b) on a - b
    n = len(diffs)
    t = float(np.mean(diffs) / (np.std(diffs, ddof=1) / math.sqrt(n)))
    return _t_two_sided_p(t, n - 1)



# ---------------------------------------------------------------------------- public: per run


def trained(final_val_acc: pd.Series, chance: pd.Series) -> pd.Series:
    """Whether each run trained: False when its final validation accuracy is no more than
    :data:`CHANCE_MARGIN` above chance; True when it is further, or when either is unknown
    (a run that logged no chance cannot be judged, and is not flagged)."""
    gap = pd.to_numeric(final_val_acc, errors="coerce").astype(float) - pd.to_numeric(chance, errors="coerce")
    return ~(gap <= CHANCE_MARGIN)


def run_retention(df: pd.DataFrame) -> pd.Series:
    """Chance-normalised retention of every row, aligned with ``df``'s index:
    (acc - chance) / (acc_at_train - chance), where acc_at_train is the same run's accuracy at
    the training size (rows = cols = train_resolution) under the same regime, policy and
    temperature. NaN (undefined, never 1.0) for a run that did not train, for a run whose
    acc_at_train is no more than :data:`CHANCE_MARGIN` above chance, and where the training
    size was not tested or chance is unknown."""
    _require(df, ["run_id", "regime", "policy", "temperature", "train_resolution", "test_rows", "test_cols",
                  "test_acc", "chance", "trained"])
    keys = ["run_id", "regime", "policy", "temperature"]
    on = (df["test_rows"] == df["train_resolution"]) & (df["test_cols"] == df["train_resolution"])
    at = df.loc[on.fillna(False).astype(bool), [*keys, "test_acc"]].dropna(subset=["test_acc"])
    at = at.drop_duplicates(keys).rename(columns={"test_acc": "_at_train"})
    merged = df[[*keys, "test_acc", "chance", "trained"]].reset_index().merge(at, on=keys, how="left")
    merged = merged.set_index("index").reindex(df.index)
    chance = pd.to_numeric(merged["chance"], errors="coerce").astype(float)
    acc, at_train = merged["test_acc"].astype(float), merged["_at_train"].astype(float)
    ok = merged["trained"].fillna(False).astype(bool) & (at_train - chance > CHANCE_MARGIN)
    return ((acc - chance) / (at_train - chance)).where(ok).astype(float).rename("retention")


def derive(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the columns that follow from the others: ``variant``
    (:func:`variant_label`), ``trained`` (:func:`trained`) and ``retention``
    (:func:`run_retention`). A new table; the input is left as it is."""
    out = df.copy()
    out["variant"] = [variant_label(*v) if not any(pd.isna(x) for x in v) else None
                      for v in out[_VARIANT].itertuples(index=False)]
    out["trained"] = trained(out["final_val_acc"], out["chance"]).astype(bool)
    out["retention"] = run_retention(out)
    return out


def untrained_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The FINISHED runs that did not train (``trained`` False), one row per run: encoding,
    train_resolution, seed, final_val_acc, chance, mean_test_acc (over every variant and test
    size of the run), run_id; sorted by encoding, train_resolution, seed, run_id."""
    columns = ["encoding", "train_resolution", "seed", "final_val_acc", "chance", "mean_test_acc", "run_id"]
    fin = _finished(df, ["encoding", "train_resolution", "seed", "final_val_acc", "chance", "trained", "run_id",
                         "test_acc"])
    fin = fin.loc[~fin["trained"].astype(bool)]
    if fin.empty:
        return pd.DataFrame(columns=columns)
    out = fin.groupby("run_id", as_index=False, sort=True).agg(
        encoding=("encoding", "first"), train_resolution=("train_resolution", "first"), seed=("seed", "first"),
        final_val_acc=("final_val_acc", "first"), chance=("chance", "first"), mean_test_acc=("test_acc", "mean"))
    for col in ("final_val_acc", "chance", "mean_test_acc"):
        out[col] = out[col].astype(float)
    return out.sort_values(["encoding", "train_resolution", "seed", "run_id"], ignore_index=True)[columns]


# ---------------------------------------------------------------------------- public: intervals


def bootstrap_interval(values: Iterable[float], *, level: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of ``values`` (NaN left out).

    ``resamples`` samples of len(values) values drawn with replacement (numpy's default_rng
    with ``seed``: the same answer every time), the mean of each, and their (1 - level) / 2
    and (1 + level) / 2 quantiles (linear interpolation). The interval lies inside
    [min(values), max(values)] (so inside [0, 1] for accuracies). (NaN, NaN) with fewer than
    two values. With 3-5 seeds it is narrow (it cannot reach past the seeds' range): read it
    as the spread of the seeds' mean, not as a guarantee of coverage.
    """
    x = np.asarray([v for v in values if not math.isnan(float(v))], dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError(f"bootstrap needs 0 < level < 1 and resamples >= 1, got level={level}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(np.clip(lo, x.min(), x.max())), float(np.clip(hi, x.min(), x.max()))


def accuracy_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy over seeds per cell (regime, variant, train_resolution, test size).

    FINISHED rows of runs that trained; a seed's repeated runs are averaged first. Columns:
    regime, variant, encoding, policy, temperature, train_resolution, test_resolution,
    test_rows, test_cols, n_seeds, mean, std (ddof=1; NaN with one seed), ci_low, ci_high
    (:func:`bootstrap_interval` over the seeds; NaN with fewer than two), n_untrained (runs of
    the cell that did not train: a cell where no run trained has n_seeds 0 and a NaN mean).
    """
    fin = _tested(df)
    rows = []
    for key, g in fin.groupby(_CELL, sort=True):
        ok = g["trained"].astype(bool)
        seeds = g.loc[ok].groupby("seed")["test_acc"].mean()
        rows.append({**dict(zip(_CELL, key)), **_interval_stats(seeds.to_numpy()),
                     "n_untrained": g.loc[~ok, "run_id"].nunique()})
    stats = ["n_seeds", "mean", "std", "ci_low", "ci_high", "n_untrained"]
    out = _cell_columns(pd.DataFrame(rows, columns=[*_CELL, *stats]))
    for col in ("n_seeds", "n_untrained"):
        out[col] = out[col].astype("int64")
    for col in ("mean", "std", "ci_low", "ci_high"):
        out[col] = out[col].astype(float)
    return out[[*_CELL_OUT, *stats]]


def retention(df: pd.DataFrame) -> pd.DataFrame:
    """Chance-normalised retention over seeds per cell (the ``retention`` column of
    :func:`derive`, a run's own ratio, averaged over seeds).

    FINISHED rows of runs that trained and whose retention is defined. Columns: regime,
    variant, encoding, policy, temperature, train_resolution, test_resolution, test_rows,
    test_cols, n_seeds, retention (the mean; NaN where no run of the cell has one), ci_low,
    ci_high (:func:`bootstrap_interval` over seeds; retention is not bounded by [0, 1]: above 1
    is better than at the training size, below 0 worse than chance), n_undefined (runs of the
    cell whose retention is undefined).
    """
    fin = _tested(df)
    _require(fin, ["retention"])
    rows = []
    for key, g in fin.groupby(_CELL, sort=True):
        ok = g["trained"].astype(bool) & g["retention"].notna()
        seeds = g.loc[ok].groupby("seed")["retention"].mean()
        s = _interval_stats(seeds.to_numpy())
        rows.append({**dict(zip(_CELL, key)), "n_seeds": s["n_seeds"], "retention": s["mean"], "ci_low": s["ci_low"],
                     "ci_high": s["ci_high"], "n_undefined": g.loc[~ok, "run_id"].nunique()})
    stats = ["n_seeds", "retention", "ci_low", "ci_high", "n_undefined"]
    out = _cell_columns(pd.DataFrame(rows, columns=[*_CELL, *stats]))
    for col in ("n_seeds", "n_undefined"):
        out[col] = out[col].astype("int64")
    for col in ("retention", "ci_low", "ci_high"):
        out[col] = out[col].astype(float)
    return out[[*_CELL_OUT, *stats]]


def extrapolation_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (regime, variant, train_resolution): accuracy below, at and above the training size.

    From the cell means of :func:`accuracy_summary` (runs that trained). ``below`` / ``above``:
    the mean over the test sizes on that side (:func:`side`) of each size's mean accuracy
    over seeds (every size weighs the same); ``at``: the mean accuracy at the training size;
    sizes on both sides (``mixed``: one side longer, one shorter) are in neither. NaN where
    there is no such size. ``n_below`` / ``n_above`` count the sizes. Columns: regime,
    variant, encoding, policy, temperature, train_resolution, below, at, above, n_below, n_above.
    """
    acc = accuracy_summary(df)
    acc = acc.loc[acc["n_seeds"] > 0]
    key = ["regime", "variant", *_VARIANT, "train_resolution"]
    rows = []
    for k, g in acc.groupby(["regime", *_VARIANT, "train_resolution"], sort=True):
        sides = [side(r, c, k[-1]) for r, c in zip(g["test_rows"], g["test_cols"])]
        by = {s: g.loc[[x == s for x in sides], "mean"] for s in _SIDES}
        rows.append({**dict(zip(["regime", *_VARIANT, "train_resolution"], k)), "variant": variant_label(*k[1:4]),
                     **{s: by[s].mean() if len(by[s]) else math.nan for s in ("below", "at", "above")},
                     "n_below": len(by["below"]), "n_above": len(by["above"])})
    return pd.DataFrame(rows, columns=[*key, "below", "at", "above", "n_below", "n_above"])


def ranking(df: pd.DataFrame) -> pd.DataFrame:
    """Variants ranked by mean accuracy per (regime, train_resolution, test size).

    Cell means of :func:`accuracy_summary` (cells where no run trained are not ranked). Rank 1
    is the best; equal means (to 12 decimals, so that rounding noise does not break a tie)
    share the smallest rank (method="min": 1, 1, 3). Columns: regime, train_resolution,
    test_resolution, variant, mean, rank; sorted by regime, resolutions, rank, variant.
    """
    acc = accuracy_summary(df)
    acc = acc.loc[acc["n_seeds"] > 0].copy()
    group = ["regime", "train_resolution", "test_rows", "test_cols"]
    acc["rank"] = acc["mean"].round(_RANK_DECIMALS).groupby([acc[c] for c in group]).rank(
        method="min", ascending=False).astype("int64")
    out = acc.sort_values([*group, "rank", "variant"], ignore_index=True)
    return out[["regime", "train_resolution", "test_resolution", "variant", "mean", "rank"]]


# ---------------------------------------------------------------------------- public: tests

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


def _pair_test(diffs: np.ndarray, min_pairs: int) -> tuple[float, str]:
    """(two-sided p of the paired t-test, note) of paired differences; p NaN when untestable."""
    if len(diffs) < min_pairs:
        return math.nan, TOO_FEW
    if np.ptp(diffs) <= _ZERO_SPREAD:
        return math.nan, NO_VARIANCE
    return _paired_t_p(diffs), ""


def _compare(kind: str, cell: dict, a: pd.DataFrame, b: pd.DataFrame, on: str, min_pairs: int) -> dict:
    """One comparison: rows ``a`` and ``b`` (columns ``on``, test_acc, and the variant's) paired on ``on``."""
    pairs = a[[on, "test_acc"]].merge(b[[on, "test_acc"]], on=on, how="inner", suffixes=("_a", "_b"))
    diffs = (pairs["test_acc_a"] - pairs["test_acc_b"]).to_numpy(dtype=float)
    p, note = _pair_test(diffs, min_pairs)
    return {"kind": kind, **cell, "n_pairs": len(diffs), "mean_diff": float(diffs.mean()) if len(diffs) else math.nan,
            "p_value": p, "note": note}


def _label(frame: pd.DataFrame, fallback: tuple[str, str, str]) -> str:
    v = frame[_VARIANT].drop_duplicates()
    return variant_label(*v.iloc[0]) if len(v) == 1 else variant_label(*fallback)


def paired_comparisons(df: pd.DataFrame, baseline: str | None = None, min_pairs: int = MIN_PAIRS) -> pd.DataFrame:
    """Paired comparisons where the pairing is real, with one Holm correction over all of them.

    FINISHED rows of runs that trained. Three kinds of rows, ``a`` against ``b``:

    - ``policy``: two policies of one encoding (same regime, temperature, training and test
      size; sizes off the training grid only, where a policy acts), paired by run (the same
      weights); every pair of policies (``a`` the first by name);
    - ``temperature``: each temperature against ``none``, paired by run, off the training grid;
    - ``encoding`` (with a ``baseline``): every variant of every other encoding against the
      baseline's variant with the same policy and temperature (the baseline's only policy /
      temperature when it has one, like ``learned``), per regime, training and test size,
      paired by seed (a seed's repeated runs averaged first).

    ``n_pairs``; ``mean_diff`` = mean of (a - b) over the pairs (NaN with none); ``p_value`` of
    the two-sided paired t-test (scipy.stats.ttest_rel's formula); ``p_holm``: Holm-Bonferroni
    over every p-value of the table (one family); ``note``: :data:`TOO_FEW` below
    ``min_pairs`` pairs, :data:`NO_VARIANCE` when all differences are equal (spread below
    1e-12): p NaN, left out of the family; "" otherwise. Raises ValueError when the baseline
    has no FINISHED run that trained, or when min_pairs < 2. Columns: kind, regime,
    train_resolution, test_resolution, a, b, paired_by, n_pairs, mean_diff, p_value, p_holm,
    note; sorted by kind (policy, temperature, encoding), regime, sizes, a, b.
    """
    if min_pairs < 2:
        raise ValueError(f"min_pairs must be at least 2 (a t-test needs two pairs), got {min_pairs}")
    fin = _tested(df)
    fin = fin.loc[fin["trained"].astype(bool)]
    if baseline is not None and baseline not in set(fin["encoding"]):
        raise ValueError(f"baseline encoding {baseline!r} has no finished run that trained; "
                         f"encodings present: {sorted(set(fin['encoding']))}")
    rows = []
    size = ["regime", "train_resolution", "test_rows", "test_cols"]
    on_grid = (fin["test_rows"] == fin["train_resolution"]) & (fin["test_cols"] == fin["train_resolution"])
    for key, g in fin.loc[~on_grid].groupby([*size, "encoding"], sort=True):
        cell = dict(zip(size, key[:4]))
        for temp, gt in g.groupby("temperature", sort=True):
            policies = sorted(set(gt["policy"]) - {NO_POLICY})
            for pa, pb in itertools.combinations(policies, 2):
                a, b = gt.loc[gt["policy"] == pa], gt.loc[gt["policy"] == pb]
                rows.append(_compare("policy", {**cell, "a": variant_label(key[4], pa, temp),
                                                "b": variant_label(key[4], pb, temp), "paired_by": "run"},
                                     a, b, "run_id", min_pairs))
        for pol, gp in g.groupby("policy", sort=True):
            b = gp.loc[gp["temperature"] == NO_TEMPERATURE]
            for temp in sorted(set(gp["temperature"]) - {NO_TEMPERATURE}) if len(b) else ():
                rows.append(_compare("temperature", {**cell, "a": variant_label(key[4], pol, temp),
                                                     "b": variant_label(key[4], pol, NO_TEMPERATURE),
                                                     "paired_by": "run"},
                                     gp.loc[gp["temperature"] == temp], b, "run_id", min_pairs))
    if baseline is not None:
        seeds = _per_seed(df)
        base = seeds.loc[seeds["encoding"] == baseline]
        for key, g in seeds.loc[seeds["encoding"] != baseline].groupby([*size, *_VARIANT], sort=True):
            enc, pol, temp = key[4:]
            b = base
            for col, own in (("policy", pol), ("temperature", temp)):
                have = set(base[col])
                b = b.loc[b[col] == (own if own in have or len(have) != 1 else next(iter(have)))]
            b = b.loc[np.logical_and.reduce([b[c] == v for c, v in zip(size, key[:4])])] if len(b) else b
            rows.append(_compare("encoding", {**dict(zip(size, key[:4])), "a": variant_label(enc, pol, temp),
                                              "b": _label(b, (baseline, pol, temp)), "paired_by": "seed"},
                                 g, b, "seed", min_pairs))
    columns = ["kind", "regime", "train_resolution", "test_resolution", "a", "b", "paired_by", "n_pairs",
               "mean_diff", "p_value", "p_holm", "note"]
    out = pd.DataFrame(rows, columns=[c for c in [*columns, "test_rows", "test_cols"]
                                      if c not in ("test_resolution", "p_holm")])
    out["_kind"] = out["kind"].map({"policy": 0, "temperature": 1, "encoding": 2})
    out = out.sort_values(["_kind", *size, "a", "b"], ignore_index=True)
    out["test_resolution"] = [Size(int(r), int(c)).label for r, c in zip(out["test_rows"], out["test_cols"])]
    out["train_resolution"] = out["train_resolution"].astype("int64")
    out["n_pairs"] = out["n_pairs"].astype("int64")
    for col in ("mean_diff", "p_value"):
        out[col] = out[col].astype(float)
    out["p_holm"] = pd.Series(holm(out["p_value"]), dtype=float)
    return out[columns]


def headline(df: pd.DataFrame, min_pairs: int = MIN_PAIRS, alpha: float = ALPHA) -> pd.DataFrame:
    """The best variant per regime and training resolution, above and below it (:func:`side`).

    FINISHED rows of runs that trained. A seed's score on a side is its mean accuracy over
    the test sizes on that side; a variant's score is the mean over its seeds. ``best`` is the
    variant with the highest score (ties: the first by name), ``runner_up`` the next;
    ``margin`` = best - runner-up; the lead is tested by a paired t-test over the seeds both
    have (``n_pairs``), and ``p_holm`` is Holm-corrected over the rows of this table;
    ``significant``: p_holm < alpha. ``note``: why there is no test (no runner-up,
    :data:`TOO_FEW`, :data:`NO_VARIANCE`). Columns: regime, train_resolution, side, best,
    best_mean, ci_low, ci_high (:func:`bootstrap_interval` of the best's seeds), n_seeds,
    runner_up, runner_up_mean, margin, n_pairs, p_value, p_holm, significant, note.
    """
    seeds = _per_seed(df)
    seeds["side"] = [side(r, c, t) for r, c, t in zip(seeds["test_rows"], seeds["test_cols"],
                                                      seeds["train_resolution"])]
    seeds = seeds.loc[seeds["side"].isin(["above", "below"])]
    group = ["regime", "train_resolution", "side"]
    scores = seeds.groupby([*group, *_VARIANT, "seed"], as_index=False, sort=True)["test_acc"].mean()
    rows = []
    for key, g in scores.groupby(group, sort=True):
        means = g.groupby(_VARIANT, sort=True)["test_acc"].mean().reset_index()
        means["label"] = [variant_label(*v) for v in means[_VARIANT].itertuples(index=False)]
        means = means.assign(_neg=-means["test_acc"].round(_RANK_DECIMALS)).sort_values(["_neg", "label"])
        top = [g.merge(means.iloc[[i]][_VARIANT], on=_VARIANT) for i in range(min(2, len(means)))]
        s = _interval_stats(top[0]["test_acc"].to_numpy())
        row = {**dict(zip(group, key)), "best": means["label"].iloc[0], "best_mean": s["mean"], "ci_low": s["ci_low"],
               "ci_high": s["ci_high"], "n_seeds": s["n_seeds"], "runner_up": None, "runner_up_mean": math.nan,
               "margin": math.nan, "n_pairs": 0, "p_value": math.nan, "note": "no runner-up"}
        if len(top) == 2:
            pairs = top[0][["seed", "test_acc"]].merge(top[1][["seed", "test_acc"]], on="seed", suffixes=("_a", "_b"))
            diffs = (pairs["test_acc_a"] - pairs["test_acc_b"]).to_numpy(dtype=float)
            p, note = _pair_test(diffs, min_pairs)
            row.update(runner_up=means["label"].iloc[1], runner_up_mean=float(means["test_acc"].iloc[1]),
                       margin=s["mean"] - float(means["test_acc"].iloc[1]), n_pairs=len(diffs), p_value=p, note=note)
        rows.append(row)
    columns = ["regime", "train_resolution", "side", "best", "best_mean", "ci_low", "ci_high", "n_seeds", "runner_up",
               "runner_up_mean", "margin", "n_pairs", "p_value", "p_holm", "significant", "note"]
    out = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "significant")])
    out["p_value"] = out["p_value"].astype(float)
    out["p_holm"] = pd.Series(holm(out["p_value"]), dtype=float)
    out["significant"] = (out["p_holm"] < alpha).astype(bool)
    return out[columns]


def default_baseline(encodings: Iterable[str], requested: str | None = None) -> str | None:
    """The baseline for paired comparisons: ``requested`` if given, else "learned" if present, else None.

    ``requested`` is returned as is (paired_comparisons raises if it has no run).
    """
    if requested is not None:
        return requested
    return "learned" if "learned" in set(encodings) else None


# ---------------------------------------------------------------------------- public: runs


def cost_table(df: pd.DataFrame, per_train_resolution: bool = False) -> pd.DataFrame:
    """Cost per encoding: parameters and the training throughput measured during the study.

    FINISHED rows only, taken once per run (a run has one row per variant and test size);
    runs that did not train count too (their cost was paid). ``params``: the first value, in
    the order of train_resolution then run_id (a learned table's size depends on the
    training grid: use ``per_train_resolution``); ``params_vs_none``: params minus the params
    of ``none``; ``images_per_s``: the mean over runs, as measured while the study trained
    (not a benchmark: ``harness bench`` is); ``throughput_vs_none``: images_per_s / none's
    images_per_s; ``device``: the devices the runs trained on, sorted, joined by ", ". The
    ``_vs_none`` columns are NaN when ``none`` has no run. With ``per_train_resolution=True``
    there is a row per (encoding, train_resolution), compared with ``none`` at the same
    resolution. Columns: encoding, [train_resolution,] params, params_vs_none, images_per_s,
    throughput_vs_none, device.
    """
    fin = _finished(df, ["encoding", "train_resolution", "params", "images_per_s", "run_id", "device"])
    runs = fin.sort_values(["train_resolution", "run_id"]).drop_duplicates("run_id")
    runs["device"] = runs["device"].fillna("unknown").astype(str)
    keys = ["encoding", "train_resolution"] if per_train_resolution else ["encoding"]
    out = runs.groupby(keys, sort=True).agg(params=("params", "first"), images_per_s=("images_per_s", "mean"),
                                            device=("device", lambda s: ", ".join(sorted(set(s)))))
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
    return out[[*keys, "params", "params_vs_none", "images_per_s", "throughput_vs_none", "device"]]


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
