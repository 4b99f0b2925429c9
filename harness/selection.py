"""Moved to :mod:`harness.report.selection`; this old import path is that same module (an alias)."""

import sys

from harness.report import selection as _moved

sys.modules[__name__] = _moved
