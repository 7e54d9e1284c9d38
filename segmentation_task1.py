"""Task 1: zero-shot SAM on BTCV slices with five prompt types, scored by mean Dice over organs.

    python segmentation_task1.py                                   # LiteMedSAM on the phantom store, val split
    python segmentation_task1.py --model vit_h --slices data/slices_btcv --prompts bound_box,larger_box
    python segmentation_task1.py --finetuned auto                  # Task 2's fine-tuned decoders instead

For every organ on every slice of the split, each prompt (one central point, one random point, three
random points, the tight box, the box grown 5 px) is decoded from the cached image embedding; the
mask (logits > 0) is compared with the ground truth by Dice. Per organ: mean over its slices; mDice:
mean over organs. Writes results/task1/ (results/task1_finetuned/ with --finetuned): metrics.json,
table1.md, per_slice.csv, overlays/*.png, config.json.

    torchrun --standalone --nproc_per_node=4 segmentation_task1.py   # slices and batches sharded over 4 ranks
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.inference.prompts import DEFAULT_BOX_JITTER_PX  # noqa: E402
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
    from utils.inference.prompts import parse_prompt_types

    return parse_with_presets(parser, argv, checks={"prompts": parse_prompt_types})  # bad values: exit 2


def pick_examples(samples: list[tuple[int, int]], cache, n: int) -> list[tuple[int, int]]:
    """n samples spread from the largest to the smallest organ areas (small organs are the hard ones)."""
    if n <= 0 or not samples:
        return []
    by_area = sorted(samples, key=lambda s: -cache.index.organs(s[0])[s[1]])
    step = max(1, (len(by_area) - 1) // max(n - 1, 1))
    return [by_area[min(i * step, len(by_area) - 1)] for i in range(n)]


def draw_overlays(cache, samples, prompt_type: str, args, decoder, path: Path, title: str) -> None:
    import torch

    from utils.core.organs import organ_title
    from utils.eval.dice import dice_score
    from utils.inference.batches import build_batch, predict_logits
    from utils.report.plots import save_prompt_overlays

    masks, prompts, sizes = build_batch(cache, samples, prompt_type, args.seed, box_jitter=args.box_jitter)
    with torch.inference_mode():
        logits = predict_logits(cache, samples, prompts, sizes, args.multimask, decoder.prompt_encoder,
                                decoder.mask_decoder, args.precision)
    examples = []
    for (row, organ), mask, prompt, logit in zip(samples, masks.numpy(), prompts, logits.cpu().numpy()):
        record = cache.index.store.records[cache.index.store_index(row)]
        pred = logit > 0
        examples.append({"image": cache.view(row)[0], "truth": mask, "pred": pred, "prompt": prompt,
                         "dice": dice_score(pred, mask),
                         "caption": f"{organ_title(organ)} (case {record.case_id}, z={record.z})"})
    save_prompt_overlays(examples, path, title)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.core import distributed
    from utils.core.organs import organ_name
    from utils.eval.bootstrap import triples
    from utils.eval.segmentation import evaluate_prompt
    from utils.inference.prompts import PROMPT_TITLES, parse_prompt_types
    from utils.report.tables import mdice_table, table1, titled
    from utils.scaffold.results import config_record, provenance, write_csv, write_results
    from utils.scaffold.session import fail, open_decoders, open_experiment

    try:
        prompt_types = parse_prompt_types(args.prompts)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    exp = open_experiment(args)
    cache = exp.cache
    finetuned = args.finetuned != "none"
    decoders = open_decoders(args, exp, prompt_types, require_finetuned=finetuned)
    rows = cache.index.rows_for(args.split)
    if not rows:
        raise fail(f"{exp.store.path}: the store has no {args.split} slices; try --split all")
    started = time.perf_counter()
    encoded = cache.ensure(rows, batch_size=args.encode_batch, progress=not args.no_progress)
    encode_seconds = time.perf_counter() - started
    samples = cache.index.samples(rows)
    print(f"{exp.store.description}: {len(rows)} {args.split} slices, {len(samples)} organ samples; "
          f"model {exp.model.name} on {exp.device}; encoded {encoded} new slice(s) in {encode_seconds:.1f} s")

    out = args.results / ("task1_finetuned" if finetuned else "task1")
    meta = provenance(exp.store, exp.model, exp.device, args.seed, args.split, precision=args.precision,
                      encoder_precision=args.encoder_precision, n_slices=len(rows), n_samples=len(samples),
                      multimask_output=args.multimask, box_jitter=args.box_jitter,
                      finetuned={p: d.record for p, d in decoders.items()} if finetuned else None)
    results = {k: meta[k] for k in ("model", "checkpoint", "data", "split")}
    results.update({"n_slices": len(rows), "prompts": {}, "provenance": meta, "timing": {}})
    results["records"] = {}  # {prompt: [(case, organ, dice)]} per sample, for the tables' bootstrap intervals
    per_slice = []
    decode_seconds = 0.0
    for prompt_type in prompt_types:
        decoder = decoders[prompt_type]
        t0 = time.perf_counter()
        summary, records = evaluate_prompt(cache, samples, prompt_type, seed=args.seed, batch_size=args.decode_batch,
                                           multimask_output=args.multimask, prompt_encoder=decoder.prompt_encoder,
                                           mask_decoder=decoder.mask_decoder, progress=not args.no_progress,
                                           precision=args.precision, box_jitter=args.box_jitter)
        decode_seconds += time.perf_counter() - t0
        results["prompts"][prompt_type] = dict(summary, decoder=decoder.source)
        results["records"][prompt_type] = triples(records)
        per_slice += [[prompt_type, r["case"], r["z"], organ_name(r["organ"]), f"{r['dice']:.6f}"] for r in records]
        print(f"  {PROMPT_TITLES[prompt_type]:<20} mDice {summary['mDice']:.4f}  ({decoder.source})")
        if args.overlays and distributed.is_main():
            draw_overlays(cache, pick_examples(samples, cache, args.overlays), prompt_type, args, decoder,
                          out / "overlays" / f"{prompt_type}.png",
                          f"Task 1, {PROMPT_TITLES[prompt_type]} ({exp.model.name}, {exp.store.description})")
    n_decoded = len(samples) * len(prompt_types)
    results["timing"] = {
        "encoded_slices": encoded,
        "encoder_seconds_per_slice": round(encode_seconds / encoded, 4) if encoded else None,
        "decoded_prompts": n_decoded,
        "decoded_prompts_per_second": round(n_decoded / decode_seconds, 2) if decode_seconds else None,
        "device": meta["device"],
    }
    kind = "fine-tuned decoders of Task 2" if finetuned else "zero-shot"
    if distributed.is_main():  # torchrun: every rank holds the gathered results; rank 0 writes them
        write_results(out, results, {"table1.md": titled(f"Table 1: mDice of different prompts ({kind})",
                                                         table1(results))}, config_record(args))
        write_csv(out / "per_slice.csv", ["prompt", "case", "z", "organ", "dice"], per_slice)
    print(f"\n{mdice_table(results['prompts'])}")
    print(f"encoder: {results['timing']['encoder_seconds_per_slice']} s/slice; "
          f"decoder: {results['timing']['decoded_prompts_per_second']} prompts/s")
    print(f"wrote {out / 'metrics.json'} and {out / 'table1.md'}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
