"""Counts as people write them: ``1 epoch``, ``2 epochs``, ``0 cells`` (imports nothing heavy: the
command line uses it before torch is imported)."""

from __future__ import annotations

__all__ = ["count"]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, the noun in the plural unless ``n`` is 1 (``plural``, or ``noun + "s"``)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
