"""Moved to :mod:`harness.spec.sources`; this old import path is that same module (an alias)."""

import sys

from harness.spec import sources as _moved

sys.modules[__name__] = _moved
