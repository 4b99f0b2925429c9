"""Validation accuracy per epoch of the evaluate runs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from harness.report.figures import ReportFigure, register_figure
from harness.report.figures.plotting import chance_line, encoding_styles, legend_outside

__all__ = ["ValidationCurves"]


def _sd_in_range(values) -> tuple[float, float]:
    """Mean ± sd (ddof 1, as seaborn's "sd") cut to [0, 1]: an accuracy's spread drawn past 1 reads
    as an accuracy above 1."""
    mean, sd = float(values.mean()), float(values.std())
    return max(mean - sd, 0.0), min(mean + sd, 1.0)


@register_figure("validation_curves")
class ValidationCurves(ReportFigure):
    title = "Validation curves"
    caption = ("Validation accuracy per epoch at the training resolution (colour and marker: the encoding; band: "
               "mean ± sd over seeds, cut to [0, 1]); dotted grey: chance (1 / number of classes).")
    order = 40

    def draw(self, runs, tables):
        if not len(runs.curves):
            return None
        fig, ax = plt.subplots(figsize=(7, 4.5))
        shown = set(runs.curves["encoding"])
        styles = {e: style for e, style in encoding_styles(tables).items() if e in shown}
        sns.lineplot(data=runs.curves, x="epoch", y="val_acc", hue="encoding", style="encoding", ax=ax,
                     errorbar=_sd_in_range,
                     palette={e: c for e, (c, _) in styles.items()}, markers={e: m for e, (_, m) in styles.items()},
                     dashes=False)
        chance_line(ax, runs.results)
        ax.set(title="validation accuracy per epoch (band: sd over seeds, cut to [0, 1])", ylabel="validation accuracy")
        legend_outside(ax)
        return fig
