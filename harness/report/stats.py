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
- Intervals are 95% Student-t intervals of the mean over seeds (:func:`t_interval`), cut to
  what the values can be: [0, 1] for a mean accuracy, [-1, 1] for a mean difference of two;
  retention is not bounded. They agree with the paired t-tests of the comparisons.
- Results are new DataFrames with a default index, sorted by their key columns, so the
  order of the input rows never matters.

No I/O, no plotting, no MLflow. The paired tests, the Holm correction and the headline's
test of the best variant's lead are in :mod:`harness.report.comparisons`. Which rows count, a
cell's key and labels, and the interval are :mod:`harness.report.tidy` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from harness.spec.design import CONTROL, MIN_PAIRS
from harness.schema import Cell
from harness.report.tidy import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CELL,
    CELL_OUT,
    CONFIDENCE,
    FINISHED,
    INTERVAL_METHOD,
    VARIANT,
    cell_columns,
    finished,
    interval_stats,
    per_seed,
    require,
    side,
    t_interval,
    tested_rows,
    variant_label,
)

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CEILING",
    "CHANCE_MARGIN",
    "CONTROL",
    "FASTER_THAN_NONE",
    "INTERVAL_METHOD",
    "MIN_PAIRS",
    "RANK_DECIMALS",
    "VARIANT",
    "accuracy_summary",
    "control_runs",
    "cost_table",
    "default_baseline",
    "derive",
    "extrapolation_scores",
    "interval_stats",
    "missing_cells",
    "per_seed",
    "ranking",
    "retention",
    "run_retention",
    "side",
    "t_interval",
    "tested_rows",
    "throughput_warning",
    "trained",
    "untrained_runs",
    "variant_label",
]

#: a run whose final validation accuracy is no more than this above chance did not train; a
#: run this close to chance at the training size has no retention
CHANCE_MARGIN = 0.05
# MIN_PAIRS (the fewest pairs a paired test is run on) and CONTROL: harness.spec.design
#: mean accuracy at or above which two variants are both at the ceiling: a task that leaves
#: them there cannot rank them (the headline says so rather than name a winner by noise)
CEILING = 0.99
# Means are compared for ranking after rounding to this many decimals (ties up to rounding).
RANK_DECIMALS = 12

_SIDES = ("below", "at", "above", "mixed")


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
    require(df, ["run_id", "regime", "policy", "temperature", "train_resolution", "test_rows", "test_cols",
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
                      for v in out[VARIANT].itertuples(index=False)]
    out["trained"] = trained(out["final_val_acc"], out["chance"]).astype(bool)
    out["retention"] = run_retention(out)
    return out


def untrained_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The FINISHED runs that did not train (``trained`` False), one row per run: encoding,
    train_resolution, seed, final_val_acc, chance, mean_test_acc (over every variant and test
    size of the run), run_id; sorted by encoding, train_resolution, seed, run_id."""
    columns = ["encoding", "train_resolution", "seed", "final_val_acc", "chance", "mean_test_acc", "run_id"]
    fin = finished(df, ["encoding", "train_resolution", "seed", "final_val_acc", "chance", "trained", "run_id",
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


def control_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The position-free control (the encoding labelled :data:`CONTROL`) per training
    resolution: ``runs`` (FINISHED), ``at_chance`` (how many did not train, :func:`trained`),
    their mean ``final_val_acc`` and ``chance``. Empty when the study has no control."""
    columns = ["train_resolution", "runs", "at_chance", "final_val_acc", "chance"]
    fin = finished(df, ["encoding", "train_resolution", "final_val_acc", "chance", "trained", "run_id"])
    fin = fin.loc[fin["encoding"] == CONTROL]
    if fin.empty:
        return pd.DataFrame(columns=columns)
    runs = fin.groupby("run_id", as_index=False, sort=True).agg(
        train_resolution=("train_resolution", "first"), trained=("trained", "first"),
        final_val_acc=("final_val_acc", "first"), chance=("chance", "first"))
    out = runs.groupby("train_resolution", as_index=False, sort=True).agg(
        runs=("run_id", "size"), at_chance=("trained", lambda t: int((~t.astype(bool)).sum())),
        final_val_acc=("final_val_acc", "mean"), chance=("chance", "mean"))
    return out[columns]


# ---------------------------------------------------------------------------- public: intervals


def accuracy_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy over seeds per cell (regime, variant, train_resolution, test size).

    FINISHED rows of runs that trained; a seed's repeated runs are averaged first. Columns:
    regime, variant, encoding, policy, temperature, train_resolution, test_resolution,
    test_rows, test_cols, n_seeds, mean, std (ddof=1; NaN with one seed), ci_low, ci_high
    (:func:`t_interval` over the seeds, in [0, 1]; NaN with fewer than two), n_untrained (runs of
    the cell that did not train: a cell where no run trained has n_seeds 0 and a NaN mean).
    """
    fin = tested_rows(df)
    rows = []
    for key, g in fin.groupby(CELL, sort=True):
        ok = g["trained"].astype(bool)
        seeds = g.loc[ok].groupby("seed")["test_acc"].mean()
        rows.append({**dict(zip(CELL, key)), **interval_stats(seeds.to_numpy()),
                     "n_untrained": g.loc[~ok, "run_id"].nunique()})
    stats = ["n_seeds", "mean", "std", "ci_low", "ci_high", "n_untrained"]
    out = cell_columns(pd.DataFrame(rows, columns=[*CELL, *stats]))
    for col in ("n_seeds", "n_untrained"):
        out[col] = out[col].astype("int64")
    for col in ("mean", "std", "ci_low", "ci_high"):
        out[col] = out[col].astype(float)
    return out[[*CELL_OUT, *stats]]


def retention(df: pd.DataFrame) -> pd.DataFrame:
    """Chance-normalised retention over seeds per cell (the ``retention`` column of
    :func:`derive`, a run's own ratio, averaged over seeds).

    FINISHED rows of runs that trained and whose retention is defined. Columns: regime,
    variant, encoding, policy, temperature, train_resolution, test_resolution, test_rows,
    test_cols, n_seeds, retention (the mean; NaN where no run of the cell has one), ci_low,
    ci_high (:func:`t_interval` over seeds, unbounded: retention is not bounded by [0, 1]: above 1
    is better than at the training size, below 0 worse than chance), n_undefined (runs of the
    cell whose retention is undefined).
    """
    fin = tested_rows(df)
    require(fin, ["retention"])
    rows = []
    for key, g in fin.groupby(CELL, sort=True):
        ok = g["trained"].astype(bool) & g["retention"].notna()
        seeds = g.loc[ok].groupby("seed")["retention"].mean()
        s = interval_stats(seeds.to_numpy(), bounds=None)
        rows.append({**dict(zip(CELL, key)), "n_seeds": s["n_seeds"], "retention": s["mean"], "ci_low": s["ci_low"],
                     "ci_high": s["ci_high"], "n_undefined": g.loc[~ok, "run_id"].nunique()})
    stats = ["n_seeds", "retention", "ci_low", "ci_high", "n_undefined"]
    out = cell_columns(pd.DataFrame(rows, columns=[*CELL, *stats]))
    for col in ("n_seeds", "n_undefined"):
        out[col] = out[col].astype("int64")
    for col in ("retention", "ci_low", "ci_high"):
        out[col] = out[col].astype(float)
    return out[[*CELL_OUT, *stats]]


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
    key = ["regime", "variant", *VARIANT, "train_resolution"]
    rows = []
    for k, g in acc.groupby(["regime", *VARIANT, "train_resolution"], sort=True):
        sides = [side(r, c, k[-1]) for r, c in zip(g["test_rows"], g["test_cols"])]
        by = {s: g.loc[[x == s for x in sides], "mean"] for s in _SIDES}
        rows.append({**dict(zip(["regime", *VARIANT, "train_resolution"], k)), "variant": variant_label(*k[1:4]),
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
    acc["rank"] = acc["mean"].round(RANK_DECIMALS).groupby([acc[c] for c in group]).rank(
        method="min", ascending=False).astype("int64")
    out = acc.sort_values([*group, "rank", "variant"], ignore_index=True)
    return out[["regime", "train_resolution", "test_resolution", "variant", "mean", "rank"]]


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
    fin = finished(df, ["encoding", "train_resolution", "params", "images_per_s", "run_id", "device"])
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


#: an encoding measured this much faster than ``none`` (which does the least work per step) says
#: the study's timings moved with the machine's load, not with the encodings
FASTER_THAN_NONE = 1.05


def throughput_warning(cost: pd.DataFrame) -> str | None:
    """A sentence when encodings of :func:`cost_table` trained more than ``FASTER_THAN_NONE``
    times as fast as ``none``, which does the least work per step: their timings then say more
    about what ran beside them than about the encodings. None otherwise, or without ``none``."""
    ratio = cost.dropna(subset=["throughput_vs_none"]) if "throughput_vs_none" in cost else cost.iloc[:0]
    faster = ratio.loc[ratio["throughput_vs_none"] > FASTER_THAN_NONE]
    if faster.empty:
        return None
    top = faster.sort_values("throughput_vs_none").iloc[-1]
    n = faster["encoding"].nunique()
    return (f"{n} of {ratio['encoding'].nunique() - 1} encodings trained faster than none (up to "
            f"{top['throughput_vs_none']:.2f}x, {top['encoding']}), which does the least work per step: these "
            "timings moved with what ran beside each run, not with the encodings; compare costs with `harness "
            "bench`, which times them side by side.")


def missing_cells(df: pd.DataFrame, expected: Sequence[Cell | tuple[str, int, int]]) -> pd.DataFrame:
    """The expected cells (``harness.schema.Cell``, or (encoding, train_resolution, seed)
    tuples) that have no FINISHED run.

    One row per such cell, in the order of ``expected`` (duplicates once): encoding,
    train_resolution, seed, state, detail. ``state``: "running" if a RUNNING (or SCHEDULED)
    run exists for the cell (a retry in progress wins over an earlier failure), else
    "failed" if a FAILED or KILLED run exists, else "missing"; ``detail``: the run ids of the
    cell's non-finished runs, sorted, joined by ", " ("" when none).
    """
    require(df, ["encoding", "train_resolution", "seed", "run_id", "status"])
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
