"""Moved to :mod:`harness.training.stopwatch`; this old import path is that same module (an alias)."""

import sys

from harness.training import stopwatch as _moved

sys.modules[__name__] = _moved
