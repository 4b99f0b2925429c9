"""A benchmark harness comparing positional encodings for Vision Transformers at unseen resolutions."""

__version__ = "0.1.0"
