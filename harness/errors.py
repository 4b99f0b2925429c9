"""The user-error type of the harness and the one "did you mean" helper every message uses."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["DataError", "HarnessError", "did_you_mean", "redact_url"]


class HarnessError(Exception):
    """An error the user caused (bad spec, missing file, ...): the CLI prints it and exits with status 2."""


class DataError(HarnessError):
    """A dataset could not be built: bad root, missing or corrupt files, bad task."""


def did_you_mean(name: object, known: Iterable[str], *, prefix: str = "", cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` naming the known name closest to ``name`` (``prefix`` + it),
    or ``""`` when nothing is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=cutoff)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def redact_url(text: str) -> str:
    """Hide the password of a database or server URL (``scheme://user:***@host``)."""
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)
