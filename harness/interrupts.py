"""Ctrl-C and SIGTERM: one clean stop, shielded clean-up.

:func:`handle_interrupts` turns the first SIGINT (Ctrl-C) or SIGTERM (``kill``, SLURM, a
container stop) into :class:`Interrupted`, a ``KeyboardInterrupt`` that every clean-up path
already treats as an interruption (runs closed as KILLED, trials failed), and ignores both
signals from then on: a second Ctrl-C during the clean-up cannot leave a run RUNNING. The
command line then prints one line and exits with ``128 + signal`` (130 for Ctrl-C, 143 for
SIGTERM). A signal ignored when the process started (a background job's SIGINT) stays ignored.

A signal that arrives while a database or tracking call runs (Optuna's storage, MLflow,
SQLAlchemy: :data:`UNSAFE_MODULES`) is not raised there: it is delivered again every
:data:`RETRY_S` seconds until it lands outside such a call (within the training step, a wait,
the harness's own code), so no connection is left half-way through a transaction.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

__all__ = ["Interrupted", "exit_status", "handle_interrupts", "shield"]


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(exc: BaseException) -> int:
    """The exit status of a process stopped by ``exc``: 128 + the signal (130 for Ctrl-C)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def shield() -> None:
    """Ignore SIGINT and SIGTERM from now on (while closing runs after an interruption)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, signal.SIG_IGN)


#: modules whose calls must not be cut short by an exception raised from a signal handler: a
#: database or tracking call interrupted half-way can leave its connection holding a lock (a
#: SQLite write lock kept by the interrupted session stalled the clean-up's own writes for the
#: whole busy timeout, then failed them: seen as "database is locked" after 120 s)
#: Likewise torch's serializer: an exception raised in the file writer it calls becomes
#: "RuntimeError: unexpected pos 64 vs 0", so a Ctrl-C during a checkpoint write was read as a
#: failed trial (retried) instead of an interruption.
UNSAFE_MODULES = ("sqlalchemy", "sqlite3", "optuna.storages", "mlflow", "alembic", "psycopg", "psycopg2",
                  "urllib3", "requests", "torch.serialization")
#: seconds before a signal that arrived during such a call is delivered again
RETRY_S = 0.05


def _in_unsafe_call(frame) -> bool:
    """Whether the interrupted Python stack runs code of one of :data:`UNSAFE_MODULES`."""
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if any(name == m or name.startswith(m + ".") for m in UNSAFE_MODULES):
            return True
        frame = frame.f_back
    return False


def _deliver_again(signum: int) -> None:
    """Send ``signum`` to this process again, if this module's handler still takes it."""
    if signal.getsignal(signum) is _handler:
        os.kill(os.getpid(), signum)


def _handler(signum: int, frame) -> None:
    if _in_unsafe_call(frame):  # not now: once the database or tracking call has returned
        timer = threading.Timer(RETRY_S, _deliver_again, (signum,))
        timer.daemon = True
        timer.start()
        return
    shield()  # before raising: a second signal during the clean-up is ignored
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_interrupts() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` once, then are ignored.
    The previous handlers are restored on leaving (in the main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not a background job's SIG_IGN
        previous[signal.SIGINT] = signal.default_int_handler
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous[signal.SIGTERM] = signal.SIG_DFL
    for sig in previous:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
