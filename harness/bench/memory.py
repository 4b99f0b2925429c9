"""Peak memory of one phase of the benchmark (a training step, an evaluation)."""

from __future__ import annotations

import ctypes
import gc
import sys

import torch

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None

__all__ = ["MemoryProbe"]

_PEAK_RSS = "peak resident"  # the start of the Linux method's description


class MemoryProbe:
    """Peak memory of a phase, over the process's memory before the model was built.

    CUDA: ``torch.cuda.max_memory_allocated`` (peak reset per phase) minus the allocated bytes
    before the model was built: the model, its gradients and AdamW state, activations and
    workspaces held by tensors (not the caching allocator's reserve).

    CPU (Linux): the resident set's high-water mark (``VmHWM``, reset per phase through
    ``/proc/self/clear_refs``) minus the resident set before the model was built, each after
    ``malloc_trim`` returned freed heap memory to the system: what the phase made the process
    hold, allocator overhead included (MiB-level noise). Elsewhere: the growth of
    ``getrusage().ru_maxrss``, a lifetime peak that cannot be reset (it under-reports a phase
    that does not exceed an earlier one).

    Use: ``before_model()`` once per model, then ``start_phase()`` ... ``end_phase() -> bytes``.
    ``method`` describes the measure in words (the JSON's ``memory_method``).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.base = 0
        self._libc = None
        if self.cuda:
            self.method = ("torch.cuda.max_memory_allocated during the phase minus allocated bytes before "
                           "the model was built (model, grads, AdamW state, activations)")
        elif self._linux_hwm_works():
            self.method = (f"{_PEAK_RSS} set (Linux VmHWM, reset per phase via /proc/self/clear_refs) minus the "
                           "resident set before the model was built, after malloc_trim (model, grads, AdamW "
                           "state, activations, allocator overhead)")
        else:
            self.method = ("growth of getrusage ru_maxrss (lifetime peak, cannot be reset: under-reports a "
                           "phase below an earlier peak)")
        self._hwm = self.method.startswith(_PEAK_RSS)

    # ------------------------------------------------------------------ the API
    def before_model(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            return
        self._trim()
        self.base = (self._status("VmRSS") or 0) if self._hwm else self._maxrss()

    def start_phase(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif self._hwm:
            self._trim()
            self._reset_hwm()

    def end_phase(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return max(0, torch.cuda.max_memory_allocated() - self.base)
        if self._hwm:
            return max(0, (self._status("VmHWM") or 0) - self.base)
        return max(0, self._maxrss() - self.base)

    # ------------------------------------------------------------------ the CPU's figures
    @staticmethod
    def _status(key: str) -> int | None:
        """A size in bytes from ``/proc/self/status`` (None where there is none)."""
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return None

    def _linux_hwm_works(self) -> bool:
        try:
            self._libc = ctypes.CDLL("libc.so.6")
        except OSError:
            pass
        return self._reset_hwm() and self._status("VmHWM") is not None and self._status("VmRSS") is not None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def _trim(self) -> None:
        gc.collect()
        if self._libc is not None:
            try:
                self._libc.malloc_trim(0)
            except AttributeError:  # not glibc
                pass

    @staticmethod
    def _maxrss() -> int:
        if resource is None:  # pragma: no cover
            return 0
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r if sys.platform == "darwin" else r * 1024)
