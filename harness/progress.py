"""Moved to :mod:`harness.training.progress`; this old import path is that same module (an alias)."""

import sys

from harness.training import progress as _moved

sys.modules[__name__] = _moved
