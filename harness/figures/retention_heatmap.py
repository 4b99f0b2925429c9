"""Accuracy kept relative to the training resolution: encodings by test resolution."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from harness.figures import ReportFigure, register_figure

__all__ = ["RetentionHeatmap"]


@register_figure("retention_heatmap")
class RetentionHeatmap(ReportFigure):
    title = "Retention"
    caption = ("Accuracy kept relative to the training resolution. An encoding at chance at the training "
               "resolution keeps chance everywhere: its retention near 1 means nothing.")
    order = 20

    def draw(self, runs, tables):
        ret, acc = tables["retention"], tables["accuracy"]
        if not len(ret) or acc.empty:
            return None
        first = sorted(acc.train_resolution.unique())[0]  # the smallest training resolution
        piv = ret[ret.train_resolution == first].pivot(index="encoding", columns="test_resolution", values="retention")
        fig, ax = plt.subplots(figsize=(1.2 * piv.shape[1] + 3, 0.45 * piv.shape[0] + 1.5))
        sns.heatmap(piv.astype(float), annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1.1, ax=ax,
                    cbar_kws={"label": "accuracy / accuracy at training resolution"})
        ax.set(title=f"retention (trained at {first} px)", xlabel="test resolution (px)", ylabel="")
        return fig
