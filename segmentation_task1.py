"""Task 1: zero-shot SAM on BTCV slices with five prompt types, scored by mean Dice over organs.

    python segmentation_task1.py                                   # LiteMedSAM on the phantom store, val split
    python segmentation_task1.py --model vit_h --slices data/slices_btcv --prompts bound_box,larger_box
    python segmentation_task1.py --finetuned auto                  # Task 2's fine-tuned decoders instead
    python segmentation_task1.py --finetuned interactive           # the interactive decoder, one for all

For every organ on every slice of the split, each prompt (one central point, one random point, three
random points, the tight box, the box grown 5 px) is decoded from the cached image embedding; the
mask (logits > 0) is compared with the ground truth by Dice. Per organ: mean over its slices; mDice:
mean over organs. Writes results/task1/ (results/task1_finetuned/ with Task 2's decoders,
results/task1_trained/ with the interactive decoder): metrics.json, table1.md, per_slice.csv,
overlays/*.png, config.json.

    torchrun --standalone --nproc_per_node=4 segmentation_task1.py   # slices and batches sharded over 4 ranks
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.inference.prompts import DEFAULT_BOX_JITTER_PX, parse_prompt_types  # noqa: E402
from utils.scaffold.config import parse_with_presets  # noqa: E402
from utils.scaffold.flags import add_finetuned_args, new_task_parser  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Hyperparameters: edit here, or override with the flag of the same name (--decode-batch 64).
HYPERPARAMETERS = {
    "PROMPTS": ("all", "comma-separated prompt types, or 'all' for the study's five"),
    "MULTIMASK": (False, "take SAM's best-IoU mask of three instead of the single-mask output (default off: "
                         "the study uses the single mask)"),
    "DECODE_BATCH": (0, "prompts per mask-decoder call; 0 = auto (8 on a CPU, 64 on a GPU)"),
    "OVERLAYS": (4, "example slices drawn per prompt type"),
    "BOX_JITTER": (DEFAULT_BOX_JITTER_PX, "jittered_box only (--prompts jittered_box): each side of the tight box "
                                          "moves by a seeded shift of up to this many slice pixels"),
}
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    parser = new_task_parser(__doc__, HYPERPARAMETERS, split="val")
    add_finetuned_args(parser, default="none")
    return parse_with_presets(parser, argv, checks={"prompts": parse_prompt_types})  # bad values: exit 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.core.organs import organ_name
    from utils.eval.bootstrap import triples
    from utils.inference.prompts import PROMPT_TITLES
    from utils.report.examples import pick_examples, save_task1_overlays
    from utils.report.tables import mdice_table, table1, titled
    from utils.scaffold.evaluation import Evaluation

    ev = Evaluation(args, "task1")
    prompt_types = ev.parse(parse_prompt_types, args.prompts)
    exp = ev.open()
    decoders = ev.open_decoders(prompt_types, require_finetuned=ev.finetuned)
    ev.encode(ev.split_rows())
    samples = ev.samples()
    print(ev.describe(f"{len(ev.rows)} {args.split} slices, {len(samples)} organ samples"))

    meta = ev.provenance(n_samples=len(samples), multimask_output=args.multimask, box_jitter=args.box_jitter,
                         finetuned={p: d.record for p, d in decoders.items()} if ev.finetuned else None)
    results = ev.header(meta, n_slices=len(ev.rows), prompts={})
    results["records"] = {}  # {prompt: [(case, organ, dice)]} per sample, for the tables' bootstrap intervals
    per_slice, decode_seconds = [], 0.0  # per_slice.csv's rows; seconds spent decoding
    for prompt_type in prompt_types:
        decoder = decoders[prompt_type]
        t0 = time.perf_counter()
        summary, records = ev.score_prompt(samples, prompt_type, decoder, args.box_jitter, args.multimask)
        decode_seconds += time.perf_counter() - t0
        results["prompts"][prompt_type] = dict(summary, decoder=decoder.source)
        results["records"][prompt_type] = triples(records)
        per_slice += [[prompt_type, r["case"], r["z"], organ_name(r["organ"]), f"{r['dice']:.6f}"] for r in records]
        print(f"  {PROMPT_TITLES[prompt_type]:<20} mDice {summary['mDice']:.4f}  ({decoder.source})")
        if args.overlays and ev.is_main:
            save_task1_overlays(ev.decoder(decoder, args.multimask), pick_examples(samples, exp.cache, args.overlays),
                                prompt_type, args.seed, ev.out / "overlays" / f"{prompt_type}.png",
                                f"Task 1, {PROMPT_TITLES[prompt_type]} ({exp.model.name}, {exp.store.description})",
                                box_jitter=args.box_jitter)
    n_decoded = len(samples) * len(prompt_types)
    results["timing"] = ev.timing(encoder_seconds_per_slice=ev.encoder_seconds_per_slice, decoded_prompts=n_decoded,
                                  decoded_prompts_per_second=ev.rate(n_decoded, decode_seconds))
    table = titled(f"Table 1: mDice of different prompts ({ev.decoder_title})", table1(results))
    ev.write(results, {"table1.md": table}, {"per_slice.csv": (["prompt", "case", "z", "organ", "dice"], per_slice)})
    print(f"\n{mdice_table(results['prompts'])}")
    print(f"encoder: {results['timing']['encoder_seconds_per_slice']} s/slice; decoder: "
          f"{results['timing']['decoded_prompts_per_second']} prompts/s\nwrote {ev.out / 'metrics.json'} and table1.md")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
