"""Validation accuracy of every tuning trial (studies with a tune stage)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from harness.report.figures import ReportFigure, register_figure
from harness.report.figures.plotting import chance_line, encoding_styles

__all__ = ["TuningHistory"]


@register_figure("tuning_history")
class TuningHistory(ReportFigure):
    title = "Tuning history"
    caption = ("Tuning: validation accuracy of every trial, per encoding (colour and marker: the encoding; hollow: "
               "a pruned trial); dotted grey: chance (1 / number of classes).")
    order = 50

    def draw(self, runs, tables):
        if not len(runs.tuning):
            return None
        fig, ax = plt.subplots(figsize=(7, 4.5))
        styles = encoding_styles(tables)
        handles = []
        for enc, g in runs.tuning.groupby("encoding", sort=True):
            colour, marker = styles[enc]
            pruned = (g["state"] == "pruned").to_numpy()
            ax.scatter(g["trial"], g["val_acc"], marker=marker, s=30, linewidths=1.2,
                       facecolors=[(1, 1, 1, 0) if p else colour for p in pruned], edgecolors=[colour] * len(g))
            handles.append(Line2D([], [], color=colour, marker=marker, linestyle="", label=enc))
        handles.append(Line2D([], [], color="grey", marker="o", markerfacecolor="none", linestyle="", label="pruned"))
        handles += chance_line(ax, runs.results)
        ax.set(title="tuning history: validation accuracy per trial", xlabel="trial", ylabel="validation accuracy")
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        return fig
