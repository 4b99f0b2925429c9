"""Moved to :mod:`harness.spec.design`; this old import path is that same module (an alias)."""

import sys

from harness.spec import design as _moved

sys.modules[__name__] = _moved
