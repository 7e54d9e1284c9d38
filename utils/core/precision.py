"""Mixed precision: the one switch (``--precision``) for the fast encoder and decoder paths.

fp32 is the reference (the parity tests with ``SamPredictor`` run there). ``bf16`` autocasts matmuls
and convolutions to bfloat16 (fast on CPUs with AVX512-BF16/AMX and on recent GPUs); ``fp16`` to
float16 (GPUs). Outputs come back as float32, so everything downstream is unchanged.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, precision: str):
    """A context that runs the enclosed forward passes at ``precision`` on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if device_type == "cpu" and precision == "fp16":
        raise ValueError("fp16 autocast is for GPUs; on a CPU use --precision bf16")
    return torch.autocast(device_type=device_type, dtype=_DTYPES[precision])
