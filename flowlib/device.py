"""Device selection: CUDA, then Apple MPS, then the CPU. Nothing in flowlib hard-codes a device."""

from __future__ import annotations

import torch

__all__ = ["default_device", "describe_device"]


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
    """A human-readable description of ``device`` (default: :func:`default_device`), for tables."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    if device.type == "mps":
        return f"Apple MPS (torch {torch.__version__})"
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"
