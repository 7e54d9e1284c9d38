"""Mixed precision: the one switch (``--precision``) for the fast encoder and decoder paths.

fp32 is the reference (the parity tests with ``SamPredictor`` run there). ``bf16`` autocasts matmuls
and convolutions to bfloat16 (fast on CPUs with AVX512-BF16/AMX and on recent GPUs); ``fp16`` to
float16 (GPUs). Outputs come back as float32, so everything downstream is unchanged.
"""
from __future__ import annotations

import contextlib
import functools

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has AMX bf16 tiles (``amx_bf16`` in /proc/cpuinfo; False where that file is absent).

    Measured on this project's 2-core machines: with AMX, bf16 autocast trains the decoders 1.3-1.6x
    faster than fp32; with AVX-512 bf16 but no AMX it was 1.1-1.4x *slower*; with AVX2 only (an AMD EPYC)
    a Task 2 step at batch 16 ran 2.63 samples/s in fp32 and 0.35 in bf16, 7.5x slower
    (docs/speed-and-memory.md). So ``--train-precision auto`` takes bf16 on a CPU only where it has AMX.
    """
    try:
        with open(cpuinfo) as handle:
            return any(line.startswith("flags") and " amx_bf16" in line for line in handle)
    except OSError:
        return False


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
