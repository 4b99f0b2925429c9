"""The correction of a family of tests for their number: Holm-Bonferroni.

Its own module because both the primary analysis (:mod:`harness.report.analysis`) and the
exploratory comparisons (:mod:`harness.report.comparisons`, which imports the analysis) correct
their families with it; ``harness.report.comparisons.holm`` is this same function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["holm"]


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
