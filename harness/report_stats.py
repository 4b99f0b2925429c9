"""Moved to :mod:`harness.report.stats`; this old import path is that same module (an alias)."""

import sys

from harness.report import stats as _moved

sys.modules[__name__] = _moved
