"""Moved to :mod:`harness.report.answer`; this old import path is that same module (an alias)."""

import sys

from harness.report import answer as _moved

sys.modules[__name__] = _moved
