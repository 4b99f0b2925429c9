"""Moved to :mod:`harness.spec.memory`; this old import path is that same module (an alias)."""

import sys

from harness.spec import memory as _moved

sys.modules[__name__] = _moved
