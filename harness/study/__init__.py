"""Running a study: its Optuna storage and queue of cells (:mod:`~harness.study.storage`), the
tune and evaluate stages (:mod:`~harness.study.stages`), the workers
(:mod:`~harness.study.worker`), one trial (:mod:`~harness.study.trial`), ``harness evaluate``
(:mod:`~harness.study.evaluate`) and the MLflow tracking (:mod:`~harness.study.tracking`; the checks
of its URI: :mod:`~harness.study.tracking_uri`).

``harness.study`` was the stages' module before it became this package: its names
(``run_study``, ``failed_cells``, ...) are still read from here, lazily, so that importing
``harness.study.tracking`` (as the report does) imports neither Optuna nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["StorageError", "design_warnings", "failed_cells", "run_study", "study_status"]


def __getattr__(name: str) -> Any:
    """The stages' public names, and any other of their attributes, imported on first use."""
    stages = importlib.import_module("harness.study.stages")
    try:
        return getattr(stages, name)
    except AttributeError:
        raise AttributeError(f"module 'harness.study' has no attribute {name!r}") from None
