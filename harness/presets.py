"""Moved to :mod:`harness.spec.presets`; this old import path is that same module (an alias)."""

import sys

from harness.spec import presets as _moved

sys.modules[__name__] = _moved
