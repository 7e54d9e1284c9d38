"""Run the whole study, stage by stage, and write results/REPORT.md (what `make reproduce` calls).

    python run_study.py --phantom                                   # embedded default, quick preset
    python run_study.py --data-root ~/BTCV --model vit_h --preset paper --device cuda

Stages: slice store (phantom first with --phantom) -> Task 1 -> Task 2 -> Task 3 training -> Task 3
validation -> U-Net and ResU-Net baselines (Table 3) -> report. Each stage is the same script a user runs by hand; its command line is printed
and its wall time recorded in results/study.json.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--phantom", action="store_true", help="generate and use the synthetic phantom")
    source.add_argument("--data-root", type=Path, help="real BTCV folder")
    parser.add_argument("--model", default="lite_medsam", help="lite_medsam, vit_b, vit_l or vit_h")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model weights (SAM: checkpoints/sam_vit_*.pth)")
    parser.add_argument("--preset", choices=("quick", "paper"), default="quick", help="training preset for Tasks 2 and 3")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", help="decoder fast path: fp32 (default), bf16, fp16 (GPU)")
    parser.add_argument("--encoder-precision", default="fp32", help="image encoder: fp32 (default), bf16, fp16 (GPU)")
    parser.add_argument("--slices", type=Path, default=ROOT / "data" / "slices", help="slice store folder")
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="results folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import classify_train_task3
    import classify_val_task3
    import finetune_task2
    import make_report
    import preprocess_slices
    import segmentation_task1
    import train_baseline
    from utils.io import write_json

    common = ["--slices", str(args.slices), "--model", args.model, "--device", args.device, "--seed", str(args.seed),
              "--results", str(args.results), "--precision", args.precision,
              "--encoder-precision", args.encoder_precision]
    if args.checkpoint:
        common += ["--checkpoint", str(args.checkpoint)]
    if args.no_progress:
        common.append("--no-progress")
    source = ["--phantom"] if args.phantom else ["--data-root", str(args.data_root)]
    stages = [
        ("slice store", preprocess_slices, source + ["--out", str(args.slices), "--seed", str(args.seed),
                                                     "--results", str(args.results)]
         + (["--no-progress"] if args.no_progress else [])),
        ("task 1", segmentation_task1, common),
        ("task 2", finetune_task2, common + ["--preset", args.preset]),
        ("task 3 train", classify_train_task3, common + ["--preset", args.preset]),
        ("task 3 val", classify_val_task3, common),
    ]
    # Table 3's measured baselines: the same store, split and seed; no SAM model, so no SAM flags.
    baseline = ["--slices", str(args.slices), "--device", args.device, "--seed", str(args.seed), "--results",
                str(args.results), "--preset", args.preset] + (["--no-progress"] if args.no_progress else [])
    stages += [(f"baseline {arch}", train_baseline, baseline + ["--arch", arch]) for arch in ("unet", "resunet")]
    timings: dict[str, float] = {}
    commands: dict[str, str] = {}
    started = time.perf_counter()
    for name, module, stage_args in stages:
        command = f"python {Path(module.__file__).name} {shlex.join(stage_args)}"
        print(f"\n=== {name}: {command}", flush=True)
        t0 = time.perf_counter()
        code = module.main(stage_args)
        timings[name] = round(time.perf_counter() - t0, 1)
        commands[name] = command
        if code:
            print(f"stage '{name}' failed (exit {code}); fix the error above and rerun", file=sys.stderr)
            return code
    timings["total (without report)"] = round(time.perf_counter() - started, 1)
    write_json(args.results / "study.json", {
        "preset": args.preset, "model": args.model, "seed": args.seed, "precision": args.precision,
        "encoder_precision": args.encoder_precision,
        "data": "phantom" if args.phantom else str(args.data_root), "wall_seconds": timings, "commands": commands,
        "cpu_count": os.cpu_count(),
    })
    print(f"\n=== report: python make_report.py --results {args.results}")
    make_report.main(["--results", str(args.results)])
    print("\nwall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    print(f"report: {args.results / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
