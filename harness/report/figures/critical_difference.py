"""Critical-difference diagrams: the encodings' mean ranks over (seed, test size) blocks, per regime
and side of the training size (Friedman's test, then Nemenyi's critical difference, by autorank)."""

from __future__ import annotations

import contextlib
import io
import warnings

import matplotlib.pyplot as plt

from harness.report.analysis import MIN_BLOCKS, friedman_nemenyi
from harness.report.figures import ReportFigure, register_figure

__all__ = ["CriticalDifference"]


@register_figure("critical_difference")
class CriticalDifference(ReportFigure):
    title = "Critical-difference diagrams"
    caption = ("Each encoding under its selected variant (chosen on one half of the test images, scored on the other), "
               "ranked in every block of one seed and one test size on that side of the training size (rank 1: the "
               "best); an encoding's mark is its mean rank. A bar joins encodings whose mean ranks differ by less than "
               "Nemenyi's critical difference (CD, drawn at the top): those are not told apart. Friedman's test "
               "first; the blocks of one seed share its weights, so read it as exploratory. Sides with fewer than "
               f"three encodings or {MIN_BLOCKS} blocks are not drawn.")
    order = 15

    def draw(self, runs, tables):
        from autorank import plot_stats

        ranks = tables["friedman"].dropna(subset=["encoding"])
        if ranks.empty:
            return None
        alpha = float(ranks["alpha"].iloc[0])
        _, results = friedman_nemenyi(tables["selected"], alpha)
        height = max(2.0, 0.28 * ranks["encoding"].nunique() + 1.2)
        fig, axes = plt.subplots(len(results), 1, figsize=(8, height * len(results)), squeeze=False)
        for ((regime, train, side), res), ax in zip(sorted(results.items()), axes[:, 0]):
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                plot_stats(res, allow_insignificant=True, ax=ax)
            ax.set_title(f"{regime}, {side} the training size ({train} px): Friedman p = {res.pvalue:.3g}, "
                         f"CD = {res.cd:.2f} ({res.num_samples} blocks)", fontsize=9)
        return fig
