"""Timing, the fixed phantom stores and the device's fast precisions, shared by the benchmark sections."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATA = ROOT / "data" / "bench"
# Task 1's fixed phantom store: on a CPU case 1 x 2 slices (~20 organs x 5 prompts, the naive loop
# takes ~80 s); a GPU gets cases 1-4 x 2 slices, so the timings are not all start-up overhead.
TASK1_PHANTOM = {"cpu": {"volumes": 1, "slices": 2}, "cuda": {"volumes": 4, "slices": 2}}


def fast_precisions(device: torch.device) -> list[str]:
    """The fast-path precisions worth timing on ``device`` (beside fp32)."""
    return ["bf16", "fp16"] if device.type == "cuda" else ["bf16"]


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on a CPU), so wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Mean seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def phantom_store(name: str, volumes: int, slices: int, size: int = 160) -> Path:
    """A phantom slice store under data/bench/ (built once, reused: stores and caches are keyed)."""
    from utils.data.phantom import PhantomConfig, write_phantom_dataset
    from utils.data.slice_store import build_store

    mm = 2.4 * 160 / size  # the same body in more pixels
    config = PhantomConfig(shape=(size, size, slices), spacing=(mm, mm, 90.0 / slices), n_volumes=volumes)
    raw = write_phantom_dataset(BENCH_DATA / f"phantom-{name}", config, progress=False)
    store_path, _ = build_store(raw.parent, BENCH_DATA / f"slices-{name}", progress=False)
    return store_path


def task1_store(device: torch.device):
    """Task 1's fixed phantom store for ``device`` (TASK1_PHANTOM), opened: the decoder, training and
    Task 1 sections all measure on it."""
    from utils.data.slice_store import SliceStore

    return SliceStore(phantom_store(f"task1-{device.type}", **TASK1_PHANTOM[device.type]))
