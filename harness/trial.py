"""Moved to :mod:`harness.study.trial`; this old import path is that same module (an alias)."""

import sys

from harness.study import trial as _moved

sys.modules[__name__] = _moved
