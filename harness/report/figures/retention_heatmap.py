"""Chance-normalised retention: encoding variants by test size, one panel per regime."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from harness.report.figures import ReportFigure, register_figure
from harness.report.figures.plotting import size_order
from harness.report.stats import CHANCE_MARGIN

__all__ = ["RetentionHeatmap"]


@register_figure("retention_heatmap")
class RetentionHeatmap(ReportFigure):
    title = "Retention"
    caption = ("Chance-normalised retention, (acc − chance) / (acc at the training size − chance), mean over the "
               "seeds that trained: 1 keeps all of the accuracy above chance, 0 falls to chance (colours clipped to "
               "[0, 1], the number is exact). Grey n/a: undefined, because the runs did not train or were within "
               f"{CHANCE_MARGIN} of chance at the training size; chance is never shown as perfect retention.")
    order = 20

    def draw(self, runs, tables):
        ret = tables["retention"]
        if ret.empty:
            return None
        panels = ret[["regime", "train_resolution"]].drop_duplicates().sort_values(["regime", "train_resolution"])
        n_rows, n_cols = ret["variant"].nunique(), ret["test_resolution"].nunique()
        fig, axes = plt.subplots(1, len(panels), figsize=((1.0 * n_cols + 1.5) * len(panels) + 4,
                                                          0.35 * n_rows + 1.8), squeeze=False)
        for (regime, train), ax in zip(panels.itertuples(index=False), axes[0]):
            part = ret.loc[(ret["regime"] == regime) & (ret["train_resolution"] == train)]
            piv = part.pivot(index="variant", columns="test_resolution", values="retention")[size_order(part)]
            piv = piv.astype(float)
            ax.set_facecolor("#e6e6e6")  # what a masked (undefined) cell shows
            ax.grid(False)
            sns.heatmap(piv, mask=piv.isna(), annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=ax,
                        cbar_kws={"label": "chance-normalised retention"}, linewidths=0.5, linecolor="white")
            for i, j in zip(*piv.isna().to_numpy().nonzero()):
                ax.text(j + 0.5, i + 0.5, "n/a", ha="center", va="center", fontsize=8, color="#555555")
            ax.set(title=f"{regime}, trained at {train} px", xlabel="test size (px)", ylabel="")
            if ax is not axes[0][0]:
                ax.set_yticklabels([])
        return fig
