"""Validation accuracy of every tuning trial (studies with a tune stage)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from harness.figures import ReportFigure, register_figure
from harness.figures.plotting import chance_line, encoding_palette

__all__ = ["TuningHistory"]


@register_figure("tuning_history")
class TuningHistory(ReportFigure):
    title = "Tuning history"
    caption = ("Tuning: validation accuracy of every trial, per encoding; dotted grey: chance (1 / number of "
               "classes).")
    order = 50

    def draw(self, runs, tables):
        if not len(runs.tuning):
            return None
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.scatterplot(data=runs.tuning, x="trial", y="val_acc", hue="encoding", style="state",
                        palette=encoding_palette(tables), ax=ax)
        chance_line(ax, runs.results)
        ax.set(title="tuning history: validation accuracy per trial", ylabel="validation accuracy")
        return fig
