"""Moved to :mod:`harness.study.worker`; this old import path is that same module (an alias)."""

import sys

from harness.study import worker as _moved

sys.modules[__name__] = _moved
