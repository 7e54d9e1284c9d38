"""Run the whole study, stage by stage, and write results/REPORT.md (what `make reproduce` calls).

    python run_study.py --phantom                                   # embedded default, quick preset
    python run_study.py --data-root ~/BTCV --model vit_h --preset paper --device cuda

Stages: slice store (phantom first with --phantom) -> Task 1 -> Task 2 -> interactive (zero-shot, then
with Task 2's decoders) -> interactive training (one decoder for correction clicks) -> interactive with it
-> Task 1 with it (Table 1's "interactive decoder" row) -> Task 3 training -> Task 3 validation -> U-Net
and ResU-Net baselines (Table 3) -> 3-D store (every slice; with --phantom a whole upper abdomen of
validation case 35, 50 slices 4.95 mm apart, where the organs begin and end) -> 3-D zero-shot -> 3-D with
Task 2's decoders -> 3-D with the interactive decoder -> 3-D with the propagation decoder (Task 2's propagated_box
run; all handed over from the main store; modes per_slice, propagate, box3d, and clicks3d for the interactive
decoder) -> with --phantom, a CT without labels (segment_volume.py on case
35 from prompts_from_labels.py's boxes, scored afterwards) -> report. Each stage is the same script a user
runs by hand; its command line is printed and its wall time recorded in results/study.json.

    python run_study.py --phantom --nproc 4     # Tasks 1-3 each launched with torchrun on 4 ranks (4 GPUs)

With --nproc N > 1 every task stage runs as `python -m torch.distributed.run --standalone
--nproc_per_node=N <script> ...` in a subprocess (utils/core/distributed.py says what is sharded); the
slice store and the report stay single-process.
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
    from utils.scaffold.config import checked, new_parser

    parser = new_parser(__doc__)
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
    parser.add_argument("--slices-3d", type=Path, default=ROOT / "data" / "slices_3d",
                        help="slice store of every slice for the 3-D stage (default data/slices_3d)")
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="results folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--nproc", type=checked(int, "positive"), default=1,
                        help="ranks per task stage (one per GPU; on a CPU they share its cores). 1 (default): each "
                             "stage runs in this process; N > 1: each task stage is launched with torchrun")
    return parser.parse_args(argv)


def torchrun_command(nproc: int, script: str, stage_args: list[str]) -> list[str]:
    """The torchrun command line that runs ``script`` on ``nproc`` ranks of this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            str(ROOT / script), *stage_args]


# Task 2's decoders: the study's five, then the propagation decoder's (utils/inference/prompts.py, propagated_box).
TASK2_PROMPTS = "one_central_point,one_random_point,three_random_points,bound_box,larger_box,propagated_box"

# Only the study's task scripts shard their work over ranks; the others run as one process.
SHARDED_SCRIPTS = ("segmentation_task1.py", "finetune_task2.py", "classify_train_task3.py", "classify_val_task3.py")


def common_flags(args: argparse.Namespace) -> list[str]:
    """The flags every SAM stage gets: store, model, device, seed, results, precisions, progress."""
    common = ["--slices", str(args.slices), "--model", args.model, "--device", args.device, "--seed", str(args.seed),
              "--results", str(args.results), "--precision", args.precision,
              "--encoder-precision", args.encoder_precision]
    if args.checkpoint:
        common += ["--checkpoint", str(args.checkpoint)]
    if args.no_progress:
        common.append("--no-progress")
    return common


def study_stages(args: argparse.Namespace) -> list[tuple[str, object, list[str]]]:
    """(name, script module, its command-line arguments) of every stage, in the order they run."""
    import classify_train_task3
    import classify_val_task3
    import finetune_interactive
    import finetune_task2
    import interactive_task1
    import preprocess_slices
    import segmentation_task1
    import train_baseline

    common = common_flags(args)
    progress = ["--no-progress"] if args.no_progress else []
    source = ["--phantom"] if args.phantom else ["--data-root", str(args.data_root)]
    interactive = ["--preset", "quick" if args.preset == "quick" else "full"]
    # quick (since 2026-12-08, for the budget): the zero-shot and Task 2 decoders from the two box starts; the point
    # start for the interactive decoder, trained for it (the others' point curves: docs/interactive.md).
    box_starts = ["--start", "bound_box,jittered_box"] if args.preset == "quick" else []
    stages = [
        ("slice store", preprocess_slices, source + ["--out", str(args.slices), "--seed", str(args.seed),
                                                     "--results", str(args.results)] + progress),
        ("task 1", segmentation_task1, common),
        # The study's five decoders, plus one trained on the boxes propagation carries (propagated_box: an added row,
        # the five are trained exactly as before; the 3-D stage scores it as --finetuned propagation).
        ("task 2", finetune_task2, common + ["--preset", args.preset, "--prompts", TASK2_PROMPTS]),
        # Correction clicks (issue 13): quick = 5 clicks on 2 samples per organ; paper = every sample, 10 clicks.
        ("interactive", interactive_task1, common + interactive + box_starts),
        ("interactive (fine-tuned)", interactive_task1, common + interactive + box_starts + ["--finetuned", "auto"]),
        # One decoder trained on simulated correction sessions (issue 22), scored on both protocols.
        ("interactive training", finetune_interactive, common + ["--preset", args.preset]),
        ("interactive (trained)", interactive_task1, common + interactive + ["--finetuned", "interactive"]),
        ("task 1 (interactive decoder)", segmentation_task1, common + ["--finetuned", "interactive"]),
        ("task 3 train", classify_train_task3, common + ["--preset", args.preset]),
        ("task 3 val", classify_val_task3, common),
    ]
    # Table 3's measured baselines: the same store, split and seed; no SAM model, so no SAM flags.
    baseline = ["--slices", str(args.slices), "--device", args.device, "--seed", str(args.seed), "--results",
                str(args.results), "--preset", args.preset] + progress
    stages += [(f"baseline {arch}", train_baseline, baseline + ["--arch", arch]) for arch in ("unet", "resunet")]
    return stages + three_d_stages(args, common)


def three_d_stages(args: argparse.Namespace, common: list[str]) -> list[tuple[str, object, list[str]]]:
    """The 3-D stage: a store of every slice through the organs (the main store keeps organ slices only).

    The default phantom's 2 slices are 45 mm apart through a 90 mm organ band; the 3-D stage gets one
    validation volume (case 35, not trained on by Task 2) as a whole upper abdomen: 248 mm, 50 slices 4.95 mm
    apart, every organ but the aorta, IVC and esophagus beginning and ending inside it (18 slices over the
    band until 2026-12-04). Task 2's decoders were trained on the main store: --finetuned-store hands them
    over, recorded in the results as trained on other data. The quick preset scores the bound-box start only
    (the field's 3-D protocols are box protocols; until 2026-12-04 one central point as well, cut for the
    budget); the paper preset keeps segmentation_3d.py's prompts.
    """
    import preprocess_slices
    import segmentation_3d

    dense = (["--phantom", "--data-root", str(ROOT / "data" / "phantom_3d"), "--phantom-cases", "35",
              "--phantom-extent", "abdomen", "--phantom-slices", "50"]
             if args.phantom else ["--data-root", str(args.data_root)])
    common_3d = list(common)
    common_3d[common_3d.index("--slices") + 1] = str(args.slices_3d)
    # quick: clicks3d (half of a 3-D stage's time) for the decoder trained for clicks only (since 2026-12-08, for the
    # budget: the 2-D interactive stages now score three starts under both refinements); the zero-shot, Task 2's and
    # the propagation decoder's clicks3d are measured on three validation volumes in docs/3d.md.
    no_clicks = []
    if args.preset == "quick":
        common_3d += ["--prompts", "bound_box"]
        no_clicks = ["--modes", "per_slice,propagate,box3d"]
    return [
        ("3-D store", preprocess_slices, dense + ["--slice-margin", "2", "--out", str(args.slices_3d), "--seed",
                                                 str(args.seed), "--results", str(args.results / "task3d" / "store")]
         + (["--no-progress"] if args.no_progress else [])),
        ("3-D zero-shot", segmentation_3d, common_3d + ["--finetuned", "none"] + no_clicks),
        ("3-D fine-tuned", segmentation_3d, common_3d + ["--finetuned", "auto", "--finetuned-store", str(args.slices)]
         + no_clicks),
        ("3-D interactive decoder", segmentation_3d, common_3d + ["--finetuned", "interactive", "--finetuned-store",
                                                                  str(args.slices)]),
        ("3-D propagation decoder", segmentation_3d, common_3d + ["--finetuned", "propagation", "--finetuned-store",
                                                                  str(args.slices)] + no_clicks),
    ] + (unlabelled_ct_stages(args) if args.phantom else [])


def unlabelled_ct_stages(args: argparse.Namespace) -> list[tuple[str, object, list[str]]]:
    """segment_volume.py as a user runs it on a CT without labels: phantom case 35, its prompts written the way
    a person would give them (prompts_from_labels.py: box3d's boxes and ranges), the labels withheld, and the
    result scored against them only afterwards (the report puts it beside box3d's). Its slices' embeddings are
    read from the 3-D store's cache (--embeddings-from: the same pixels, matched bit for bit) instead of being
    encoded a second time (~45 s of the budget); segment_volume.py's own encoding is tested in the tests."""
    import prompts_from_labels
    import segment_volume

    raw = ROOT / "data" / "phantom_3d" / "RawData" / "Training"
    image, label = raw / "img" / "img0035.nii.gz", raw / "label" / "label0035.nii.gz"
    out = args.results / "segment_volume"
    device = ["--model", args.model, "--device", args.device, "--precision", args.precision,
              "--encoder-precision", args.encoder_precision] + (["--checkpoint", str(args.checkpoint)]
                                                                 if args.checkpoint else [])
    return [
        ("CT without labels: prompts", prompts_from_labels, ["--image", str(image), "--label", str(label), "--out",
                                                             str(out / "prompts_0035.json")]),
        ("CT without labels: segment", segment_volume, ["--image", str(image), "--prompts", str(out / "prompts_0035.json"),
                                                        "--out", str(out / "0035_labels.nii.gz"), "--score-against",
                                                        str(label), "--embeddings-from", str(args.slices_3d)]
                                                       + device + (["--no-progress"] if args.no_progress else [])),
    ]


def run_stage(name: str, module, stage_args: list[str], nproc: int) -> tuple[int, str]:
    """Run one stage (in this process, or under torchrun on ``nproc`` ranks); return (exit code, command)."""
    import subprocess

    script = Path(module.__file__).name
    launch = nproc > 1 and script in SHARDED_SCRIPTS
    if launch:
        command = shlex.join(torchrun_command(nproc, script, stage_args))
    else:
        command = f"python {script} {shlex.join(stage_args)}"
    print(f"\n=== {name}: {command}", flush=True)
    if launch:
        return subprocess.run(torchrun_command(nproc, script, stage_args), cwd=ROOT).returncode, command
    from utils.scaffold.boundary import run_script

    return run_script(module.main, stage_args), command  # a stage's error: its one line, then the stage named


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import make_report
    from utils.core.io import write_json
    from utils.scaffold.boundary import run_script

    timings: dict[str, float] = {}
    commands: dict[str, str] = {}
    started = time.perf_counter()
    for name, module, stage_args in study_stages(args):
        t0 = time.perf_counter()
        code, commands[name] = run_stage(name, module, stage_args, args.nproc)
        timings[name] = round(time.perf_counter() - t0, 1)
        if code:
            print(f"stage '{name}' failed (exit {code}); fix the error above and rerun", file=sys.stderr)
            return code
    timings["total (without report)"] = round(time.perf_counter() - started, 1)
    write_json(args.results / "study.json", {
        "preset": args.preset, "model": args.model, "seed": args.seed, "precision": args.precision,
        "encoder_precision": args.encoder_precision,
        "data": "phantom" if args.phantom else str(args.data_root), "wall_seconds": timings, "commands": commands,
        "cpu_count": os.cpu_count(), "nproc": args.nproc,
    })
    print(f"\n=== report: python make_report.py --results {args.results}")
    run_script(make_report.main, ["--results", str(args.results)])
    print("\nwall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    print(f"report: {args.results / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
