"""Paired comparisons and the headline: which differences between variants and encodings are real.

Pure functions of the tidy results table (the conventions of :mod:`harness.report.stats`:
FINISHED rows of runs that trained, a seed's repeated runs averaged first). Pairs are real
pairs only: two policies or two temperatures of the same run (the same weights), or two
encodings by seed. An encoding is compared under its selected variant, chosen on one half of
the test images and scored on the other (:mod:`harness.report.selection`). Two-sided paired t-tests
(scipy.stats), with one Holm-Bonferroni correction over a whole family. These are the report's
exploratory tests; the declared primary analysis is :mod:`harness.report.analysis`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from harness.report.analysis import probability_of_improvement, seeds_needed
from harness.report.multiplicity import holm
from harness.report.stats import (
    CONTROL,
    MIN_PAIRS,
    RANK_DECIMALS,
    interval_stats,
    tested_rows,
    variant_label,
)
from harness.schema import NO_POLICY, NO_TEMPERATURE, Size
from harness.report.selection import selected_scores, selection_table, side_means

__all__ = ["ALPHA", "GAIN_COLUMNS", "NO_OTHER", "NO_VARIANCE", "TOO_FEW", "gain_over_control", "headline", "holm",
           "paired_comparisons", "t_two_sided_p"]

ALPHA = 0.05
TOO_FEW = "too few pairs (n pairs < min_pairs)"
NO_VARIANCE = "no variance in the differences"
NO_OTHER = "no other encoding"  # a headline whose side has variants of one encoding only
# Differences whose spread (max - min) is below this are "identical": accuracies are
# fractions in [0, 1], and 0.7 - 0.6 and 0.8 - 0.7 differ by rounding alone.
_ZERO_SPREAD = 1e-12


#: the table of :func:`gain_over_control`
GAIN_COLUMNS = ["regime", "train_resolution", "side", "encoding", "test_resolution", "test_rows", "test_cols",
                "n_pairs", "gain", "ci_low", "ci_high", "encoding_acc", "control_acc", "n_runs", "n_untrained"]


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


def _names(df: pd.DataFrame, selection: pd.DataFrame | None = None) -> dict[tuple, str]:
    """(regime, train_resolution, side, encoding) -> the selected variant's name."""
    t = selection_table(df) if selection is None else selection
    return {tuple(r[:4]): r[4] for r in t[["regime", "train_resolution", "side", "encoding", "selected"]]
            .itertuples(index=False)}


def paired_comparisons(df: pd.DataFrame, baseline: str | None = None, min_pairs: int = MIN_PAIRS, *,
                       selected: pd.DataFrame | None = None, selection: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paired comparisons where the pairing is real, with one Holm correction over all of them.

    FINISHED rows of runs that trained. Three kinds of rows, ``a`` against ``b``:

    - ``policy``: two policies of one encoding (same regime, temperature, training and test
      size; sizes off the training grid only, where a policy acts), paired by run (the same
      weights); every pair of policies (``a`` the first by name);
    - ``temperature``: each temperature against ``none``, paired by run, off the training grid;
    - ``encoding`` (with a ``baseline``): every other encoding against the baseline, each under
      its selected variant (:func:`harness.report.selection.selected_scores`: chosen on one half of the
      test images, scored on the other; the variant is chosen per side of the training size),
      per regime, training and test size, paired by seed (a seed's repeated runs averaged first).

    ``selected`` / ``selection``: :func:`harness.report.selection.selected_scores` and
    :func:`harness.report.selection.selection_table` of ``df``, when the caller has them already.
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
        sel = selected_scores(df) if selected is None else selected
        names = _names(df, selection)
        base = sel.loc[sel["encoding"] == baseline]
        where = ["regime", "train_resolution", "side", "test_rows", "test_cols"]
        for key, g in sel.loc[sel["encoding"] != baseline].groupby([*where, "encoding"], sort=True):
            b = base.loc[np.logical_and.reduce([base[c] == v for c, v in zip(where, key)])]
            rows.append(_compare("encoding", {"regime": key[0], "train_resolution": key[1], "test_rows": key[3],
                                              "test_cols": key[4], "a": names.get((*key[:3], key[5]), key[5]),
                                              "b": names.get((*key[:3], baseline), baseline), "paired_by": "seed"},
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


def headline(df: pd.DataFrame, min_pairs: int = MIN_PAIRS, alpha: float = ALPHA, *,
             selected: pd.DataFrame | None = None, selection: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leading encoding per regime and training resolution, above and below it (:func:`side`),
    each encoding under its selected variant (:func:`harness.report.selection.selected_scores`: chosen
    on one half of the test images, scored on the other).

    A seed's score on a side is its selected accuracy averaged over the test sizes on that side;
    an encoding's score is the mean over its seeds. ``best`` is the encoding with the highest
    score (ties: the first by name), named with its selected variant; ``runner_up`` the next
    encoding; ``margin`` = best - runner-up. Naming the leader is descriptive: it is ranked on
    the scored images, so its test is exploratory (the declared comparisons are
    :func:`harness.report.analysis.primary_analysis`). The lead is tested by a paired t-test over the
    seeds both have (``n_pairs``), ``p_holm`` is Holm-corrected over the rows of this table,
    ``significant``: p_holm < alpha; ``prob``, ``prob_low``, ``prob_high``: P(best > runner-up)
    with its interval, stratified by test size
    (:func:`harness.report.analysis.probability_of_improvement`); ``seeds_needed``: the seeds a
    two-sided paired t-test needs for 80% power at this lead and spread
    (:func:`harness.report.analysis.seeds_needed`; NaN, with the reason in ``seeds_note``, when none up
    to 30). ``selected`` / ``selection``: as for :func:`paired_comparisons`. ``note``: why there
    is no test (:data:`NO_OTHER` encoding, :data:`TOO_FEW`,
    :data:`NO_VARIANCE`). Columns: regime, train_resolution, side, best, best_mean, ci_low,
    ci_high, n_seeds, runner_up, runner_up_mean, margin, n_pairs, p_value, p_holm, significant,
    prob, prob_low, prob_high, seeds_needed, seeds_note, note.
    """
    sel = selected_scores(df) if selected is None else selected
    sel = sel.loc[sel["side"].isin(["above", "below"])]
    names = _names(df, selection)
    scores = side_means(sel)
    group = ["regime", "train_resolution", "side"]
    rows = []
    for key, g in scores.groupby(group, sort=True):
        means = g.groupby("encoding", sort=True)["test_acc"].mean()
        order = sorted(means.index, key=lambda e: (-round(means[e], RANK_DECIMALS), e))
        top = [g.loc[g["encoding"] == e] for e in order[:2]]
        s = interval_stats(top[0]["test_acc"].to_numpy())
        row = {**dict(zip(group, key)), "best": names.get((*key, order[0]), order[0]), "best_mean": s["mean"],
               "ci_low": s["ci_low"], "ci_high": s["ci_high"], "n_seeds": s["n_seeds"], "runner_up": None,
               "runner_up_mean": math.nan, "margin": math.nan, "n_pairs": 0, "p_value": math.nan,
               "prob": math.nan, "prob_low": math.nan, "prob_high": math.nan, "seeds_needed": None,
               "seeds_note": "", "note": NO_OTHER}
        if len(top) == 2:
            pairs = top[0][["seed", "test_acc"]].merge(top[1][["seed", "test_acc"]], on="seed", suffixes=("_a", "_b"))
            diffs = (pairs["test_acc_a"] - pairs["test_acc_b"]).to_numpy(dtype=float)
            p, note = _pair_test(diffs, min_pairs)
            here = sel.loc[np.logical_and.reduce([sel[c] == v for c, v in zip(group, key)])]
            strata = [{z: list(v) for z, v in here.loc[here["encoding"] == e].groupby("test_resolution")["test_acc"]}
                      for e in order[:2]]
            prob = probability_of_improvement(*strata)
            n, why = seeds_needed(diffs)
            second = float(means[order[1]])
            row.update(runner_up=names.get((*key, order[1]), order[1]), runner_up_mean=second,
                       margin=s["mean"] - second, n_pairs=len(diffs), p_value=p, note=note, prob=prob[0],
                       prob_low=prob[1], prob_high=prob[2], seeds_needed=n, seeds_note=why)
        rows.append(row)
    columns = ["regime", "train_resolution", "side", "best", "best_mean", "ci_low", "ci_high", "n_seeds", "runner_up",
               "runner_up_mean", "margin", "n_pairs", "p_value", "p_holm", "significant", "prob", "prob_low",
               "prob_high", "seeds_needed", "seeds_note", "note"]
    out = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "significant")])
    for col in ("p_value", "prob", "prob_low", "prob_high", "best_mean", "runner_up_mean", "margin"):
        out[col] = out[col].astype(float)
    out["seeds_needed"] = out["seeds_needed"].astype("Int64")
    out["p_holm"] = pd.Series(holm(out["p_value"]), dtype=float)
    out["significant"] = (out["p_holm"] < alpha).astype(bool)
    return out[columns]


def gain_over_control(df: pd.DataFrame, selected: pd.DataFrame | None = None,
                      control: str = CONTROL) -> pd.DataFrame:
    """What position adds: each encoding's selected accuracy minus the position-free control's,
    per regime, training and test size, paired by seed.

    On real images the control (the encoding labelled ``control``) learns part of the task
    without any position signal, so raw accuracy does not say what position adds; the gain does.
    Both sides are the selected accuracy (:func:`harness.report.selection.selected_scores`: each
    variant chosen on one half of the test images and scored on the other). A pair is one seed
    at one (regime, training size, test size) where both have a score; ``gain`` is the mean of
    (encoding - control) over the pairs, ``ci_low`` / ``ci_high`` its interval over them
    (:func:`harness.report.stats.interval_stats`, the report's interval; NaN with fewer than two
    pairs), ``encoding_acc`` / ``control_acc`` the two means over the same pairs. The
    encoding's runs that did not train are left out, as everywhere; the control's runs all
    count, at chance or not: the control at chance is its measurement, not a failure (then
    the gain is an encoding's accuracy over a chance-level model).

    One row per (regime, training size, test size the control was scored at, encoding with a
    FINISHED run at that training size); the control's own rows first in each group, with
    ``n_pairs`` 0, its mean accuracy over its seeds as ``control_acc`` and ``encoding_acc``, and
    NaN gain. ``n_runs`` / ``n_untrained``: the encoding's FINISHED runs at that training size
    and those that did not train (an encoding none of whose runs trained: ``n_pairs`` 0 and NaN
    gain everywhere). Empty without a control run. ``selected``: :func:`selected_scores` of
    ``df``, when the caller has it. Columns: :data:`GAIN_COLUMNS`.
    """
    fin = tested_rows(df)
    if not (fin["encoding"] == control).any():
        return pd.DataFrame(columns=GAIN_COLUMNS)
    sel = selected_scores(df) if selected is None else selected
    ctl = selected_scores(fin.loc[fin["encoding"] == control].assign(trained=True))
    runs = fin.assign(_untrained=fin["run_id"].where(~fin["trained"].astype(bool))).groupby(
        ["train_resolution", "encoding"], sort=True).agg(n_runs=("run_id", "nunique"),
                                                         n_untrained=("_untrained", "nunique"))
    where = ["regime", "train_resolution", "side", "test_rows", "test_cols"]
    mine = {k: g.set_index("seed")["test_acc"] for k, g in sel.groupby([*where, "encoding"], sort=True)}
    rows = []
    for key, g in ctl.groupby(where, sort=True):
        base = g.set_index("seed")["test_acc"]
        cell = {**dict(zip(where, key)), "test_resolution": Size(int(key[3]), int(key[4])).label}
        counts = runs.loc[key[1]]
        ctl_mean = float(base.mean())
        rows.append({**cell, "encoding": control, "n_pairs": 0, "gain": math.nan, "ci_low": math.nan,
                     "ci_high": math.nan, "encoding_acc": ctl_mean, "control_acc": ctl_mean,
                     "n_runs": int(counts.loc[control, "n_runs"]),
                     "n_untrained": int(counts.loc[control, "n_untrained"])})
        for enc, n in counts.drop(index=control).iterrows():
            acc = mine.get((*key, enc), pd.Series(dtype=float))
            both = pd.concat([acc.rename("a"), base.rename("b")], axis=1, join="inner").dropna()
            s = interval_stats((both["a"] - both["b"]).to_numpy(dtype=float), bounds=(-1.0, 1.0))
            rows.append({**cell, "encoding": enc, "n_pairs": len(both), "gain": s["mean"], "ci_low": s["ci_low"],
                         "ci_high": s["ci_high"], "encoding_acc": float(both["a"].mean()) if len(both) else math.nan,
                         "control_acc": float(both["b"].mean()) if len(both) else math.nan,
                         "n_runs": int(n["n_runs"]), "n_untrained": int(n["n_untrained"])})
    out = pd.DataFrame(rows, columns=GAIN_COLUMNS)
    for col in ("train_resolution", "test_rows", "test_cols", "n_pairs", "n_runs", "n_untrained"):
        out[col] = out[col].astype("int64")
    for col in ("gain", "ci_low", "ci_high", "encoding_acc", "control_acc"):
        out[col] = out[col].astype(float)
    out["_control"] = out["encoding"] != control
    out = out.sort_values(["regime", "train_resolution", "test_rows", "test_cols", "_control", "encoding"],
                          ignore_index=True)
    return out[GAIN_COLUMNS]
