"""Timed steps, the device's matmul peak, and what the machine is.

A timing is ``steps`` consecutive calls between two clock reads, the device synchronised at
both ends; a figure is the median over repeated timings. The settings below are module
attributes so that the tests can shorten them.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Job",
    "MATMUL_SIZES",
    "MIN_STEPS",
    "MIN_TIME_S",
    "WARMUP_STEPS",
    "device_description",
    "interleave",
    "loadavg",
    "matmul_peak",
    "set_threads",
    "steps_for",
    "summary",
    "time_steps",
]

MIN_STEPS = 3  # a timing is at least this many steps ...
MIN_TIME_S = {"cpu": 0.5, "cuda": 0.25}  # ... and lasts at least this long
WARMUP_STEPS = {"cpu": 3, "cuda": 5}
MATMUL_SIZES = {"cpu": (1024, 2048), "cuda": (1024, 2048, 4096, 8192)}


def time_steps(fn: Callable[[], Any], steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``fn``, the device synchronised at both ends."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - t0


@dataclass
class Job:
    """One timed call of :func:`interleave`: ``run`` at ``threads`` torch threads, ``steps`` calls
    per timing of ``images`` images each; the :func:`summary` of its timings goes into ``out``."""

    run: Callable[[], Any]
    threads: int
    steps: int
    images: int
    out: dict[str, Any]


def interleave(device: torch.device, say: Callable[[str], None], what: str, jobs: list[Job], repeats: int) -> None:
    """Time every job in turn, ``repeats`` times, starting one job further each repeat (a slow
    drift of the machine lands on every job alike), each at its thread count; put each job's
    :func:`summary` into its ``out``."""
    times: list[list[float]] = [[] for _ in jobs]
    for i in range(repeats):
        say(f"{what}: repeat {i + 1}/{repeats}")
        k = i % len(jobs)
        for j in [*range(k, len(jobs)), *range(k)]:
            set_threads(jobs[j].threads)
            times[j].append(time_steps(jobs[j].run, jobs[j].steps, device))
    for job, ts in zip(jobs, times):
        job.out.update(summary(ts, job.steps, job.images))


def set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` when it is not the count already."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def steps_for(seconds_per_step: float, min_time_s: float, least: int | None = None) -> int:
    """Steps in one timing: enough to last ``min_time_s``, at least ``least`` (default
    ``MIN_STEPS``; 1 for a step that is itself long, a whole test split), at most 10,000."""
    least = MIN_STEPS if least is None else least
    return max(least, min(10_000, math.ceil(min_time_s / max(seconds_per_step, 1e-9))))


def summary(timings: list[float], steps: int, batch: int) -> dict[str, Any]:
    """The figures of repeated timings of ``steps`` steps: the median step, images/s, the range."""
    per_step = [t / steps for t in timings]
    med = statistics.median(per_step)
    return {
        "step_s": med,
        "images_per_s": batch / med,
        "range": (max(per_step) - min(per_step)) / med if med > 0 else 0.0,
        "steps_per_timing": steps,
        "timings_s": timings,
    }


def matmul_peak(device: torch.device, repeats: int, min_time_s: float,
                sizes: Sequence[int] | None = None) -> dict[str, Any]:
    """The device's own square-matmul rate: float32 on the CPU, bf16 on CUDA; the best size's median."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = tuple(sizes or MATMUL_SIZES[device.type])
    per_size: dict[str, float] = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        fn = lambda: torch.mm(a, b)  # noqa: E731
        first = time_steps(fn, 1, device)  # warm-up, and the calibration
        steps = max(1, math.ceil(min_time_s / max(first, 1e-9)))
        times = [time_steps(fn, steps, device) / steps for _ in range(repeats)]
        per_size[str(n)] = 2 * n ** 3 / statistics.median(times)
        del a, b
    best = max(per_size, key=per_size.get)
    return {"dtype": str(dtype).replace("torch.", ""), "flops_per_s": per_size[best], "size": int(best),
            "per_size_flops_per_s": per_size, "repeats": repeats}


def device_description(device: torch.device) -> dict[str, Any]:
    """The device's name (the GPU's, or the CPU model's) and CPU counts."""
    if device.type == "cuda":
        return {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                "cpu_count": os.cpu_count()}
    name = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"name": name or platform.processor() or platform.machine(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "usable_cpus": usable}


def loadavg() -> list[float] | None:
    """The system's 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
