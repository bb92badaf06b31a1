"""Device selection: CUDA, then Apple MPS, then the CPU. Nothing in flowlib hard-codes a device."""

from __future__ import annotations

import ctypes
import gc
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["default_device", "describe_device", "measure_call", "CallStats"]


def default_device() -> torch.device:
    """Return the best available device: ``cuda``, then ``mps``, then ``cpu``.

    Returns
    -------
    torch.device
        The device to create tensors on. Every flowlib function follows the device of its
        input, so this is only a convenience for choosing where to start.

    Examples
    --------
    >>> import flowlib
    >>> flowlib.default_device().type in {"cuda", "mps", "cpu"}
    True
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | str | None = None) -> str:
    """A human-readable description of ``device`` (default: :func:`default_device`), for tables.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.describe_device("cpu").startswith("CPU")
    True
    """
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    if device.type == "mps":
        return f"Apple MPS (torch {torch.__version__})"
    return f"CPU {_cpu_model()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class CallStats:
    """What :func:`measure_call` saw.

    Attributes
    ----------
    result : Any
        The call's return value.
    seconds : float
        Wall time of the call (the device synchronised before and after).
    peak_bytes : int or None
        Peak memory the call added on its device: on CUDA from the caching allocator's peak
        statistics, on a Linux CPU from the process's peak resident set (``VmHWM``, reset just
        before the call). ``None`` where neither is available (other systems, MPS).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> stats = fl.measure_call(lambda: torch.arange(4).sum())
    >>> type(stats).__name__, stats.result.item(), stats.seconds >= 0
    ('CallStats', 6, True)
    """

    result: Any
    seconds: float
    peak_bytes: int | None


def _rss_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def measure_call(fn: Callable[[], Any], *, device: torch.device | str | None = None) -> CallStats:
    """Run ``fn()`` once and report its wall time and the peak memory it added.

    Parameters
    ----------
    fn : callable
        Takes no arguments.
    device : torch.device or str, optional
        Where ``fn`` computes. On CUDA the peak is what PyTorch allocated beyond what was allocated
        before the call; on the CPU it is the rise of the process's peak resident memory, which also
        counts buffers that the C allocator keeps after they are freed. Default: the CPU for the memory,
        but the time is always measured with every initialised CUDA device synchronised before and
        after the call, so that a CUDA function is not timed by its kernel launches only.

    Returns
    -------
    CallStats

    Examples
    --------
    >>> import torch, flowlib
    >>> stats = flowlib.measure_call(lambda: torch.ones(1000, 1000))
    >>> stats.result.shape, stats.seconds >= 0
    (torch.Size([1000, 1000]), True)
    """
    device = torch.device("cpu" if device is None else device)
    gc.collect()
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        result = fn()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        return CallStats(result, seconds, torch.cuda.max_memory_allocated(device) - before)
    peak: int | None = None
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap pages back first, so they are not counted
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the peak resident set size to the current one
        before = _rss_kib("VmRSS")
    except (OSError, AttributeError, StopIteration):
        before = None
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    result = fn()
    if device.type == "mps":
        torch.mps.synchronize()
    if sync is not None:
        sync()
    seconds = time.perf_counter() - t0
    if before is not None:
        peak = max(0, _rss_kib("VmHWM") - before) * 1024
    return CallStats(result, seconds, peak)
