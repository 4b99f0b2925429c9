"""Choose on one half, score on the other: each encoding's variant, selected without the scored images.

A variant (new-grid policy, attention temperature) is a choice made after training. Choosing
it on the test images and scoring it on the same images crowns the luckiest of several noisy
scores (the winner's curse). Every trained run therefore logs its accuracy on two fixed
halves of the test images, A and B (:func:`harness.training.train.split_in_halves`: seeded,
class-stratified, the same images in every run), from the same predictions as its accuracy.
Per regime, training resolution, side of the training size (:func:`~harness.report.stats.side`)
and encoding:

- the variant chosen on A is the one with the highest mean accuracy on half A (each seed's
  mean over the test sizes on that side, then the mean over seeds); it is scored on half B;
  the variant chosen on B is scored on half A; a seed's selected accuracy at a test size is
  the mean of the two (2-fold cross-fitting, both ways). Half B never enters the choice that
  half B scores, and the other way round;
- ties go to the encoding's default variant (its own policy, temperature ``none``), then to the
  first by name;
- runs logged before the half metrics (any run of the encoding lacks them) cannot be
  cross-fitted: the encoding is shown under its default variant, which is chosen by nobody,
  scored on all of the test images, and labelled so (:data:`DEFAULT_ONLY`); an encoding with
  a single variant has nothing to choose (:data:`ONLY_VARIANT`);
- the best variant on the test images themselves appears only as an optimistic upper bound.

Pure functions of the tidy results table (the conventions of :mod:`harness.report.stats`:
FINISHED rows of runs that trained, a seed's repeated runs averaged first). The headline, the
main tables and the encoding comparisons read :func:`selected_scores`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report.stats import RANK_DECIMALS, interval_stats, side, tested_rows
from harness.schema import NO_POLICY, NO_TEMPERATURE, Size

__all__ = ["CROSS_FITTED", "DEFAULT_ONLY", "HALF_COLUMNS", "NO_DEFAULT", "ONLY_VARIANT", "SELECTED_COLUMNS",
           "SELECTION_COLUMNS", "UNTRAINED", "selected_label", "selected_scores", "selection_table", "side_means"]

#: the columns of the results table that hold the accuracy on test halves A and B
HALF_COLUMNS = ("test_acc_a", "test_acc_b")
#: how an encoding's shown variant was found (the ``method`` column)
CROSS_FITTED = "chosen on one half, scored on the other"
DEFAULT_ONLY = "default variant: runs predate the half metrics, no choice made"
ONLY_VARIANT = "its only variant: nothing to choose"
NO_DEFAULT = "no selection: runs predate the half metrics, and the default variant was not evaluated"
UNTRAINED = "did not train"

_GROUP = ["regime", "train_resolution", "side", "encoding"]
_VARIANT = ["policy", "temperature"]
_SIZE = ["test_rows", "test_cols"]
#: the long table of :func:`selected_scores`
SELECTED_COLUMNS = [*_GROUP, "seed", "test_resolution", *_SIZE, "test_acc"]
#: the table of :func:`selection_table`
SELECTION_COLUMNS = [*_GROUP, "selected", "method", "chosen_a", "chosen_b", "n_seeds", "mean", "ci_low", "ci_high",
                     "default", "default_mean", "default_ci_low", "default_ci_high", "upper", "upper_mean",
                     "upper_ci_low", "upper_ci_high", "n_runs", "n_untrained"]


def _inner(policy: str, temperature: str) -> str:
    pol = "no policy" if policy == NO_POLICY else f"{policy} policy" if policy == "default" else policy
    return f"{pol}, temp {temperature}"


def selected_label(encoding: str, chosen_a: tuple[str, str] | None, chosen_b: tuple[str, str] | None) -> str:
    """``rope_axial (interpolate, temp log)`` when both halves chose the same (policy,
    temperature); ``rope_axial (A: interpolate, temp log; B: extrapolate, temp none)`` when they
    differ; the encoding alone when nothing was chosen."""
    if chosen_a is None or chosen_b is None:
        return encoding
    if chosen_a == chosen_b:
        return f"{encoding} ({_inner(*chosen_a)})"
    return f"{encoding} (A: {_inner(*chosen_a)}; B: {_inner(*chosen_b)})"


# ---------------------------------------------------------------------------- per seed


def _per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """FINISHED rows of runs that trained, one per (regime, train, side, encoding, variant,
    size, seed): accuracy, the half accuracies (NaN unless every run of the row has both),
    whether the variant is the encoding's default."""
    fin = tested_rows(df)
    fin = fin.loc[fin["trained"].astype(bool)].copy()
    for col in HALF_COLUMNS:
        fin[col] = pd.to_numeric(fin[col], errors="coerce") if col in fin.columns else math.nan
    own = fin["default_policy"] if "default_policy" in fin.columns else pd.Series(None, index=fin.index)
    fin["_default"] = ((fin["policy"] == own) | (fin["policy"] == "default")) & (fin["temperature"] == NO_TEMPERATURE)
    fin["_halves"] = fin[list(HALF_COLUMNS)].notna().all(axis=1)
    fin["side"] = [side(r, c, t) for r, c, t in zip(fin["test_rows"], fin["test_cols"], fin["train_resolution"])]
    keys = [*_GROUP, *_VARIANT, *_SIZE, "seed"]
    out = fin.groupby(keys, as_index=False, sort=True).agg(
        test_acc=("test_acc", "mean"), test_acc_a=("test_acc_a", "mean"), test_acc_b=("test_acc_b", "mean"),
        _halves=("_halves", "all"), _default=("_default", "any"))
    out.loc[~out["_halves"], list(HALF_COLUMNS)] = math.nan
    return out


def _first(variants: pd.DataFrame, column: str | None) -> pd.DataFrame:
    """Per group, the variant with the highest ``column`` score (ties: the default variant, then
    the first by name); with ``column`` None, the first default variant by name."""
    order = variants.loc[variants["_default"]] if column is None else variants.assign(_neg=-variants[column])
    keys = [*_GROUP, *_VARIANT] if column is None else [*_GROUP, "_neg", "_not_default", *_VARIANT]
    return order.sort_values(keys).drop_duplicates(_GROUP)[[*_GROUP, *_VARIANT]]


def _rows_of(seeds: pd.DataFrame, chosen: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows of ``seeds`` under each group's ``chosen`` variant: group, size, seed, ``column``."""
    return seeds.merge(chosen, on=[*_GROUP, *_VARIANT])[[*_GROUP, *_SIZE, "seed", column]]


def _selections(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple, dict]]:
    """(the selected accuracy per group, seed and size; what was chosen per group: method,
    chosen_a, chosen_b), for every (regime, train, side, encoding) with a run that trained."""
    seeds = _per_seed(df)
    long_columns = [*_GROUP, *_SIZE, "seed", "test_acc"]
    if seeds.empty:
        return pd.DataFrame(columns=long_columns), {}
    # a variant's score on a half: each seed's mean over the side's sizes, then the mean over seeds
    per_seed = seeds.groupby([*_GROUP, *_VARIANT, "seed"], sort=True)[list(HALF_COLUMNS)].mean()
    score = per_seed.groupby(level=list(range(len(_GROUP) + len(_VARIANT))), sort=True).mean().round(RANK_DECIMALS)
    variants = seeds.groupby([*_GROUP, *_VARIANT], sort=True).agg(
        _default=("_default", "any"), _halves=("_halves", "all")).reset_index()
    variants = variants.merge(score.reset_index(), on=[*_GROUP, *_VARIANT])
    variants["_not_default"] = ~variants["_default"]
    groups = variants.groupby(_GROUP, sort=True).agg(n=("policy", "size"), halves=("_halves", "all"),
                                                     has_default=("_default", "any")).reset_index()
    cross = groups.loc[groups["halves"], _GROUP]
    only = groups.loc[~groups["halves"] & (groups["n"] == 1), _GROUP]
    default = groups.loc[~groups["halves"] & (groups["n"] > 1) & groups["has_default"], _GROUP]
    va = _first(variants.merge(cross), "test_acc_a")
    vb = _first(variants.merge(cross), "test_acc_b")
    both = _rows_of(seeds, va, "test_acc_b").merge(_rows_of(seeds, vb, "test_acc_a"), on=[*_GROUP, *_SIZE, "seed"])
    both["test_acc"] = (both["test_acc_b"] + both["test_acc_a"]) / 2.0
    single, own = variants.merge(only)[[*_GROUP, *_VARIANT]], _first(variants.merge(default), None)
    long = pd.concat([both[long_columns], _rows_of(seeds, pd.concat([single, own]), "test_acc")], ignore_index=True)
    picks = {tuple(k): {"method": NO_DEFAULT, "chosen_a": None, "chosen_b": None}
             for k in groups[_GROUP].itertuples(index=False)}
    n = len(_GROUP)
    for on_a, on_b, method in ((va, vb, CROSS_FITTED), (single, single, ONLY_VARIANT), (own, own, DEFAULT_ONLY)):
        b_of = {tuple(r[:n]): tuple(r[n:]) for r in on_b[[*_GROUP, *_VARIANT]].itertuples(index=False)}
        for r in on_a[[*_GROUP, *_VARIANT]].itertuples(index=False):
            picks[tuple(r[:n])] = {"method": method, "chosen_a": tuple(r[n:]), "chosen_b": b_of[tuple(r[:n])]}
    return long, picks


def selected_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Each encoding's selected accuracy, one row per (regime, train_resolution, side, encoding,
    seed, test size): cross-fitted where the runs have the half metrics, else the accuracy of
    the default (or only) variant (see the module's docstring). Columns: :data:`SELECTED_COLUMNS`
    (``test_resolution``: the size's label), sorted by them."""
    long, _ = _selections(df)
    long = long.dropna(subset=["test_acc"])
    long["test_resolution"] = [Size(int(r), int(c)).label for r, c in zip(long["test_rows"], long["test_cols"])]
    for col in ("train_resolution", "test_rows", "test_cols", "seed"):
        long[col] = long[col].astype("int64")
    long["test_acc"] = long["test_acc"].astype(float)
    return long.sort_values([*_GROUP, "seed", *_SIZE], ignore_index=True)[SELECTED_COLUMNS]


def side_means(selected: pd.DataFrame) -> pd.DataFrame:
    """Each seed's mean over the test sizes of a side, from :func:`selected_scores`: one row per
    (regime, train_resolution, side, encoding, seed), column ``test_acc``."""
    return selected.groupby([*_GROUP, "seed"], as_index=False, sort=True)["test_acc"].mean()


def _side_stats(per_seed: pd.Series) -> dict:
    s = interval_stats(per_seed.to_numpy(dtype=float))
    return {"n_seeds": s["n_seeds"], "mean": s["mean"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}


def selection_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (regime, train_resolution, side, encoding): the report's main table.

    ``selected``: the encoding's selected variant (:func:`selected_label`), ``method`` how it was
    found, ``chosen_a`` / ``chosen_b`` the (policy, temperature) chosen on each half; ``n_seeds``,
    ``mean``, ``ci_low``, ``ci_high``: its selected accuracy (each seed's mean over the side's
    sizes; the mean and Student-t interval over seeds). ``default``: the encoding's default
    variant (its own policy, temperature none: what a user gets without choosing) and its
    accuracy on all of the test images (``default_*``; NaN where it was not evaluated).
    ``upper``: the variant with the best mean on the test images themselves, and its accuracy:
    an optimistic upper bound, chosen on the scored images. ``n_runs`` / ``n_untrained``: the
    encoding's FINISHED runs at that training size and those that did not train; an encoding
    none of whose runs trained is one row with ``method`` :data:`UNTRAINED` and NaN numbers.
    """
    long, picks = _selections(df)
    seeds = _per_seed(df)
    fin = tested_rows(df)
    fin = fin.assign(side=[side(r, c, t) for r, c, t in zip(fin["test_rows"], fin["test_cols"],
                                                           fin["train_resolution"])],
                     _untrained=fin["run_id"].where(~fin["trained"].astype(bool)))
    runs = fin.groupby(_GROUP, sort=True).agg(n_runs=("run_id", "nunique"), n_untrained=("_untrained", "nunique"))
    # each seed's mean over the side's sizes: of the selected accuracy, and of every variant's on all images
    chosen = long.dropna(subset=["test_acc"]).groupby([*_GROUP, "seed"], sort=True)["test_acc"].mean()
    full = seeds.groupby([*_GROUP, *_VARIANT, "seed"], sort=True)["test_acc"].mean()
    chosen_of = {k: g.droplevel(list(range(len(_GROUP)))) for k, g in chosen.groupby(level=list(range(len(_GROUP))))}
    full_of = {k: g.droplevel(list(range(len(_GROUP)))) for k, g in full.groupby(level=list(range(len(_GROUP))))}
    defaults = seeds.loc[seeds["_default"]].groupby(_GROUP)[_VARIANT].min()
    rows = []
    for key, counts in runs.iterrows():
        base = {**dict(zip(_GROUP, key)), "n_runs": int(counts["n_runs"]), "n_untrained": int(counts["n_untrained"])}
        pick = picks.get(key)
        if pick is None:  # no run of the encoding trained
            rows.append({**base, "selected": key[3], "method": UNTRAINED, "n_seeds": 0})
            continue
        row = {**base, **pick, "selected": selected_label(key[3], pick["chosen_a"], pick["chosen_b"]),
               **_side_stats(chosen_of.get(key, pd.Series(dtype=float)))}
        mine = full_of[key]
        if key in defaults.index:
            d = tuple(defaults.loc[key])
            s = _side_stats(mine.loc[d])
            row.update(default=selected_label(key[3], d, d), default_mean=s["mean"], default_ci_low=s["ci_low"],
                       default_ci_high=s["ci_high"])
        means = mine.groupby(level=[0, 1], sort=True).mean()
        best = sorted(means.index, key=lambda v: (-round(means[v], RANK_DECIMALS), v))[0]
        u = _side_stats(mine.loc[best])
        row.update(upper=selected_label(key[3], best, best), upper_mean=u["mean"], upper_ci_low=u["ci_low"],
                   upper_ci_high=u["ci_high"])
        rows.append(row)
    out = pd.DataFrame(rows, columns=SELECTION_COLUMNS)
    out["n_seeds"] = out["n_seeds"].fillna(0).astype("int64")
    for col in ("mean", "ci_low", "ci_high", "default_mean", "default_ci_low", "default_ci_high", "upper_mean",
                "upper_ci_low", "upper_ci_high"):
        out[col] = out[col].astype(float)
    if len(out):
        out["train_resolution"] = out["train_resolution"].astype("int64")
    return out.sort_values(_GROUP, ignore_index=True)
