"""3-D: SAM's slice predictions reassembled into volumes and scored per volume (Dice, HD95 in mm, NSD).

    python preprocess_slices.py --phantom --data-root data/phantom_3d --phantom-cases 35 \\
        --phantom-slices 18 --slice-margin 2 --out data/slices_3d      # a store with EVERY slice (see below)
    python segmentation_3d.py --slices data/slices_3d                  # zero-shot, results/task3d/
    python segmentation_3d.py --slices data/slices_3d --finetuned auto --finetuned-store data/slices
                                                                       # Task 2's decoders, results/task3d_finetuned/

Two protocols (--modes), each with every prompt type of --prompts:

- per_slice: the study's protocol, in 3-D. A prompt from the ground truth on every slice where the organ
  is; the slices' masks are stacked into a volume.
- propagate: one prompt per organ and volume, from the ground truth on its key slice (the slice of
  largest organ area), then outward slice by slice in both directions: the mask predicted on slice z
  prompts slice z +- 1 (its tight box for box prompts, its distance-transform centre for point prompts),
  until the predicted mask is smaller than --min-area-mm2 or the stored slices end (utils/propagation.py).
  No ground truth is used after the first prompt.

Where two organs' masks overlap, the higher logit wins. Each volume's label map is written as NIfTI on
the source volume's own grid and affine (labels 1..13, BTCV order), read back, and scored against the
source label file with MONAI (utils/volume_metrics.py: per-organ NSD tolerances as in FLARE22; a missed
organ gets Dice 0, NSD 0 and HD95 = the volume's diagonal). The store must hold every slice of each
evaluated volume from its lowest organ slice - margin to its highest + margin (preprocess_slices.py
--slice-margin N): propagation walks through slices without any organ, and a false positive there counts.

Decoders: --finetuned none (zero-shot, results/task3d/) or Task 2's fine-tuned prompt encoder + mask
decoder per prompt type (results/task3d_finetuned/): auto = Task 2's newest run for this model and
store, or, with --finetuned-store SLICES, for the store Task 2 trained on (recorded as other data);
PATH = one prompt type's run folder or best.pt.

Writes metrics.json, table3d.md, config.json, slice_vs_3d.png, views_<case>.png and
predictions/<mode>/<prompt>/<case>.nii.gz.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.scaffold.config import parse_with_presets  # noqa: E402
from utils.scaffold.flags import add_finetuned_args, new_task_parser  # noqa: E402

MODES = ("per_slice", "propagate")

# ---------------------------------------------------------------------------------------------
# Hyperparameters: edit here, or override with the flag of the same name (--min-area-mm2 10).
HYPERPARAMETERS = {
    "MODES": (",".join(MODES), "comma-separated protocols: per_slice (a prompt on every organ slice) and/or "
                               "propagate (one prompt per organ on its key slice, carried slice by slice)"),
    "PROMPTS": ("bound_box,one_central_point", "comma-separated prompt types, or 'all' for the study's five"),
    # A speck at an organ's end is more likely noise than organ. 25 mm^2 (a 5 x 5 mm patch) is ~44 px
    # at BTCV's ~0.75 mm pixels and 5 px at the phantom's 2.4 mm; it is a third of the smallest organ
    # cross-section the phantom draws (an adrenal gland, ~13 px = 75 mm^2), so real organ ends pass.
    "MIN_AREA_MM2": (25.0, "propagation stops at a predicted mask smaller than this (mm^2, converted to pixels "
                           "with the slice's spacing, at least 1 px)"),
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
    from utils.inference.prompts import parse_prompt_types
    from utils.scaffold.config import comma_list

    return parse_with_presets(parser, argv, checks={"prompts": parse_prompt_types, "modes": comma_list(MODES)})


@dataclass
class VolumeSlices:
    """One evaluated volume: its source files, its ground truth and where its slices are in the store.

    gt_source: uint8 labels in the source file's voxel order; gt_display: the same labels as the store's
    display stack (Z, H, W). rows: z -> store row (== base-cache row) for z_first..z_last, no gap.
    """

    case: str
    image_path: Path
    label_path: Path
    affine: object
    gt_source: object
    gt_display: object
    rows: dict[int, int]

    @property
    def z_first(self) -> int:
        return min(self.rows)

    @property
    def z_last(self) -> int:
        return max(self.rows)


def plan_volumes(store, split: str, cases: list[str]) -> list[VolumeSlices]:
    """The volumes of ``split`` (or ``cases``), checked: the store holds every slice the 3-D stage needs and
    the source label files are there, unchanged. Raises SystemExit (via fail) naming the volume otherwise."""
    import nibabel as nib
    import numpy as np

    from utils.core.hashing import file_sha256
    from utils.data.nifti import ras_to_display, source_to_ras
    from utils.scaffold.session import fail

    margin = store.manifest["settings"].get("slice_margin")
    if margin is None:
        raise fail(f"{store.path}: this store holds only slices with an organ (Tasks 1-3's store); the 3-D stage "
                   "needs every slice through the organs. Build one with: python preprocess_slices.py "
                   "--data-root DATA --slice-margin 2 --out data/slices_3d (add --phantom for the phantom), "
                   "then pass --slices data/slices_3d")
    inputs = [i for i in store.manifest["inputs"] if split == "all" or i["split"] == split]
    if cases:
        unknown = sorted(set(cases) - {i["case"] for i in store.manifest["inputs"]})
        if unknown:
            raise fail(f"--cases {','.join(unknown)}: not in the store {store.path} "
                       f"(it has {', '.join(i['case'] for i in store.manifest['inputs'])})")
        inputs = [i for i in store.manifest["inputs"] if i["case"] in cases]
    if not inputs:
        raise fail(f"{store.path}: no {split} volumes in this store; try --split all")
    stored: dict[str, dict[int, int]] = {}
    for record in store.records:
        stored.setdefault(record.case_id, {})[record.z] = record.index
    volumes = []
    for item in inputs:
        case, label_path = item["case"], Path(item["label"])
        if not label_path.is_file():
            raise fail(f"volume {case}: its source label {label_path} (recorded in {store.path / 'manifest.json'}) "
                       "is missing; the 3-D stage scores and writes predictions on the source grid. Restore the "
                       "file, or rebuild the store from where the data now are")
        if file_sha256(label_path) != item["label_sha256"]:
            raise fail(f"volume {case}: {label_path} changed since the store {store.path} was built; rebuild the "
                       "store with preprocess_slices.py")
        image = nib.load(label_path)
        gt_source = np.asarray(image.dataobj).round().astype(np.uint8)
        gt_display = ras_to_display(source_to_ras(gt_source, image.affine))
        organ_z = np.flatnonzero(gt_display.reshape(gt_display.shape[0], -1).any(axis=1))
        rows = stored.get(case, {})
        if organ_z.size == 0:
            continue  # no organ: nothing to score (the store skipped it too)
        need = set(range(max(int(organ_z[0]) - margin, 0), min(int(organ_z[-1]) + margin, len(gt_display) - 1) + 1))
        missing = sorted(need - set(rows))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise fail(f"volume {case} ({label_path}): {len(missing)} of its slices are missing from the store "
                       f"{store.path} (z = {shown}); the 3-D stage needs every slice from its lowest organ slice "
                       f"- {margin} to its highest + {margin}. Rebuild the store with preprocess_slices.py "
                       "--slice-margin N")
        rows = {z: rows[z] for z in sorted(need)}
        volumes.append(VolumeSlices(case, Path(item["image"]), label_path, image.affine, gt_source, gt_display, rows))
    return volumes


def resolve_decoders(args, exp, prompt_types: list[str]) -> tuple[dict, dict | None]:
    """--finetuned none|auto|PATH (+ --finetuned-store) -> ({prompt: DecoderChoice}, the record for the results).

    Resolved, kind-checked and loaded by the scaffold's one hand-off (utils.scaffold.session.open_decoders)."""
    from utils.data.dataset import DataError
    from utils.data.slice_store import SliceStore
    from utils.scaffold.session import fail, open_decoders

    try:
        train_store = SliceStore(args.finetuned_store) if args.finetuned_store else None
    except DataError as exc:
        raise fail(f"--finetuned-store: {exc}") from exc
    choices = open_decoders(args, exp, prompt_types, require_finetuned=True, trained_on=train_store, same_prompt=True)
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


class VolumeDecoder:
    """Decodes (store row, prompt) requests of one volume from the embedding cache, in batches."""

    def __init__(self, cache, choice, batch_size: int, precision: str):
        self.cache, self.choice, self.batch_size, self.precision = cache, choice, batch_size, precision
        self.n_decoded = 0

    def __call__(self, requests):
        import torch

        from utils.inference.batches import predict_logits

        out = []
        with torch.inference_mode():
            for start in range(0, len(requests), self.batch_size):
                chunk = requests[start : start + self.batch_size]
                rows = [row for row, _ in chunk]
                sizes = [self.cache.index.shape(row) for row in rows]
                logits = predict_logits(self.cache, [(row, 0) for row in rows], [p for _, p in chunk], sizes, False,
                                        self.choice.prompt_encoder, self.choice.mask_decoder, self.precision)
                out += list(logits.cpu().numpy())
        self.n_decoded += len(requests)
        return out


def merge_slices(vol: VolumeSlices, logits: dict[int, dict[int, object]]):
    """{z: {organ: (H, W) logits}} -> uint8 display label stack (Z, H, W); unvisited slices are background."""
    import numpy as np

    from utils.data.nifti import merge_organ_logits

    label = np.zeros(vol.gt_display.shape, np.uint8)
    for z, organs in logits.items():
        label[z] = merge_organ_logits(organs, shape=label.shape[1:])
    return label


def segment_per_slice(vol: VolumeSlices, prompt_type: str, decoder: VolumeDecoder, seed: int):
    """A ground-truth prompt on every slice of every organ present; returns (label stack, {})."""
    import numpy as np

    from utils.inference.batches import prompt_for

    requests, keys = [], []
    for z, row in vol.rows.items():
        for organ in (int(o) for o in np.unique(vol.gt_display[z]) if o > 0):
            requests.append((row, prompt_for(vol.gt_display[z] == organ, prompt_type, seed, row, organ)))
            keys.append((z, organ))
    logits: dict[int, dict] = {}
    for (z, organ), answer in zip(keys, decoder(requests) if requests else []):
        logits.setdefault(z, {})[organ] = answer
    return merge_slices(vol, logits), {}


def segment_propagate(vol: VolumeSlices, prompt_type: str, decoder: VolumeDecoder, seed: int, min_area_mm2: float,
                      store):
    """One ground-truth prompt per organ on its key slice, propagated through the volume's stored slices.

    Returns (label stack, {organ name: {"key_z", "z_range", "stops"}}).
    """
    import numpy as np

    from utils.core.organs import organ_name
    from utils.inference.batches import prompt_for
    from utils.inference.propagation import key_slice, propagate_batch

    first, last = vol.z_first, vol.z_last
    gt = vol.gt_display[first : last + 1]
    organs = [int(o) for o in np.unique(gt) if o > 0]
    sy, sx = store.records[vol.rows[first]].spacing
    min_area_px = max(1, math.ceil(min_area_mm2 / (sy * sx)))
    seeds = []
    for organ in organs:
        z = key_slice(gt, organ)
        seeds.append((z, prompt_for(gt[z] == organ, prompt_type, seed, vol.rows[first + z], organ)))
    results = propagate_batch(last - first + 1, seeds,
                              lambda requests: decoder([(vol.rows[first + z], p) for z, p in requests]),
                              prompt_type, min_area_px=min_area_px)
    logits: dict[int, dict] = {}
    trace = {}
    for organ, result in zip(organs, results):
        for z, answer in result.logits.items():
            logits.setdefault(first + z, {})[organ] = answer
        lo, hi = result.z_range
        trace[organ_name(organ)] = {"key_z": first + result.key_z, "z_range": [first + lo, first + hi],
                                    "stops": result.stops}
    return merge_slices(vol, logits), {"min_area_px": min_area_px, "organs": trace}


def score_written(path: Path, vol: VolumeSlices):
    """Read the written NIfTI back and score exactly it against the source labels; returns
    (VolumeScores, {organ label: [slice Dice on each ground-truth slice]}, the written map as a display stack)."""
    import nibabel as nib
    import numpy as np

    from utils.data.nifti import ras_to_display, source_to_ras
    from utils.eval.dice import dice_score
    from utils.eval.volume import score_volume

    image = nib.load(path)
    written = np.asarray(image.dataobj)
    scores = score_volume(written, vol.gt_source, spacing=image.header.get_zooms()[:3])
    display = ras_to_display(source_to_ras(written, image.affine))
    slice_dice = {}
    for organ in scores.organs:
        truth = vol.gt_display == organ
        slice_dice[organ] = [dice_score(display[z] == organ, truth[z]) for z in np.flatnonzero(truth.any(axis=(1, 2)))]
    return scores, slice_dice, display


def summarise(scores: dict, slice_dice: dict, traces: dict, unscored: dict) -> dict:
    """summarise_volumes plus the slice-mean Dice per organ (pooled over the volumes' ground-truth slices)."""
    import numpy as np

    from utils.core.organs import organ_name
    from utils.eval.volume import summarise_volumes

    summary = summarise_volumes(scores)
    pooled: dict[int, list[float]] = {}
    for per_volume in slice_dice.values():
        for organ, values in per_volume.items():
            pooled.setdefault(organ, []).extend(values)
    for organ, values in pooled.items():
        summary["organs"][organ_name(organ)]["slice_dice"] = float(np.mean(values))
    summary["slice_dice"] = float(np.mean([o["slice_dice"] for o in summary["organs"].values()])) if pooled else float("nan")
    summary["false_positive_voxels"] = {case: {organ_name(k): v for k, v in u.items()} for case, u in unscored.items() if u}
    if any(traces.values()):
        summary["propagation"] = traces
    return summary


def draw_figures(out: Path, results: dict, views: dict, store, vol: VolumeSlices, title: str,
                 view_prompt: str) -> list[Path]:
    from utils.report.plots import save_dice_scatter, save_volume_views

    paths = [save_dice_scatter(results["modes"], out / "slice_vs_3d.png", f"Slice-mean Dice vs 3-D Dice ({title})")]
    if views:
        import numpy as np

        image = np.zeros(vol.gt_display.shape, np.float32)
        for z, row in vol.rows.items():
            image[z] = store.load(row)[0]
        sy, sx = store.records[vol.rows[vol.z_first]].spacing
        z_mm = float(abs(np.linalg.det(np.asarray(vol.affine)[:3, :3])) / (sx * sy))  # voxel volume / pixel area
        panels = [("ground truth", vol.gt_display)] + list(views.items())
        paths.append(save_volume_views(image, panels, (z_mm, sy, sx), out / f"views_{vol.case}.png",
                                       f"case {vol.case}: coronal and sagittal ({title}, {view_prompt})"))
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from utils.data.nifti import write_label_nifti
    from utils.inference.prompts import PROMPT_TITLES, parse_prompt_types
    from utils.report.tables import table3d, titled
    from utils.scaffold.results import config_record, provenance, write_results
    from utils.scaffold.session import fail, open_experiment

    try:
        prompt_types = parse_prompt_types(args.prompts)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        raise fail(f"--modes {args.modes!r}: choose from {', '.join(MODES)}")
    exp = open_experiment(args)
    volumes = plan_volumes(exp.store, args.split, [c.strip() for c in args.cases.split(",") if c.strip()])
    choices, finetuned = resolve_decoders(args, exp, prompt_types)
    rows = sorted(r for vol in volumes for r in vol.rows.values())
    started = time.perf_counter()
    encoded = exp.cache.ensure(rows, batch_size=args.encode_batch, progress=not args.no_progress)
    encode_seconds = time.perf_counter() - started
    print(f"{exp.store.description}: {len(volumes)} {args.split} volume(s), {len(rows)} slices; model {exp.model.name} "
          f"on {exp.device}; encoded {encoded} new slice(s) in {encode_seconds:.1f} s")

    out = args.results / ("task3d_finetuned" if finetuned else "task3d")
    meta = provenance(exp.store, exp.model, exp.device, args.seed, args.split, precision=args.precision,
                      encoder_precision=args.encoder_precision, n_slices=len(rows), n_volumes=len(volumes),
                      finetuned=finetuned, slice_margin=exp.store.manifest["settings"]["slice_margin"])
    results = {k: meta[k] for k in ("model", "checkpoint", "data", "split")}
    results.update({"finetuned": finetuned, "modes": {}, "cases": [v.case for v in volumes],
                    "settings": {"min_area_mm2": args.min_area_mm2, "key_slice": "largest organ area",
                                 "decoders": {p: c.source for p, c in choices.items()}},
                    "provenance": meta, "timing": {}})
    figure_views = {}
    timing = {"encoded_slices": encoded, "encode_seconds": round(encode_seconds, 2)}
    for mode in modes:
        results["modes"][mode] = {}
        for prompt_type in prompt_types:
            decoder = VolumeDecoder(exp.cache, choices[prompt_type], args.decode_batch, args.precision)
            scores, slice_dice, traces, unscored = {}, {}, {}, {}
            t0 = time.perf_counter()
            for vol in tqdm(volumes, desc=f"{mode} {prompt_type}", unit="vol", disable=args.no_progress):
                if mode == "per_slice":
                    label, trace = segment_per_slice(vol, prompt_type, decoder, args.seed)
                else:
                    label, trace = segment_propagate(vol, prompt_type, decoder, args.seed, args.min_area_mm2, exp.store)
                path = write_label_nifti(label, vol.label_path, out / "predictions" / mode / prompt_type /
                                         f"{vol.case}.nii.gz", layout="display")
                scores[vol.case], slice_dice[vol.case], display = score_written(path, vol)
                unscored[vol.case] = scores[vol.case].unscored_predictions
                traces[vol.case] = trace
                if vol is volumes[0] and prompt_type == prompt_types[0]:
                    figure_views[mode.replace("_", " ")] = display
            summary = summarise(scores, slice_dice, traces, unscored)
            summary["decoded_prompts"] = decoder.n_decoded
            results["modes"][mode][prompt_type] = summary
            timing[f"{mode}/{prompt_type} seconds"] = round(time.perf_counter() - t0, 2)
            print(f"  {mode:<10} {PROMPT_TITLES[prompt_type]:<20} 3-D Dice {summary['dice']:.4f}  HD95 "
                  f"{summary['hd95_mm']:.1f} mm  NSD {summary['nsd']:.4f}  slice-mean Dice {summary['slice_dice']:.4f}  "
                  f"({decoder.n_decoded} prompts, {summary['n_missed']} missed)")
    results["timing"] = dict(timing, device=meta["device"])
    kind = "Task 2's fine-tuned decoders" if finetuned else "zero-shot"
    write_results(out, results, {"table3d.md": titled(f"3-D results ({kind})", table3d(results))}, config_record(args))
    figures = draw_figures(out, results, figure_views, exp.store, volumes[0],
                           f"{exp.model.name}, {kind}", PROMPT_TITLES[prompt_types[0]])
    print(f"wrote {out / 'metrics.json'}, {out / 'table3d.md'}, {', '.join(p.name for p in figures)} and "
          f"{out / 'predictions'}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
