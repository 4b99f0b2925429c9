"""Report figures: one file per figure, registered by name, drawn by ``harness report``.

A figure is a subclass of :class:`ReportFigure` with a ``title``, a ``caption`` and one
method, ``draw(runs, tables)``, that returns a matplotlib figure (or None when the study has
nothing to show, e.g. no tune stage). The report saves it as ``<name>.png`` and ``<name>.pdf``
(:func:`harness.report.figures.plotting.save`) and embeds the PNG in the page with its caption, in
the order of ``order`` (then name). Built-in figures live in
this package, one module each; a plugin file registers more with ``@register_figure(name)``
(spec ``plugins:``, ``--plugin``, or an entry point in the group ``harness.figures``).

Every registered figure runs the same checks (:mod:`harness.report.figures.conformance`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.registry import Registry

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from harness.report import StudyRuns

__all__ = ["FIGURES", "ReportFigure", "register_figure"]


class ReportFigure:
    """One figure of the report.

    ``draw`` receives the study's runs as read from MLflow (:class:`harness.report.StudyRuns`:
    ``results``, the tidy table of one row per run, regime, test size, policy and
    temperature; ``curves``, the validation accuracy per epoch; ``tuning``, one row per tuning
    trial; ``cells``, ``spec``, ``provenance``) and the report's summary tables (``tables``,
    :data:`harness.report.TABLES`: ``accuracy``, ``retention``, ``extrapolation``, ``ranking``,
    ``selected``, ``selection``, ``headline``, ``primary``, ``friedman``, ``comparisons``, ``gain``,
    ``untrained``, ``convergence``, ``cost``, ``missing``, ``time``; see :mod:`harness.report.stats`,
    :mod:`harness.report.selection`, :mod:`harness.report.analysis`, :mod:`harness.report.comparisons` and
    :mod:`harness.report.curves`). It must not change them, and it must
    close any figure it opens but does not return. An encoding's colour and marker come from
    :func:`harness.report.figures.plotting.encoding_styles`, so that no two share both.
    """

    #: set by the registry: the figure's name, and the stem of its files (``<name>.png``, ``<name>.pdf``)
    name: str = ""
    #: a few words, shown above the caption
    title: str = ""
    #: one or two sentences under the figure: what it shows and how to read it
    caption: str = ""
    #: place on the page: smaller first (built-ins use 10 to 60); then by name
    order: float = 100

    def draw(self, runs: StudyRuns, tables: dict[str, Any]) -> Figure | None:
        """The figure for this study, or None when there is nothing to draw."""
        raise NotImplementedError(f"{type(self).__qualname__} must define draw(runs, tables)")


#: every report figure, built-in and plugin
FIGURES: Registry[type[ReportFigure]] = Registry("figure", base=ReportFigure, builtins="harness.report.figures",
                                                 group="harness.figures", exclude=("conformance", "plotting"))
register_figure = FIGURES.register
