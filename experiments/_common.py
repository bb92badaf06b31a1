"""Shared plumbing of the experiment scripts: provenance and JSON output (no science here)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CODE_PATHS = ("flowlib/book/training.py", "experiments", ":!experiments/results")  # what produces the results


def provenance(*, device: torch.device | None = None, **extra) -> dict:
    """Seeds and settings are passed in ``extra``; this adds commit, versions, device and machine load.

    ``device`` is where the script computes (default: the CPU); a CUDA device is recorded by its name.

    ``git_dirty_training_or_experiments`` flags uncommitted changes to the code that produced the results
    (``flowlib/book/training.py`` and ``experiments/``, the results files themselves excluded).
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", *CODE_PATHS],
                cwd=ROOT.parent,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    import flowlib

    info = {
        "git_commit": commit,
        "git_dirty_training_or_experiments": dirty,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "flowlib": flowlib.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": "cpu" if device is None or device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(extra)
    return info


def device() -> torch.device:
    """A CUDA device when one is present (float64 runs there too), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return None if obj != obj else float(f"{obj:.12g}")  # NaN -> null; 12 digits are plenty
    if isinstance(obj, (np.floating, np.integer)):
        return to_jsonable(obj.item())
    return obj


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(to_jsonable(payload), indent=None, separators=(",", ":")) + "\n")
    return path
