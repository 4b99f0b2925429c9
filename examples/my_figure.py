# my_figure.py
import matplotlib.pyplot as plt
import seaborn as sns
from harness.figures import ReportFigure, register_figure

@register_figure("seed_spread")                # the file is seed_spread.png
class SeedSpread(ReportFigure):
    title = "Spread over seeds"
    caption = ("Standard deviation of the test accuracy over seeds, per encoding variant and "
               "test size: how far one seed's answer can be from another's.")
    order = 70                                 # after the built-in figures (10 to 60)

    def draw(self, runs, tables):
        acc = tables["accuracy"].dropna(subset=["std"])  # one row per regime, variant, train and test size
        if acc.empty:
            return None                        # one seed per cell: nothing to show, no figure
        fig, ax = plt.subplots(figsize=(8, 4.5))
        sns.lineplot(data=acc, x="test_resolution", y="std", hue="variant", style="regime",
                     marker="o", ax=ax)
        ax.set(xlabel="test size (px)", ylabel="sd of test accuracy over seeds")
        return fig                             # the report saves, embeds and closes it
