"""Moved to :mod:`harness.report.analysis`; this old import path is that same module (an alias)."""

import sys

from harness.report import analysis as _moved

sys.modules[__name__] = _moved
