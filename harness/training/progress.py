"""How far a study is, for the progress lines of ``harness run``: the cells done, the cells
left and an estimated time left, from the cells finished so far (torch-free, a pure function
of the trials' times and a clock).

The estimate: every cell still waiting takes the mean duration of the finished ones, and a
running cell takes what is left of that mean (at least nothing); the work left is shared by
the cells running now (the workers), at least one. Before any cell has finished there is
nothing to estimate from, and the line says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["StudyProgress", "format_duration"]


@dataclass(frozen=True)
class StudyProgress:
    """A study's cells at one moment: ``total`` cells, the durations (seconds) of those
    finished, the start times of those running (``running``), at clock time ``now``."""

    total: int
    finished: Sequence[float]
    running: Sequence[datetime]
    now: datetime

    @property
    def done(self) -> int:
        return len(self.finished)

    @property
    def left(self) -> int:
        return max(0, self.total - self.done)

    def seconds_left(self) -> float | None:
        """The estimated seconds until every cell is done, or None with no finished cell yet."""
        if not self.finished:
            return None
        if self.left == 0:
            return 0.0
        mean = sum(self.finished) / len(self.finished)
        running = [max(0.0, mean - (self.now - start).total_seconds()) for start in self.running][: self.left]
        waiting = self.left - len(running)
        return (waiting * mean + sum(running)) / max(1, len(running))

    def text(self) -> str:
        """``12 done, 30 left, about 8m10s to go`` (or ``no cell finished yet: no estimate``)."""
        eta = self.seconds_left()
        guess = "no estimate until a cell has finished" if eta is None else f"about {format_duration(eta)} to go"
        return f"{self.done} done, {self.left} left, {guess}"


def format_duration(seconds: float) -> str:
    """``1h02m03s``, ``8m10s``, ``42.0s``."""
    seconds = max(0.0, seconds)
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"
