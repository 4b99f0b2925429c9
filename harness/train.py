"""Moved to :mod:`harness.training.train`; this old import path is that same module (an alias)."""

import sys

from harness.training import train as _moved

sys.modules[__name__] = _moved
