"""Moved to :mod:`harness.training.checkpoint`; this old import path is that same module (an alias)."""

import sys

from harness.training import checkpoint as _moved

sys.modules[__name__] = _moved
