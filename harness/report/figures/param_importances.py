"""Which tuned hyperparameters mattered, per encoding (fANOVA over the tuning trials)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import seaborn as sns

from harness.report.figures import ReportFigure, register_figure
from harness.report.figures.plotting import encoding_palette

__all__ = ["ParamImportances", "importances"]


@register_figure("param_importances")
class ParamImportances(ReportFigure):
    title = "Hyperparameter importance"
    caption = "Tuning: which hyperparameters mattered (fANOVA); one colour per encoding (twenty colours)."
    order = 60

    def draw(self, runs, tables):
        if not len(runs.tuning):
            return None
        imp = importances(runs.tuning)
        if not len(imp):
            return None
        fig, ax = plt.subplots(figsize=(7, 0.5 * imp.parameter.nunique() * imp.encoding.nunique() + 2))
        sns.barplot(data=imp, y="parameter", x="importance", hue="encoding", palette=encoding_palette(tables), ax=ax)
        ax.set(title="hyperparameter importance (fANOVA, from the tuning trials)")
        return fig


def importances(tune: pd.DataFrame) -> pd.DataFrame:
    """Parameter importances per encoding, from the tuning trials recorded in MLflow: columns
    encoding, parameter, importance (encodings with fewer than two complete trials left out)."""
    params = [c for c in tune.columns if c.startswith("train.")]
    rows = []
    for enc, g in tune.groupby("encoding"):
        g = g.dropna(subset=["val_acc", *params])
        if len(g) < 2 or not params:
            continue
        study = optuna.create_study(direction="maximize")
        for _, t in g.iterrows():
            values = {p: float(t[p]) for p in params}
            dists = {p: optuna.distributions.FloatDistribution(float(g[p].min()), float(g[p].max()) + 1e-12)
                     for p in params}
            study.add_trial(optuna.trial.create_trial(params=values, distributions=dists, value=float(t.val_acc)))
        try:
            for p, v in optuna.importance.get_param_importances(study).items():
                rows.append({"encoding": enc, "parameter": p, "importance": v})
        except (RuntimeError, ValueError):
            continue
    return pd.DataFrame(rows, columns=["encoding", "parameter", "importance"])
