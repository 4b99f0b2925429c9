"""Moved to :mod:`harness.study.tracking`; this old import path is that same module (an alias)."""

import sys

from harness.study import tracking as _moved

sys.modules[__name__] = _moved
