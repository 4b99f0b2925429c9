"""Moved to :mod:`harness.study.evaluate`; this old import path is that same module (an alias)."""

import sys

from harness.study import evaluate as _moved

sys.modules[__name__] = _moved
