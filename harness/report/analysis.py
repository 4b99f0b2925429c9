"""The declared question of a study, and statistics built for few seeds.

A study spec declares its primary analysis (``analysis:``, :class:`harness.config.AnalysisConfig`)
before it runs: the endpoint (each seed's mean selected accuracy over the test sizes on one side
of the training size, per regime) and the primary comparisons (``A vs B``, encoding labels).
The multiple-testing family is that set, corrected by Holm over it alone (:func:`primary_analysis`);
every other test of the report is exploratory and corrected within its own family.

With three to five seeds a p-value alone cannot tell "no difference" from "too few runs", so
every comparison also reports:

- the paired difference (A - B, per seed) with its Student-t interval over seeds (the one the
  paired t-test inverts: it excludes 0 exactly when the test's p, before Holm, is below 0.05);
- the probability of improvement P(A > B) (:func:`probability_of_improvement`: the chance that
  a run of A beats a run of B at the same test size, ties counting one half, averaged over the
  test sizes; Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"), with a
  bootstrap interval over seeds stratified by test size;
- the seeds a two-sided paired t-test would need for 80% power at the observed effect and spread
  (:func:`seeds_needed`), or "more than 30".

Ranking many encodings uses autorank (Friedman's test, then Nemenyi's critical difference:
:func:`friedman_nemenyi`), which also draws the critical-difference diagram. Pure functions of
:func:`harness.report.selection.selected_scores`.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness.config import parse_comparison
from harness.report.multiplicity import holm
from harness.report.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, MIN_PAIRS, t_interval

__all__ = ["FRIEDMAN_COLUMNS", "MIN_BLOCKS", "PRIMARY_COLUMNS", "friedman_nemenyi", "paired_power", "parse_comparison",
           "primary_analysis", "probability_of_improvement", "seeds_needed", "seeds_text"]

#: autorank's floor: the fewest blocks (here (seed, test size) pairs) it ranks over
MIN_BLOCKS = 5
_ZERO_SPREAD = 1e-12

PRIMARY_COLUMNS = ["regime", "train_resolution", "side", "a", "b", "a_label", "b_label", "n_pairs", "a_mean", "b_mean",
                   "mean_diff",
                   "diff_low", "diff_high", "prob", "prob_low", "prob_high", "p_value", "p_holm", "significant",
                   "seeds_needed", "seeds_note", "seeds_needed_family", "seeds_note_family", "note"]
FRIEDMAN_COLUMNS = ["regime", "train_resolution", "side", "encoding", "mean_rank", "n_blocks", "n_encodings",
                    "friedman_p", "cd", "alpha", "note"]


# ---------------------------------------------------------------------------- few seeds


def probability_of_improvement(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]], *,
                               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                               level: float = CONFIDENCE) -> tuple[float, float, float]:
    """P(A > B) and its percentile-bootstrap interval: ``(p, low, high)``.

    ``a`` and ``b`` map a stratum (a test size) to the values of A's and B's seeds there. Per
    stratum, P = the mean over every pair (i, j) of 1 if a_i > b_j, 1/2 if equal, 0 if less (the
    Mann-Whitney statistic over n_a * n_b); P is the mean over the strata both have. The
    interval resamples A's and B's seeds with replacement within each stratum, independently
    (a stratified bootstrap; numpy's default_rng with ``seed``: the same answer every time).
    NaN with no stratum both have.
    """
    strata = [k for k in a if k in b and len(a[k]) and len(b[k])]
    if not strata:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    point, boot = [], np.zeros(resamples)
    for k in strata:
        x, y = np.asarray(a[k], dtype=float), np.asarray(b[k], dtype=float)
        point.append(_mw(x[None, :], y[None, :])[0])
        boot += _mw(x[rng.integers(0, len(x), (resamples, len(x)))], y[rng.integers(0, len(y), (resamples, len(y)))])
    boot /= len(strata)
    lo, hi = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(np.mean(point)), float(lo), float(hi)


def _mw(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row r: the mean over (i, j) of [x_ri > y_rj] + [x_ri == y_rj] / 2."""
    gt = (x[:, :, None] > y[:, None, :]).mean(axis=(1, 2))
    eq = (x[:, :, None] == y[:, None, :]).mean(axis=(1, 2))
    return gt + 0.5 * eq


def paired_power(effect: float, n: int, alpha: float = 0.05) -> float:
    """The power of a two-sided paired t-test on ``n`` pairs at level ``alpha`` when the
    differences have mean / sd = ``effect`` (Cohen's d_z): P(|T| > t_{1-alpha/2, n-1}) for T
    noncentral t with n - 1 degrees of freedom and noncentrality effect * sqrt(n). Where scipy's
    noncentral t gives NaN (a noncentrality far in its tail, where the power is 1 to many
    decimals), the normal approximation Phi(nc - t) + Phi(-nc - t) stands in."""
    df = n - 1
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    nc = abs(effect) * math.sqrt(n)
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if math.isnan(power):
        power = float(stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc))
    return power


def seeds_needed(diffs: Iterable[float], *, alpha: float = 0.05, power: float = 0.8,
                 max_seeds: int = 30) -> tuple[int | None, str]:
    """The fewest seeds (pairs) at which a two-sided paired t-test at ``alpha`` reaches
    ``power`` for the effect and spread of ``diffs`` (d_z = |mean| / sd, ddof=1, taken as the
    truth): ``(n, "")``, or ``(None, why)``: "more than 30" (``max_seeds``), "no variance in the
    differences", "fewer than 2 pairs"."""
    d = np.asarray([v for v in diffs if not math.isnan(float(v))], dtype=float)
    if len(d) < 2:
        return None, "fewer than 2 pairs"
    if np.ptp(d) <= _ZERO_SPREAD:
        return None, "no variance in the differences"
    effect = abs(d.mean()) / d.std(ddof=1)
    for n in range(2, max_seeds + 1):
        if paired_power(effect, n, alpha) >= power:
            return n, ""
    return None, f"more than {max_seeds}"


def seeds_text(n: Any, note: str) -> str:
    """A seeds-needed answer in words: ``7 seeds``, or its note (``more than 30``)."""
    return f"{int(n)} seeds" if n is not None and not pd.isna(n) else note


# ---------------------------------------------------------------------------- the primary family


def _strata(selected: pd.DataFrame, where: dict, encoding: str) -> dict[str, list[float]]:
    g = selected.loc[np.logical_and.reduce([selected[c] == v for c, v in {**where, "encoding": encoding}.items()])]
    return {size: list(v) for size, v in g.groupby("test_resolution", sort=True)["test_acc"]}


def primary_analysis(selected: pd.DataFrame, selection: pd.DataFrame, comparisons: Sequence[str],
                     sides: Sequence[str], regimes: Sequence[str] = (), *, alpha: float = 0.05, power: float = 0.8,
                     max_seeds: int = 30, min_pairs: int = MIN_PAIRS) -> pd.DataFrame:
    """The declared comparisons, each per regime (``regimes``; empty: every regime of the
    table), training resolution and side of ``sides`` that the study tested, on each encoding's
    selected accuracy (``selected``: :func:`harness.report.selection.selected_scores`; ``selection``:
    :func:`harness.report.selection.selection_table`, for the variants' names).

    A seed's value is its mean over the side's test sizes; pairs are seeds both encodings have.
    ``a_mean`` / ``b_mean``: the two encodings' means over the pairs; ``mean_diff`` (A - B) with
    ``diff_low`` / ``diff_high`` (:func:`t_interval` of the differences), ``prob`` P(A > B) with its
    interval (:func:`probability_of_improvement`, the side's test sizes as strata), ``p_value``
    (two-sided paired t-test), ``p_holm`` (Holm over the family: the rows of this table that were
    tested), ``significant`` (p_holm < alpha), ``seeds_needed`` (:func:`seeds_needed`; NaN, with the
    reason in ``seeds_note``, when none up to ``max_seeds``), ``seeds_needed_family`` /
    ``seeds_note_family`` (the same at alpha / m for the m tested rows: the level Holm's correction
    asks of the family's first test, so what a claim that survives Holm needs). ``note`` says why a row was not tested
    (an encoding with no run that trained, too few pairs, no variance). Columns: :data:`PRIMARY_COLUMNS`.
    """

    pairs = [parse_comparison(c) for c in comparisons]
    keys = selection[["regime", "train_resolution", "side"]].drop_duplicates()  # tested, trained or not
    keys = keys.loc[keys["side"].isin(list(sides)) & (keys["regime"].isin(list(regimes)) if regimes else True)]
    names = {tuple(r[:4]): r[4] for r in selection[["regime", "train_resolution", "side", "encoding",
                                                      "selected"]].itertuples(index=False)}
    rows, diffs = [], []
    for regime, train, side in sorted(keys.itertuples(index=False), key=lambda k: (k[0], k[1], sides.index(k[2]))):
        where = {"regime": regime, "train_resolution": train, "side": side}
        per_seed = selected.loc[(selected["regime"] == regime) & (selected["train_resolution"] == train)
                                & (selected["side"] == side)].groupby(["encoding", "seed"])["test_acc"].mean()
        for a, b in pairs:
            row = {**where, "a": a, "b": b, "a_label": names.get((regime, train, side, a), a),
                   "b_label": names.get((regime, train, side, b), b), "n_pairs": 0, "p_value": math.nan,
                   "seeds_note": "", "seeds_note_family": "", "note": ""}
            have = set(per_seed.index.get_level_values(0))
            missing = [e for e in (a, b) if e not in have]
            if missing:
                rows.append({**row, "note": f"{' and '.join(missing)}: no run that trained"})
                continue
            both = pd.concat([per_seed.loc[a].rename("a"), per_seed.loc[b].rename("b")], axis=1, join="inner")
            d = (both["a"] - both["b"]).to_numpy(dtype=float)
            lo, hi = t_interval(d, bounds=(-1.0, 1.0))
            prob = probability_of_improvement(_strata(selected, where, a), _strata(selected, where, b))
            n, why = seeds_needed(d, alpha=alpha, power=power, max_seeds=max_seeds)
            row.update(n_pairs=len(d), a_mean=float(both["a"].mean()), b_mean=float(both["b"].mean()),
                       mean_diff=float(d.mean()) if len(d) else math.nan, diff_low=lo, diff_high=hi,
                       prob=prob[0], prob_low=prob[1], prob_high=prob[2], seeds_needed=n, seeds_note=why)
            if len(d) < min_pairs:
                row["note"] = f"too few pairs ({len(d)}; a test needs {min_pairs})"
            elif np.ptp(d) <= _ZERO_SPREAD:
                row["note"] = "no variance in the differences"
            else:
                row["p_value"] = float(stats.ttest_1samp(d, 0.0).pvalue)
            rows.append(row)
            diffs.append((len(rows) - 1, d))
    tested = sum(not math.isnan(r["p_value"]) for r in rows)
    for i, d in diffs:  # the seeds at Holm's strictest level over the family (alpha / m)
        rows[i]["seeds_needed_family"], rows[i]["seeds_note_family"] = seeds_needed(
            d, alpha=alpha / max(1, tested), power=power, max_seeds=max_seeds)
    out = pd.DataFrame(rows, columns=[c for c in PRIMARY_COLUMNS if c not in ("p_holm", "significant")])
    for col in ("a_mean", "b_mean", "mean_diff", "diff_low", "diff_high", "prob", "prob_low", "prob_high", "p_value"):
        out[col] = out[col].astype(float)
    out["seeds_needed"] = out["seeds_needed"].astype("Int64")
    out["seeds_needed_family"] = out["seeds_needed_family"].astype("Int64")
    out["n_pairs"] = out["n_pairs"].astype("int64")
    out["p_holm"] = pd.Series(holm(out["p_value"]), dtype=float)
    out["significant"] = (out["p_holm"] < alpha).astype(bool)
    return out[PRIMARY_COLUMNS]


# ---------------------------------------------------------------------------- ranking


def friedman_nemenyi(selected: pd.DataFrame, alpha: float = 0.05) -> tuple[pd.DataFrame, dict[tuple, Any]]:
    """Encodings ranked per regime, training resolution and side (above, below) by autorank: Friedman's test over
    blocks of (seed, test size), then Nemenyi's critical difference (CD) of the mean ranks.

    The blocks of one seed share its weights, so they are not independent: read the test as
    exploratory. An encoding missing from a block (a seed that did not train) is left out of
    that ranking (named in ``note``). A side with fewer than 3 encodings or :data:`MIN_BLOCKS`
    blocks is not ranked (one row, ``encoding`` None, ``note`` saying why). Returns the table
    (:data:`FRIEDMAN_COLUMNS`; mean rank 1 is the best) and autorank's results by (regime,
    train_resolution, side), for the critical-difference diagram."""
    from autorank import autorank  # noqa: PLC0415 - heavy: only when a report ranks

    rows, results = [], {}
    ranked = selected.loc[selected["side"].isin(["above", "below"])]
    for (regime, train, side), g in ranked.groupby(["regime", "train_resolution", "side"], sort=True):
        base = {"regime": regime, "train_resolution": int(train), "side": side, "alpha": alpha}
        blocks = g.pivot_table(index=["seed", "test_rows", "test_cols"], columns="encoding", values="test_acc")
        left_out = sorted(c for c in blocks.columns if blocks[c].isna().any())
        blocks = blocks.drop(columns=left_out).dropna()
        note = f"left out (a seed missing): {', '.join(left_out)}" if left_out else ""
        if blocks.shape[1] < 3 or len(blocks) < MIN_BLOCKS:
            why = (f"not ranked: {blocks.shape[1]} encodings (a ranking needs 3)" if blocks.shape[1] < 3 else
                   f"not ranked: {len(blocks)} (seed, size) blocks (autorank needs {MIN_BLOCKS})")
            rows.append({**base, "encoding": None, "n_blocks": len(blocks), "n_encodings": blocks.shape[1],
                         "note": "; ".join(x for x in (why, note) if x)})
            continue
        data = blocks.reset_index(drop=True)
        data.columns = [str(c) for c in data.columns]
        # autorank prints its choice of test, and warns about the normality and effect sizes it also
        # computes (constant columns): neither is used here
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = autorank(data, alpha=alpha, verbose=False, order="descending", force_mode="nonparametric")
        results[(regime, int(train), side)] = res
        ranks = res.rankdf["meanrank"].sort_values(kind="stable")
        for enc, r in ranks.items():
            rows.append({**base, "encoding": enc, "mean_rank": float(r), "n_blocks": len(data),
                         "n_encodings": data.shape[1], "friedman_p": float(res.pvalue), "cd": float(res.cd),
                         "note": note})
    out = pd.DataFrame(rows, columns=FRIEDMAN_COLUMNS)
    for col in ("mean_rank", "friedman_p", "cd", "alpha"):
        out[col] = out[col].astype(float)
    return out, results
