"""Test accuracy against test resolution, one panel per training resolution."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from harness.figures import ReportFigure, register_figure
from harness.figures.plotting import encoding_palette, legend_outside

__all__ = ["AccuracyVsResolution"]


@register_figure("accuracy_vs_resolution")
class AccuracyVsResolution(ReportFigure):
    title = "Accuracy against test resolution"
    caption = "Test accuracy against test resolution, one line per encoding; dashed: the training resolution."
    order = 10

    def draw(self, runs, tables):
        acc = tables["accuracy"]
        if acc.empty:
            return None
        palette = encoding_palette(tables)
        train_res = sorted(acc.train_resolution.unique())
        fig, axes = plt.subplots(1, len(train_res), figsize=(7 * len(train_res), 4.8), squeeze=False)
        for ax, tr in zip(axes[0], train_res):
            part = acc[acc.train_resolution == tr].sort_values("test_resolution")
            sns.lineplot(data=part, x="test_resolution", y="mean", hue="encoding", palette=palette, marker="o", ax=ax)
            for enc, g in part.groupby("encoding"):
                # the interval, drawn within the possible range of an accuracy
                ax.fill_between(g.test_resolution.astype(float), g.ci_low.astype(float).clip(0, 1),
                                g.ci_high.astype(float).clip(0, 1), color=palette[enc], alpha=0.12, linewidth=0)
            ax.axvline(tr, color="black", linestyle="--", linewidth=1)
            ax.text(tr, 1.02, f" trained at {tr} px", fontsize=8, va="bottom")
            ax.set(xlabel="test resolution (px)", ylabel="test accuracy", ylim=(0, 1.05),
                   title="accuracy vs test resolution (bands: 95% interval over seeds, clipped to [0, 1])")
            legend_outside(ax)
        return fig
