"""A benchmark harness comparing positional encodings for Vision Transformers at unseen resolutions."""

from harness import _moved

__version__ = "0.1.0"

_moved.install()  # the old import paths of the modules that moved into subpackages
