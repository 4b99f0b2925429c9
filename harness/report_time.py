"""Moved to :mod:`harness.report.timing`; this old import path is that same module (an alias)."""

import sys

from harness.report import timing as _moved

sys.modules[__name__] = _moved
