"""Moved to :mod:`harness.report.comparisons`; this old import path is that same module (an alias)."""

import sys

from harness.report import comparisons as _moved

sys.modules[__name__] = _moved
