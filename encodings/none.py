"""``none``: no position signal at all."""

from harness.encodings.base import PositionalEncoding, register_encoding


@register_encoding("none")
class NoEncoding(PositionalEncoding):
    """No position signal at all: the control, a bag of patches."""

    relative = True  # no position at all: trivially a function of the offsets
