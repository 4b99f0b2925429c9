"""Where the study's time went: the runs' logged breakdowns (``time/<phase>_s``,
:mod:`harness.training.stopwatch`) added up into the study's totals, a pure function of the table.

The runs' seconds are worker-seconds: with two workers, two runs' phases overlap in time. The
wall time of the last ``harness run`` and its worker count, logged on the evaluate parent run,
are shown beside them (what start-up, waiting and the report took is what the wall time times
the workers leaves uncovered, when that ``harness run`` trained every run)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from harness.training.stopwatch import OTHER, PHASES, TOTAL
from harness.wording import count

__all__ = ["TIME_COLUMNS", "time_totals"]

#: the columns of the totals table
TIME_COLUMNS = ["phase", "seconds", "share", "per_run_s"]


def time_totals(timing: pd.DataFrame, wall: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per phase (in :data:`~harness.training.stopwatch.PHASES` order, then ``other`` and
    ``total``): the seconds summed over the runs of ``timing`` (one row per run, a column per
    phase, as :func:`harness.report.results_table` reads them), the share of the runs' total,
    and the mean per run. Runs that logged no breakdown (written before it existed) are left
    out. ``wall``: ``{"wall_s", "workers"}`` of the last ``harness run``, added as two rows."""
    cols = [c for c in (*PHASES, OTHER, TOTAL) if c in timing.columns]
    if timing.empty or TOTAL not in cols:
        return pd.DataFrame(columns=TIME_COLUMNS)
    runs = timing.loc[timing[TOTAL].notna(), cols].fillna(0.0)
    if runs.empty:
        return pd.DataFrame(columns=TIME_COLUMNS)
    total = float(runs[TOTAL].sum())
    rows = [{"phase": c, "seconds": float(runs[c].sum()),
             "share": float(runs[c].sum()) / total if total > 0 else math.nan,
             "per_run_s": float(runs[c].mean())} for c in cols]
    rows[-1]["phase"] = f"total of {count(len(runs), 'run')} (worker-seconds)"
    wall = dict(wall or {})
    if wall.get("wall_s") is not None:
        workers = int(wall.get("workers") or 1)
        rows.append({"phase": f"wall time of the last `harness run` ({workers} worker{'s' if workers != 1 else ''})",
                     "seconds": float(wall["wall_s"]), "share": math.nan, "per_run_s": math.nan})
    return pd.DataFrame(rows, columns=TIME_COLUMNS)
