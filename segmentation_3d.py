"""3-D: SAM's slice predictions reassembled into volumes and scored per volume (Dice, HD95 in mm, NSD).

    python preprocess_slices.py --phantom --data-root data/phantom_3d --phantom-cases 35 \\
        --phantom-extent abdomen --phantom-slices 50 --slice-margin 2 --out data/slices_3d
                                                                       # a store with EVERY slice (see below)
    python segmentation_3d.py --slices data/slices_3d                  # zero-shot, results/task3d/
    python segmentation_3d.py --slices data/slices_3d --finetuned auto --finetuned-store data/slices
                                                                       # Task 2's decoders, results/task3d_finetuned/

Four protocols (--modes), each with every prompt type of --prompts:

- per_slice: the study's protocol, in 3-D. A prompt from the ground truth on every slice where the organ
  is; the slices' masks are stacked into a volume.
- propagate: one prompt per organ and volume, from the ground truth on its key slice (the slice of
  largest organ area), then outward slice by slice in both directions: the mask predicted on slice z
  prompts slice z +- 1 (its tight box for box prompts, its distance-transform centre for point prompts),
  until the predicted mask is smaller than --min-area-mm2, a stop rule rejects it, or the stored slices end;
  --box-margin-mm grows each propagated box (default 4 mm; 0 = the tight box). No ground truth is used after
  the first prompt (utils/inference/segment3d.py and propagation.py hold the protocols). metrics.json counts the
  organ slices the propagation reached (reached_slices of organ_slices). Stop rules: --min-iou-previous (a
  mask overlapping the previous one too little; default 0.5), --max-area-factor (its area jumps) and
  --min-predicted-iou (the model's own IoU head doubts it), both off; --largest-component keeps each organ's
  largest 26-connected 3-D component (off). The defaults were chosen on training volumes (docs/3d.md).
- box3d (box prompt types only): the 3-D box of MedSAM and the CVPR 2024 "SAM on laptop" challenge: the key
  slice's prompt plus the organ's first and last ground-truth slice. Propagation as above, but never outside
  that range; a rejected slice inside it does not stop the walk (the next slice is prompted with the last
  accepted box), and inside it only --min-area-mm2 rejects a slice unless --rules-in-range.
- clicks3d (box prompt types only): box3d's result, then --clicks N (default 5) correction clicks per organ by the CVPR 2025
  interactive 3-D rule (largest 26-connected 3-D error component, its distance-transform maximum in mm,
  positive where it is mostly missed organ, negative where mostly leak); a click on slice z re-decodes z
  with its box and its clicks (--click-mask-input: and its previous low-res logits), and re-propagates the
  change downstream (away from the key slice) inside the range up to the next clicked slice
  (utils/inference/clicks3d.py says exactly how; both defaults chosen on training volumes, docs/3d.md).
  metrics.json adds dice_per_click, nsd_per_click, hd95_mm_per_click, dice_auc and nsd_auc (the mean of
  the N + 1 points, utils/eval/auc.py).

Where two organs' masks overlap, the higher logit wins. Each volume's label map is written as NIfTI on
the source volume's own grid and affine (labels 1..13, BTCV order), read back, and scored against the
source label file with MONAI (utils/eval/metrics3d.py: per-organ NSD tolerances as in FLARE22; a missed
organ gets Dice 0, NSD 0 and HD95 = the volume's diagonal). The store must hold every slice of each
evaluated volume from its lowest organ slice - margin to its highest + margin (preprocess_slices.py
--slice-margin N): propagation walks through slices without any organ, and a false positive there counts.

Decoders: --finetuned none (zero-shot, results/task3d/), Task 2's fine-tuned prompt encoder + mask
decoder per prompt type (results/task3d_finetuned/): auto = Task 2's newest run for this model and
store, or, with --finetuned-store SLICES, for the store Task 2 trained on (recorded as other data);
PATH = one prompt type's run folder or best.pt; or interactive = the interactive decoder
(finetune_interactive.py; with --finetuned-store SLICES, the one trained on that store), one decoder for
every prompt type (results/task3d_trained/).

Writes metrics.json, table3d.md, config.json, slice_vs_3d.png, views_<case>.png and
predictions/<mode>/<prompt>/<case>.nii.gz.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.eval.protocols3d import MODES  # noqa: E402
from utils.inference.propagation import PROPAGATION_HYPERPARAMETERS  # noqa: E402
from utils.inference.clicks import REFINE_MODES  # noqa: E402
from utils.scaffold.config import comma_list, parse_with_presets  # noqa: E402
from utils.scaffold.flags import add_finetuned_args, new_task_parser  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Hyperparameters: edit here, or override with the flag of the same name (--min-area-mm2 10).
HYPERPARAMETERS = {
    "MODES": (",".join(MODES), "comma-separated protocols: per_slice (a prompt on every organ slice), "
                               "propagate (one prompt per organ on its key slice, carried slice by slice), box3d "
                               "(propagate inside the organ's first..last slice), clicks3d (box3d + --clicks)"),
    "PROMPTS": ("bound_box,one_central_point", "comma-separated prompt types, or 'all' for the study's five"),
    # The propagation rules (min area, box margin, stop rules, carry mode, key slice...): declared once, with why each
    # default, in utils/inference/propagation.py (PropagationSettings), the same flags as segment_volume.py's.
    **PROPAGATION_HYPERPARAMETERS,
    "CLICKS": (5, "clicks3d: correction clicks per organ after the 3-D box (the CVPR 2025 challenge's 5)"),
    "CLICK_REPROPAGATION": ("downstream", "clicks3d: how far a click's change travels: downstream (away from the key "
                                          "slice, the slices whose prompts came from the clicked one), both, or none"),
    # Chosen on TRAINING volumes (phantom cases 1, 2; docs/3d.md): off and downstream gave the best mean Dice AUC
    # of the zero-shot, Task 2 and interactive decoders (0.692; mask input on: 0.645, with "both": 0.479).
    "CLICK_MASK_INPUT": (False, "clicks3d: pass the clicked slice's previous low-res logits back as SAM's mask "
                                "input (the challenge passes the previous prediction in; off by default, see docs/3d.md)"),
    "REFINE": ("global", "clicks3d: what a clicked slice's new mask replaces: global (all of it) or local (only the "
                         "click's own change, FocalClick's merge; docs/interactive.md)", REFINE_MODES),
    "REFINE_WINDOW": (0, "clicks3d, local: side in slice px of the window the change is searched in (0 = the slice)"),
    "REFINE_GROWTH": (1.4, "clicks3d, local: the window grows by this factor while the change touches its edge, "
                           "up to 4x", "positive"),
    "DECODE_BATCH": (0, "prompts per mask-decoder call; 0 = auto (8 on a CPU, 64 on a GPU)"),
    "CASES": ("", "comma-separated case ids to evaluate (default: every volume of --split)"),
}
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    parser = new_task_parser(__doc__, HYPERPARAMETERS, split="val")
    add_finetuned_args(parser, default="none")
    parser.add_argument("--finetuned-store", type=Path, default=None, metavar="SLICES",
                        help="with --finetuned auto: the slice store Task 2 trained on, when it is not --slices "
                             "(Task 2 trains on Tasks 1-3's organ-slice store; this stage needs a store of every "
                             "slice). The hand-off is recorded in the results as trained on other data")
    from utils.inference.clicks3d import REPROPAGATION
    from utils.inference.prompts import parse_prompt_types
    from utils.scaffold.config import one_of

    return parse_with_presets(parser, argv, checks={"prompts": parse_prompt_types, "modes": comma_list(MODES),
                                                    "click_repropagation": one_of(REPROPAGATION)})


def resolve_decoders(ev, prompt_types: list[str]) -> tuple[dict, dict | None]:
    """--finetuned none|auto|PATH (+ --finetuned-store) -> ({prompt: DecoderChoice}, the record for the results).

    Resolved, kind-checked and loaded by the evaluation scaffold's one hand-off (``Evaluation.open_decoders``,
    which also sends the interactive decoder's results to results/task3d_trained/)."""
    from utils.data.dataset import DataError
    from utils.data.slice_store import SliceStore
    from utils.scaffold.session import fail

    args, exp = ev.args, ev.exp
    try:
        train_store = SliceStore(args.finetuned_store) if args.finetuned_store else None
    except DataError as exc:
        raise fail(f"--finetuned-store: {exc}") from exc
    choices = ev.open_decoders(prompt_types, require_finetuned=True, trained_on=train_store, same_prompt=True)
    if args.finetuned == "none":
        return choices, None
    known = {store.key: {"slice_store": str(store.path), "store_key": store.key, "data": store.description}
             for store in (exp.store, train_store) if store is not None}
    record = {}
    for prompt, choice in choices.items():
        key = choice.handoff.identity.get("store_key")
        trained_on = known.get(key, {"slice_store": None, "store_key": key, "data": "another slice store"})
        record[prompt] = dict(choice.record, source=choice.source, trained_on=trained_on,
                              task2_identity=choice.handoff.identity)
    return choices, record


def draw_figures(out: Path, results: dict, views: dict, store, vol, title: str, view_prompt: str) -> list[Path]:
    """slice_vs_3d.png (every mode and prompt), views_<case>.png (the first volume's coronal and sagittal
    views: ground truth and each mode's written prediction) and dice_along_z_<case>.png (its organs' slice Dice
    along z per mode, for ``view_prompt``'s type)."""
    from utils.inference.prompts import PROMPT_TITLES
    from utils.report.plots import save_dice_scatter, save_slice_profiles, save_volume_views

    paths = [save_dice_scatter(results["modes"], out / "slice_vs_3d.png", f"Slice-mean Dice vs 3-D Dice ({title})")]
    profiles = {mode: by_prompt[view_prompt]["slice_profiles"][vol.case] for mode, by_prompt in results["modes"].items()
                if view_prompt in by_prompt}
    if profiles:
        paths.append(save_slice_profiles(profiles, out / f"dice_along_z_{vol.case}.png",
                                         f"case {vol.case}: slice Dice along z per organ ({title}, {PROMPT_TITLES[view_prompt]})"))
    if views:
        panels = [("ground truth", vol.gt_display)] + list(views.items())
        paths.append(save_volume_views(vol.image_stack(store), panels, vol.voxel_mm(store),
                                       out / f"views_{vol.case}.png",
                                       f"case {vol.case}: coronal and sagittal ({title}, {PROMPT_TITLES[view_prompt]})"))
    return paths


def results_header(ev, choices: dict, finetuned: dict | None, volumes: list) -> dict:
    """The results dict before any protocol is scored: provenance, the decoders, the cases and every
    propagation rule as PropagationSettings names it (as segment_volume.py records it)."""
    from dataclasses import asdict

    from utils.eval.protocols3d import click_refinement
    from utils.inference.propagation import PropagationSettings

    args = ev.args
    meta = ev.provenance(n_volumes=len(volumes), finetuned=finetuned,
                         slice_margin=ev.exp.store.manifest["settings"]["slice_margin"])
    return ev.header(meta, finetuned=finetuned, modes={}, cases=[v.case for v in volumes],
                     settings={**asdict(PropagationSettings.from_args(args)), "clicks": args.clicks,
                               "click_repropagation": args.click_repropagation,
                               "click_mask_input": args.click_mask_input,
                               "click_refinement": click_refinement(args).record(), "key_slice": "largest organ area",
                               "decoders": {p: c.source for p, c in choices.items()}})


def print_summary(mode: str, prompt_type: str, summary: dict) -> None:
    from utils.inference.prompts import PROMPT_TITLES

    print(f"  {mode:<10} {PROMPT_TITLES[prompt_type]:<20} 3-D Dice {summary['dice']:.4f}  HD95 "
          f"{summary['hd95_mm']:.1f} mm  NSD {summary['nsd']:.4f}  slice-mean Dice {summary['slice_dice']:.4f}  "
          f"({summary['decoded_prompts']} prompts, {summary['n_missed']} missed"
          + (f", {summary['reached_slices']}/{summary['organ_slices']} organ slices reached)"
             if "organ_slices" in summary else ")"))
    if "dice_per_click" in summary:
        print("  " + " " * 31 + "Dice after 0..N clicks " + " ".join(f"{d:.3f}" for d in summary["dice_per_click"])
              + f"  Dice AUC {summary['dice_auc']:.4f}  NSD AUC {summary['nsd_auc']:.4f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.data.volumes import plan_volumes
    from utils.eval.protocols3d import click_refinement, plan_protocols, remembering_decoders, run_protocols
    from utils.inference.prompts import PROMPT_TITLES, parse_prompt_types
    from utils.report.tables import table3d, titled
    from utils.scaffold.evaluation import Evaluation

    ev = Evaluation(args, "task3d")
    prompt_types = ev.parse(parse_prompt_types, args.prompts)
    modes = ev.parse(comma_list(MODES), args.modes)  # already checked by parse_args (a bad value exits 2)
    ev.parse(lambda _: click_refinement(args), args.refine)  # a bad window or growth: one line, before loading
    exp = ev.open()
    # a case the store lacks is a DataError: the boundary prints its one line
    volumes = plan_volumes(exp.store, args.split, [c.strip() for c in args.cases.split(",") if c.strip()])
    choices, finetuned = resolve_decoders(ev, prompt_types)
    ev.encode(sorted(r for vol in volumes for r in vol.rows.values()))
    print(ev.describe(f"{len(volumes)} {args.split} volume(s), {len(ev.rows)} slices"))

    results = results_header(ev, choices, finetuned, volumes)
    protocols, skipped = plan_protocols(modes, prompt_types)
    for mode, prompt_type in skipped:
        print(f"  {mode:<10} {PROMPT_TITLES[prompt_type]:<20} skipped: {mode} is a box protocol")
    results["modes"] = {mode: {} for mode in modes}
    counts = run_protocols(protocols, remembering_decoders(choices, ev.decoder), volumes, exp.store, args, ev.out,
                           progress=not args.no_progress)
    figure_views, timing = {}, {"encode_seconds": round(ev.encode_seconds, 2)}
    for protocol in protocols:
        summary = results["modes"][protocol.mode][protocol.prompt_type] = protocol.summary()
        timing[f"{protocol.mode}/{protocol.prompt_type} seconds"] = round(protocol.seconds, 2)
        if protocol.prompt_type == prompt_types[0]:
            figure_views[protocol.mode.replace("_", " ")] = protocol.first_view
        print_summary(protocol.mode, protocol.prompt_type, summary)
    # prompts decoded, and prompts answered from another protocol's decode of the same volume
    timing.update(decoded_prompts=counts["decoded"], reused_prompts=counts["reused"])
    results["timing"] = ev.timing(**timing)
    kind = ev.decoder_title
    ev.write(results, {"table3d.md": titled(f"3-D results ({kind})", table3d(results))})
    figures = draw_figures(ev.out, results, figure_views, exp.store, volumes[0], f"{exp.model.name}, {kind}",
                           prompt_types[0]) if ev.is_main else []
    print(f"wrote {ev.out / 'metrics.json'}, {ev.out / 'table3d.md'}, {', '.join(p.name for p in figures)} and "
          f"{ev.out / 'predictions'}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
