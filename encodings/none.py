"""``none``: no position signal at all."""

from harness.encodings.base import PositionalEncoding
from harness.encodings.registry import register_encoding


@register_encoding("none")
class NoEncoding(PositionalEncoding):
    """No position signal at all: the control, a bag of patches."""
