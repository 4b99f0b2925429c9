"""Which device each worker process of a study trains on.

``harness run SPEC --workers N`` on a machine with several GPUs gives each worker its own GPU,
round robin over the visible ones; ``harness worker --gpu K`` pins one; ``--workers auto``
(or ``workers: auto`` in a spec) is one worker per GPU on a GPU machine and one single-thread
worker per usable core on a CPU machine.

Visible GPUs are the entries of ``CUDA_VISIBLE_DEVICES`` when it is set (indices, ``GPU-<uuid>``
or ``MIG-<uuid>`` names, exactly as CUDA reads them), else ``0 .. torch.cuda.device_count() - 1``.
A worker is given its GPU by setting ``CUDA_VISIBLE_DEVICES`` to that one entry in its own
process before CUDA starts there (:func:`pin_gpu`), so it sees a single device, ``cuda:0``, and
``train.device: auto`` (or ``cuda``) trains on it; with ``train.device: cpu`` it stays on the CPU.

Why single-thread workers on a CPU machine: on the 2-core machine, two one-thread processes
train more cells per minute than one two-thread process (the small ViTs of the CPU studies do
not keep two threads busy in one process; see the measurement in docs/performance.md), and a process per
core is what the main study already does with ``workers: 2``.

Torch is imported only inside the functions that ask it something, so the CLI's parser stays light.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from harness.errors import HarnessError

__all__ = ["AUTO", "assign_devices", "auto_workers", "parse_visible", "pin_gpu", "pin_visible_index", "resolve_workers",
           "usable_cpus", "visible_gpus"]

#: the value of ``--workers`` / ``workers:`` that asks for :func:`auto_workers`
AUTO = "auto"
_ENV = "CUDA_VISIBLE_DEVICES"


def parse_visible(value: str) -> list[str]:
    """The device entries of a ``CUDA_VISIBLE_DEVICES`` value, as CUDA reads them.

    Comma-separated, blanks around entries ignored; ``""`` hides every device. CUDA stops at
    the first invalid entry (a negative index such as ``-1``, or an empty entry), so this does
    too: ``"0,1,-1,2"`` is ``["0", "1"]``. Names (``GPU-<uuid>``, ``MIG-<uuid>``) are kept as written.
    """
    out: list[str] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or (entry.lstrip("-").isdigit() and int(entry) < 0):
            break
        out.append(entry)
    return out


def visible_gpus(environ: Mapping[str, str] | None = None,
                 device_count: Callable[[], int] | None = None) -> list[str]:
    """The GPUs this process may use, each as the entry that ``CUDA_VISIBLE_DEVICES`` takes to
    show that one GPU alone: its entries when the variable is set, else ``"0" .. "n-1"``.

    ``device_count`` (default ``torch.cuda.device_count``, 0 without CUDA) caps the list: an
    entry CUDA cannot open is not a GPU. ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count if torch.cuda.is_available() else (lambda: 0)
    n = device_count()
    if _ENV in env:
        return parse_visible(env[_ENV])[:n]
    return [str(i) for i in range(n)]


def assign_devices(workers: int, visible: Sequence[str]) -> list[str | None]:
    """Worker i's GPU: ``visible[i % len(visible)]`` (round robin); None for every worker when
    no GPU is visible (they train on the CPU)."""
    if workers < 0:
        raise HarnessError(f"workers must be 0 or more, got {workers}")
    if not visible:
        return [None] * workers
    return [visible[i % len(visible)] for i in range(workers)]


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def auto_workers(visible: Sequence[str], cpus: int, *, use_gpu: bool = True, cells: int | None = None) -> int:
    """``--workers auto``: one worker per visible GPU when there is one (and ``use_gpu``: the
    recipe does not ask for the CPU), else one single-thread worker per usable core. Never more
    than ``cells`` (the study's cells, when given: a worker with nothing to do is not started),
    never fewer than 1."""
    n = len(visible) if visible and use_gpu else max(1, cpus)
    if cells is not None:
        n = min(n, max(1, cells))
    return max(1, n)


def resolve_workers(workers: int | str, *, train_device: str = "auto", cells: int | None = None,
                    visible: Sequence[str] | None = None, cpus: int | None = None) -> int:
    """A worker count as given (``--workers`` or the spec's ``workers``): an integer >= 0 stays
    as it is; ``"auto"`` becomes :func:`auto_workers` for this machine."""
    if workers == AUTO:
        gpus = visible_gpus() if visible is None else list(visible)
        return auto_workers(gpus, usable_cpus() if cpus is None else cpus, use_gpu=train_device != "cpu",
                            cells=cells)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise HarnessError(f"workers must be an integer >= 0 or 'auto', got {workers!r}")
    return workers


def pin_visible_index(k: int, environ: dict[str, str] | None = None) -> str:
    """``harness worker --gpu K``: make the K-th GPU this process would see (counting from 0, in
    ``CUDA_VISIBLE_DEVICES`` order when it is set) the only one, as ``cuda:0``; returns its entry.

    Nothing here asks CUDA anything: CUDA reads the variable once, when it starts in the process
    (``torch.cuda.device_count()`` starts it), so the caller checks that the GPU exists only
    after this (``torch.cuda.is_available()``)."""
    env = os.environ if environ is None else environ
    if k < 0:
        raise HarnessError(f"--gpu must be 0 or more, got {k}")
    if _ENV in env:
        entries = parse_visible(env[_ENV])
        if k >= len(entries):
            raise HarnessError(f"--gpu {k}: CUDA_VISIBLE_DEVICES={env[_ENV]!r} shows {len(entries)} GPU(s), "
                               f"numbered 0 .. {len(entries) - 1}" if entries else
                               f"--gpu {k}: CUDA_VISIBLE_DEVICES={env[_ENV]!r} hides every GPU")
        device = entries[k]
    else:
        device = str(k)
    env[_ENV] = device
    return device


def pin_gpu(device: str | None, environ: dict[str, str] | None = None) -> None:
    """Make GPU ``device`` (an entry of :func:`visible_gpus`) the only one this process sees,
    as ``cuda:0``: sets ``CUDA_VISIBLE_DEVICES`` before CUDA starts in the process. If CUDA has
    already started here (the variable would be ignored), selects it with
    ``torch.cuda.set_device`` instead, which needs ``device`` to be an index. None: nothing."""
    if device is None:
        return
    env = os.environ if environ is None else environ
    import torch

    if environ is None and torch.cuda.is_initialized():
        visible = visible_gpus()
        if device not in visible:
            raise HarnessError(f"GPU {device!r} is not among the visible GPUs {visible}")
        torch.cuda.set_device(visible.index(device))
        return
    env[_ENV] = device
