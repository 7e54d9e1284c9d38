"""Peak resident memory (VmHWM, Linux) of Task 1 and Task 2 on two phantom stores of 60 and 120 slices: the
cache is memory-mapped and its pages are released after every read, so the peak must not grow with the store."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import torch

from benchmarks.common import BENCH_DATA, ROOT, phantom_store

# 60 and 120 slices (the phantom needs >= 2 slices per volume, and 30 volumes for a validation split).
MEMORY_STORES = {"small": {"volumes": 30, "slices": 2}, "large": {"volumes": 30, "slices": 4}}

# Runs a script and prints its own peak RSS. Not ru_maxrss from wait4: Linux carries the parent's
# high-water mark into a forked child across exec, so children of this (large) process would all
# report at least its size. VmHWM belongs to the memory map the child's exec created.
_PEAK_LAUNCHER = """
import runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
try:
    with open("/proc/self/status") as f:
        peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):  # no procfs (macOS) or no VmHWM: ru_maxrss, which may include the parent's
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
print(f"PEAK_RSS_KIB={peak}")
sys.exit(code)
"""


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``python script args...``, measured inside the child (Linux)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_LAUNCHER, *command], cwd=ROOT, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{output[-3000:]}")
    peak_kib = int(output.rsplit("PEAK_RSS_KIB=", 1)[1].split()[0])
    return peak_kib / 1024, time.perf_counter() - start


def measure(device: torch.device) -> list[dict]:
    """One row per (task, store): peak RSS and seconds of the script run; the larger store's rows say
    how much the peak grew and whether that is flat (under half the growth of the cache itself)."""
    from utils.data.slice_store import SliceStore
    from utils.embeddings.cache import DEFAULT_CACHE_ROOT, EmbeddingCache
    from utils.models.sam import load_model

    # The study's own cache root: the 120-slice store is the default phantom, so after `make reproduce`
    # its embeddings are already there (caches are keyed by store content, so sharing is safe).
    cache_root = DEFAULT_CACHE_ROOT
    model = load_model("lite_medsam", device=device)
    rows = []
    for name, spec in MEMORY_STORES.items():
        store_path = phantom_store(f"memory-{name}", spec["volumes"], spec["slices"])
        cache = EmbeddingCache(model, SliceStore(store_path), root=cache_root)
        cache.ensure(progress=False)  # encoded once, outside the measured runs
        scratch = BENCH_DATA / f"scratch-{name}"
        common = ["--slices", str(store_path), "--cache-dir", str(cache_root), "--results", str(scratch),
                  "--device", str(device), "--no-progress"]
        runs = {
            "task1": ["segmentation_task1.py", *common, "--split", "all", "--prompts", "bound_box",
                      "--overlays", "0"],
            "task2": ["finetune_task2.py", *common, "--preset", "quick", "--prompts", "bound_box",
                      "--epochs", "1", "--checkpoint-dir", str(scratch / "checkpoints")],
        }
        for task, command in runs.items():
            rss, seconds = peak_rss_mb(command)
            rows.append({"task": task, "store": name, "slices": len(cache), "cache_mb": round(
                (cache.path / "embeddings.npy").stat().st_size / 2**20, 1), "peak_rss_mb": round(rss, 1),
                "seconds": round(seconds, 1)})
            print(f"  memory {task} on {len(cache)} slices: peak RSS {rss:.0f} MB", flush=True)
        shutil.rmtree(scratch, ignore_errors=True)
    for task in ("task1", "task2"):
        small, large = [r for r in rows if r["task"] == task]
        large["growth_mb"] = round(large["peak_rss_mb"] - small["peak_rss_mb"], 1)
        # Loading the cache whole would add the difference in cache size; flat = under half of that.
        large["flat"] = large["growth_mb"] < 0.5 * (large["cache_mb"] - small["cache_mb"])
    return rows


def markdown(rows: list[dict]) -> list[str]:
    """bench.md's lines for this section."""
    from utils.report.markdown import markdown_table

    return ["## Peak resident memory", "", markdown_table(
        ["task", "store slices", "cache MB", "peak RSS MB", "growth MB", "flat"],
        [[r["task"], r["slices"], f"{r['cache_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
          f"{r['growth_mb']:+.0f}" if "growth_mb" in r else "-", r.get("flat", "-")] for r in rows]),
        "Flat: the larger store's peak grew by less than half of what loading the cache whole would add "
        "(the difference in cache size).", ""]
