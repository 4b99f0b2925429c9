"""Paired comparisons and the headline: which differences between variants are real.

Pure functions of the tidy results table (the conventions of :mod:`harness.report_stats`:
FINISHED rows of runs that trained, a seed's repeated runs averaged first). Pairs are real
pairs only: two policies or two temperatures of the same run (the same weights), or two
encodings' variants by seed. Two-sided paired t-tests (scipy.stats), with one Holm-Bonferroni
correction over a whole family.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from harness.report_stats import (
    MIN_PAIRS,
    RANK_DECIMALS,
    VARIANT,
    interval_stats,
    per_seed,
    side,
    tested_rows,
    variant_label,
)
from harness.schema import NO_POLICY, NO_TEMPERATURE, Size

__all__ = ["ALPHA", "NO_OTHER", "NO_VARIANCE", "TOO_FEW", "headline", "holm", "paired_comparisons", "t_two_sided_p"]

ALPHA = 0.05
TOO_FEW = "too few pairs (n pairs < min_pairs)"
NO_VARIANCE = "no variance in the differences"
NO_OTHER = "no other encoding"  # a headline whose side has variants of one encoding only
# Differences whose spread (max - min) is below this are "identical": accuracies are
# fractions in [0, 1], and 0.7 - 0.6 and 0.8 - 0.7 differ by rounding alone.
_ZERO_SPREAD = 1e-12


# ---------------------------------------------------------------------------- t distribution


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom: 2 * scipy.stats.t.sf(|t|, df)."""
    if math.isnan(t):
        return math.nan
    return float(2.0 * stats.t.sf(abs(t), df))


def _paired_t_p(diffs: np.ndarray) -> float:
    """Two-sided p of the paired t-test on differences a - b (t = mean / (sd / sqrt(n)), n - 1 df):
    scipy.stats.ttest_1samp(diffs, 0), which is scipy.stats.ttest_rel(a, b)."""
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


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
    v = frame[VARIANT].drop_duplicates()
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
    fin = tested_rows(df)
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
        seeds = per_seed(df)
        base = seeds.loc[seeds["encoding"] == baseline]
        for key, g in seeds.loc[seeds["encoding"] != baseline].groupby([*size, *VARIANT], sort=True):
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
    variant with the highest score (ties: the first by name); ``runner_up`` is the best variant
    of another encoding (the question is which encoding: the same encoding under another
    policy or temperature is a comparison of variants, which :func:`paired_comparisons`
    makes); ``margin`` = best - runner-up; the lead is tested by a paired t-test over the seeds
    both have (``n_pairs``), and ``p_holm`` is Holm-corrected over the rows of this table;
    ``significant``: p_holm < alpha. ``note``: why there is no test (:data:`NO_OTHER` encoding,
    :data:`TOO_FEW`, :data:`NO_VARIANCE`). Columns: regime, train_resolution, side, best,
    best_mean, ci_low, ci_high (:func:`bootstrap_interval` of the best's seeds), n_seeds,
    runner_up, runner_up_mean, margin, n_pairs, p_value, p_holm, significant, note.
    """
    seeds = per_seed(df)
    seeds["side"] = [side(r, c, t) for r, c, t in zip(seeds["test_rows"], seeds["test_cols"],
                                                      seeds["train_resolution"])]
    seeds = seeds.loc[seeds["side"].isin(["above", "below"])]
    group = ["regime", "train_resolution", "side"]
    scores = seeds.groupby([*group, *VARIANT, "seed"], as_index=False, sort=True)["test_acc"].mean()
    rows = []
    for key, g in scores.groupby(group, sort=True):
        means = g.groupby(VARIANT, sort=True)["test_acc"].mean().reset_index()
        means["label"] = [variant_label(*v) for v in means[VARIANT].itertuples(index=False)]
        means = means.assign(_neg=-means["test_acc"].round(RANK_DECIMALS)).sort_values(["_neg", "label"])
        others = np.flatnonzero((means["encoding"] != means["encoding"].iloc[0]).to_numpy())
        ranks = [0, *others[:1]]  # the best, and the best variant of another encoding
        top = [g.merge(means.iloc[[i]][VARIANT], on=VARIANT) for i in ranks]
        s = interval_stats(top[0]["test_acc"].to_numpy())
        row = {**dict(zip(group, key)), "best": means["label"].iloc[0], "best_mean": s["mean"], "ci_low": s["ci_low"],
               "ci_high": s["ci_high"], "n_seeds": s["n_seeds"], "runner_up": None, "runner_up_mean": math.nan,
               "margin": math.nan, "n_pairs": 0, "p_value": math.nan, "note": NO_OTHER}
        if len(top) == 2:
            pairs = top[0][["seed", "test_acc"]].merge(top[1][["seed", "test_acc"]], on="seed", suffixes=("_a", "_b"))
            diffs = (pairs["test_acc_a"] - pairs["test_acc_b"]).to_numpy(dtype=float)
            p, note = _pair_test(diffs, min_pairs)
            second = float(means["test_acc"].iloc[ranks[1]])
            row.update(runner_up=means["label"].iloc[ranks[1]], runner_up_mean=second, margin=s["mean"] - second,
                       n_pairs=len(diffs), p_value=p, note=note)
        rows.append(row)
    columns = ["regime", "train_resolution", "side", "best", "best_mean", "ci_low", "ci_high", "n_seeds", "runner_up",
               "runner_up_mean", "margin", "n_pairs", "p_value", "p_holm", "significant", "note"]
    out = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "significant")])
    out["p_value"] = out["p_value"].astype(float)
    out["p_holm"] = pd.Series(holm(out["p_value"]), dtype=float)
    out["significant"] = (out["p_holm"] < alpha).astype(bool)
    return out[columns]
