"""The one place that picks a torch device."""
from __future__ import annotations

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA when available, else CPU; an explicit request that cannot be met fails loudly."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {requested} was asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def describe(device: torch.device) -> str:
    """Human-readable device name for results files."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
