"""The one place that picks a torch device and sets the process up to run fast on it."""
from __future__ import annotations

import ctypes
import os
import platform
import sys

import torch

# Prompts per mask-decoder call and slices per image-encoder call when a script's batch flag is 0.
# On a CPU, 8 prompts keep each call's activations (upscaled masks: 8 x 32 x 256 x 256 floats) in
# cache-friendly sizes; measured on 2 cores: batch 8 decodes 20 prompts/s, batch 32 decodes 18.
# CPU encode 1 (8 until 2026-12-04): LiteMedSAM's encoder took 1.89 s per slice one at a time, 1.94 at 4 and 2.34
# at 8 on this project's 2-core AVX2 CPU, with bit-identical embeddings (tests/test_embedding_cache.py).
AUTO_BATCH = {"cpu": {"decode": 8, "encode": 1}, "cuda": {"decode": 64, "encode": 32}}


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA when available, else CPU; an explicit request that cannot be met fails loudly."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {requested} was asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def auto_batch(device: torch.device, kind: str, requested: int = 0) -> int:
    """``requested`` if positive, else the measured default for ``kind`` ("decode"/"encode") on ``device``."""
    if requested and requested > 0:
        return int(requested)
    return AUTO_BATCH["cuda" if device.type == "cuda" else "cpu"][kind]


def keep_freed_memory() -> bool:
    """Let glibc reuse freed large blocks instead of returning them to the OS after every call.

    Each decoder call allocates a few hundred MB of activations; by default glibc gives every block
    over 32 MB back with munmap and the next call faults it in again page by page. On 2 cores that
    was 45 % of Task 1's time in the kernel (8.2 s system time per 96 prompts at batch 32); with the
    thresholds raised it is ~0 (benchmarks/run.py, batch 8: 15.3 -> 19.1 prompts/s, training 4.4 -> 6.8
    samples/s). The price is memory the allocator keeps for reuse: Task 2's peak is ~4-5 GB instead of
    ~3 GB (still flat in the store size). Linux + glibc only; elsewhere a no-op.
    ``SAM_BTCV_DEFAULT_MALLOC=1`` in the environment keeps glibc's defaults (to compare, or if it
    misbehaves). Returns whether it applied.
    """
    if os.environ.get("SAM_BTCV_DEFAULT_MALLOC") == "1":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, (1 << 31) - 1))


def configure_runtime(device: torch.device) -> str:
    """Process-wide settings: fast where results do not change; fp32 stays true fp32. Says what it set.

    On a GPU, PyTorch runs fp32 convolutions in TF32 (10-bit mantissa) by default. The fp32 path is
    the reference, so TF32 is off (on an H100 it changed the phantom's Task 1 mDice by <= 0.0003);
    ``--precision`` / ``--encoder-precision`` are the explicit fast paths.
    """
    if device.type == "cpu":
        return "glibc thresholds raised" if keep_freed_memory() else "allocator defaults"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return "TF32 off"


def describe(device: torch.device) -> str:
    """Human-readable device name for results files."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
