"""Shared helpers of the benchmark scripts: timing with peak memory, limits, and the results file."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import flowlib as fl  # noqa: E402


def available_bytes(device: torch.device) -> int:
    """Memory we allow one benchmark case to use: half of what is free now."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemAvailable"] // 2
    except (OSError, KeyError):
        return 4 * 2**30


def time_and_memory(fn: Callable[[], object], device: torch.device, *, budget_s: float = 2.0) -> dict:
    """Median wall time of ``fn()`` over repeats that fit ``budget_s`` (1 to 7), and the peak extra memory.

    The first call is a warm-up; if it alone takes more than ``budget_s`` it is the measurement.
    """
    first = fl.measure_call(fn, device=device)
    runs = [first]
    if first.seconds < budget_s:
        repeats = max(1, min(7, int(budget_s / max(first.seconds, 1e-6))))
        runs = [fl.measure_call(fn, device=device) for _ in range(repeats)]
    peaks = [r.peak_bytes for r in runs if r.peak_bytes is not None]
    return {
        "seconds": statistics.median(r.seconds for r in runs),
        "repeats": len(runs),
        "peak_mib": (max(peaks) / 2**20) if peaks else None,
    }


def device_slug(device: torch.device) -> str:
    name = fl.describe_device(device)
    short = re.sub(r"[^a-z0-9]+", "-", name.split("(")[0].lower()).strip("-")
    return f"{device.type}-{short}"[:60]


def header(device: torch.device) -> dict:
    return {
        "device": fl.describe_device(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
    }


def save(kind: str, device: torch.device, payload: dict, *, quick: bool = False) -> Path:
    """Write ``results/<kind>-<device>.json`` (a quick run goes to ``results/quick/``, which the report skips)."""
    folder = RESULTS / "quick" if quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{device_slug(device)}.json"
    path.write_text(json.dumps({**header(device), **payload}, indent=1) + "\n")
    return path


def parse_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return fl.default_device()
    return torch.device(name)


def env_threads() -> None:
    """Use ``FLOWLIB_BENCH_THREADS`` threads if set; otherwise keep PyTorch's default."""
    n = os.environ.get("FLOWLIB_BENCH_THREADS")
    if n:
        torch.set_num_threads(int(n))
