"""Validation accuracy per epoch of the evaluate runs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from harness.figures import ReportFigure, register_figure
from harness.figures.plotting import chance_line, encoding_palette, legend_outside

__all__ = ["ValidationCurves"]


@register_figure("validation_curves")
class ValidationCurves(ReportFigure):
    title = "Validation curves"
    caption = ("Validation accuracy per epoch at the training resolution; dotted grey: chance (1 / number of "
               "classes).")
    order = 40

    def draw(self, runs, tables):
        if not len(runs.curves):
            return None
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=runs.curves, x="epoch", y="val_acc", hue="encoding", palette=encoding_palette(tables),
                     errorbar="sd", ax=ax)
        chance_line(ax, runs.results)
        ax.set(title="validation accuracy per epoch (band: sd over seeds)", ylabel="validation accuracy")
        legend_outside(ax)
        return fig
