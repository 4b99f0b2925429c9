"""Moved to :mod:`harness.report.pages`; this old import path is that same module (an alias)."""

import sys

from harness.report import pages as _moved

sys.modules[__name__] = _moved
