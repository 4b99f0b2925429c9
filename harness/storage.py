"""Moved to :mod:`harness.study.storage`; this old import path is that same module (an alias)."""

import sys

from harness.study import storage as _moved

sys.modules[__name__] = _moved
