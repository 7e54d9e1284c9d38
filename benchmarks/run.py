"""Benchmarks: encoder and decoder throughput, Task 1 against the naive SamPredictor loop, peak memory.

    python benchmarks/run.py                              # all sections, CUDA when available, else CPU
    python benchmarks/run.py --sections task1,memory --device cpu
    make bench                                            # the same, in the project's .venv

Measures on the machine it runs on and writes results/bench/bench.json and results/bench/bench.md.
Sections (one module each in benchmarks/):
  encoder  slices/s of the image encoder: lite_medsam (its real weights) and vit_b / vit_h with RANDOM
           weights (speed does not depend on the values; no SAM checkpoint is needed), fp32 and the
           fast path (--precision bf16 on a CPU; bf16 and fp16 on a GPU).
  decoder  prompts/s at inference (batched prompts, each paired with its own cached embedding) and
           samples/s in Task 2 training (forward + Dice loss + backward + SGD step), fp32 and fast.
           SAM's mask decoder is the same module for lite_medsam and vit_b/l/h.
  training Task 2 and Task 3 training steps, exact path vs fast path (utils/train/fastpath.py) interleaved in
           this process, wall and CPU (user+sys) time: LiteMedSAM on the phantom (160x160) and a
           ViT-B-shaped model (random weights) on 512x512 phantom slices with random embeddings, at
           batch 16 and 64; torch.compile's first-call cost and steady rate; and the paper preset's
           estimated wall time on BTCV from the measured rate (TRAINING_ESTIMATE states the sample count).
  task1    Task 1 end to end (all five prompts) on a fixed phantom store, by the suite (embedding
           cache + batched decoding) against the naive study: SamPredictor.set_image + predict once
           per (slice, organ, prompt). Both run in this process on the same store; their Dice
           must agree, and the speed ratio is reported.
  interactive  the interactive training step (finetune_interactive.py): samples/s per correction-round
           count (1, 4, 8), exact path (fp32) vs fast path (bf16; fp16 on a GPU), LiteMedSAM on Task 1's store.
  memory   peak resident memory (VmHWM, Linux) of Task 1 and Task 2 on two phantom
           stores of 60 and 120 slices: the cache is memory-mapped and its pages are released after
           every read, so the peak must not grow with the store.
On 2 CPU cores all sections take about 12 minutes (the first run also encodes the memory stores).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import decoder, encoder, interactive, memory, task1, training  # noqa: E402

SECTIONS = ("encoder", "decoder", "training", "interactive", "task1", "memory")
MODULES = {"encoder": encoder, "decoder": decoder, "training": training, "interactive": interactive, "task1": task1,
           "memory": memory}


def parse_args(argv=None) -> argparse.Namespace:
    from utils.scaffold.config import new_parser

    parser = new_parser(__doc__)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    parser.add_argument("--encoders", default="lite_medsam,vit_b,vit_h", help="models for the encoder section")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="where bench.json/bench.md go")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--compile-on-cpu", action="store_true",
                        help="training section: also time torch.compile on a CPU (minutes of compiling)")
    return parser.parse_args(argv)


def markdown(result: dict) -> str:
    """bench.md: the machine, then each measured section's own lines (its module's ``markdown``)."""
    lines = [f"# Benchmarks ({result['machine']})", "", f"Device: {result['device']}; torch {result['torch']}; "
             f"runtime settings: {result.get('runtime')}; {result['date']}. Command: `{result['command']}`.", ""]
    for section in SECTIONS:
        if section in result:
            lines += MODULES[section].markdown(result[section])
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from utils.core.device import configure_runtime, describe, pick_device
    from utils.core.io import write_json, write_text
    from utils.scaffold.session import quiet_third_party

    quiet_third_party()
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(f"error: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    runtime = configure_runtime(device)
    result = {"machine": f"{platform.node()}: {describe(device)}", "device": describe(device), "runtime": runtime,
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M"), "command": "python benchmarks/run.py " + " ".join(argv or sys.argv[1:])}
    started = time.perf_counter()
    runners = {
        "encoder": lambda: encoder.measure([m.strip() for m in args.encoders.split(",") if m.strip()], device),
        "decoder": lambda: decoder.measure(device),
        "training": lambda: training.measure(device, args.compile_on_cpu),
        "interactive": lambda: interactive.measure(device),
        "task1": lambda: task1.measure(device, progress=not args.no_progress),
        "memory": lambda: memory.measure(device),
    }
    for section in SECTIONS:
        if section in sections:
            result[section] = runners[section]()
            result["seconds"] = round(time.perf_counter() - started, 1)
            write_json(args.out / "bench.json", result)  # after every section: a crash keeps what was measured
            write_text(args.out / "bench.md", markdown(result))
    print(f"\n{markdown(result)}\nwrote {args.out / 'bench.json'} and {args.out / 'bench.md'} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
