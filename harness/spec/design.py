"""The study-design rules a spec is held to before anything is trained and its report applies
after (DESIGN 9): the seeds a paired test needs, the position-free control.

Plain constants and one check of a resolved spec; no torch, pandas, MLflow or Optuna, so
``harness run --dry-run`` states them at once (:mod:`harness.report.stats` reads the same
constants).
"""

from __future__ import annotations

from harness.config import StudySpec

__all__ = ["CONTROL", "MIN_PAIRS", "design_warnings"]

#: the fewest pairs a paired test is run on
MIN_PAIRS = 3
#: the label of the position-free control: on a task whose labels depend on positions it must stay at chance
CONTROL = "none"


def design_warnings(spec: StudySpec) -> list[str]:
    """What in the spec will keep its report from answering (DESIGN 9), said before anything
    is trained: fewer seeds than a paired test needs, no position-free control, a declared
    comparison whose encodings an override left out."""
    out = []
    if len(spec.seeds) < MIN_PAIRS:
        out.append(f"{len(spec.seeds)} seed(s): the report cannot test any difference between encodings "
                   f"(a paired test needs {MIN_PAIRS} seeds; more find smaller differences)")
    if CONTROL not in [e.label for e in spec.encodings]:
        out.append(f"no position-free control (an encoding labelled `{CONTROL}`): nothing in the report will tell "
                   "whether the task can be solved without positions")
    for text in spec.analysis_dropped:
        out.append(f"{text}: the comparison is dropped from the report's declared question"
                   + ("" if spec.analysis else "; none is left, so every test in the report is exploratory"))
    return out
