"""Segment a CT that has no labels: your prompts, any decoder, a NIfTI label map that opens over the CT.

    python segment_volume.py --image CT.nii.gz --prompts prompts.json                 # zero-shot
    python segment_volume.py --image CT.nii.gz --prompts prompts.json \\
        --finetuned checkpoints/finetuned/lite_medsam/bound_box/latest                # Task 2's box decoder
    python segment_volume.py --image CT.nii.gz --prompts prompts.json \\
        --finetuned interactive                                                        # the interactive decoder
    python segment_volume.py --image CT.nii.gz --prompts prompts.json \\
        --classifier checkpoints/classifier/lite_medsam/one_central_point/latest       # Task 3 names "auto" organs

prompts.json, one entry per organ (coordinates: "voxel" = the file's (i, j, k) array indices, whatever its
orientation; "mm" = world millimetres, RAS+ as in 3D Slicer; ITK-SNAP shows LPS, negate x and y)::

    {"coordinates": "voxel",
     "organs": [{"organ": "liver", "box": [[40, 60, 30], [110, 120, 30]], "first": [0, 0, 12], "last": [0, 0, 41]},
                {"organ": "spleen", "box": [[120, 70, 25], [150, 110, 25]]},
                {"organ": "aorta", "points": [[88, 80, 28]], "labels": [1]}]}

A box is two opposite corners on one axial slice; points lie on one axial slice (labels 1 = organ, 0 = not).
With "first" and "last" (any point on the organ's first / last slice) the box is a 3-D box: the masks stay
inside those slices, and a slice whose mask is rejected does not stop the walk (segmentation_3d.py's box3d);
without them each organ is propagated from its slice outward until its masks stop (its propagate mode).
The rules are those of segmentation_3d.py (utils/inference/propagation.py): each next slice is prompted by
the box of the previous mask grown by --box-margin-mm (points: its distance-transform centre), a mask
under --min-area-mm2 is rejected. The CT is read and windowed exactly as the slice store cuts it
(utils/data/ct.py), each slice encoded the first time propagation reaches it (or, with --embeddings-from
SLICES, read from the embedding cache of a slice store cut from this CT). Where organs overlap the higher
logit wins.

Decoders: --finetuned none (the model's own) or PATH: a Task 2 run folder / best.pt (trained for one prompt
type: use it with that type) or an interactive run's (finetune_interactive.py; any prompt). Other
checkpoints are refused before loading.

Naming organs: --classifier PATH (a Task 3 run folder or best.pt, classify_train_task3.py) names every entry
whose "organ" is "auto" (or missing): its prompt is decoded on its slice, and the classifier is given the
prompt of the type it was trained with made from that mask (one_central_point: the mask's distance-transform
centre), as Task 3 scores it (utils/inference/naming.py). The sidecar records, for every entry, what the
classifier said and its probability, and who named the organ written (the prompt file or the classifier).
Every "auto" entry gets a different organ, none the file names (the assignment of largest summed
log-probability); more "auto" entries than organs left is an error.

Writes --out (default results/segment_volume/<CT name>_labels.nii.gz): uint8 labels 1..13 in BTCV order on
the CT's own grid, affine and header (it opens over the CT in 3D Slicer or ITK-SNAP); beside it <name>.png (the
CT with the map: axial at each prompt's key slice, coronal and sagittal through the organs, organ legend) and
<name>.json: the CT and its digest, model and checkpoint digests, decoder, precision, the prompts as given
and as decoded (display-stack coordinates), the settings, and per organ its slices and stop reasons. No
label is read: this script never sees a ground truth.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.inference.propagation import PROPAGATION_HYPERPARAMETERS  # noqa: E402
from utils.scaffold.config import add_hyperparameters, new_parser, parse_with_presets  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Hyperparameters: edit here, or override with the flag of the same name. The same defaults as
# segmentation_3d.py, so a prompt file made from a labelled volume reproduces its box3d / propagate.
HYPERPARAMETERS = {
    # The propagation rules (min area, box margin, stop rules, carry mode...): declared once, with why each default,
    # in utils/inference/propagation.py (PropagationSettings), the same flags as segmentation_3d.py's; but the key
    # slice, which the person's prompt file gives here.
    **{name: spec for name, spec in PROPAGATION_HYPERPARAMETERS.items() if name != "KEY_SLICE"},
    "DECODE_BATCH": (8, "prompts per mask-decoder call"),
    "ENCODE_BATCH": (1, "slices per image-encoder call (1: fastest on a CPU, the same embeddings at any batch)"),
}
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    from utils.scaffold.flags import DECODER, add_flags, flag_group

    parser = new_parser(__doc__)
    io = flag_group(parser, "input and output")
    io.add_argument("--image", type=Path, required=True, help="the CT, a 3-D NIfTI file (.nii or .nii.gz)")
    io.add_argument("--prompts", type=Path, required=True, help="the prompt file (JSON, format above)")
    io.add_argument("--score-against", type=Path, default=None, metavar="LABELS",
                    help="after writing, score the label map against this label file (same grid): 3-D Dice, HD95, "
                         "NSD per organ you prompted and their mean, printed and in the sidecar (the reference's "
                         "organs you did not prompt are listed, not scored). Its grid is checked before segmenting; "
                         "its labels are read only after, never for prompts")
    io.add_argument("--out", type=Path, default=None,
                    help="label map to write (.nii.gz; default results/segment_volume/<CT name>_labels.nii.gz)")
    add_flags(parser, ("--model", "--checkpoint", "--encoder-precision", "--precision", "--device", "--no-progress",
                       "--cache-dir"))
    io.add_argument("--embeddings-from", type=Path, default=None, metavar="SLICES",
                    help="a slice store cut from this CT (preprocess_slices.py) whose embedding cache for this --model "
                         "and --encoder-precision already holds some of its slices: those slices are read from it "
                         "(matched by their pixels, bit for bit; float16 as the cache keeps them), not encoded again")
    decoder = flag_group(parser, DECODER)
    decoder.add_argument(
        "--finetuned", default="none", metavar="none|auto|interactive|propagation|PATH",
        help="none = the model's own prompt encoder + mask decoder; auto = Task 2's run for the prompt type of "
             "every entry; interactive = the interactive decoder; propagation = Task 2's propagated_box run (each "
             "the newest under checkpoints/, as segmentation_3d.py names them); PATH = a Task 2 or interactive run "
             "folder, its best.pt or the latest file beside run folders (default none). Resolved before loading")
    decoder.add_argument(
        "--classifier", type=Path, default=None, metavar="PATH",
        help="a Task 3 classifier run folder or its best.pt (classify_train_task3.py): names every organ the prompt "
             "file leaves as \"auto\" (and gives its opinion of the named ones, in the sidecar)")
    decoder.add_argument("--min-name-probability", type=float, default=0.5, metavar="P",
                         help="with --classifier: an \"auto\" entry whose assigned organ has a probability below P is "
                              "refused (name it in the file) instead of guessed (default 0.5)")
    add_hyperparameters(parser, HYPERPARAMETERS)

    args = parse_with_presets(parser, argv)
    if args.out is None:
        stem = args.image.name.removesuffix(".gz").removesuffix(".nii")
        args.out = ROOT / "results" / "segment_volume" / f"{stem}_labels.nii.gz"
    if not args.out.name.endswith((".nii.gz", ".nii")):
        parser.error(f"--out {args.out}: a NIfTI path must end in .nii.gz or .nii")
    return args


def open_classifier(path: Path, model):
    """(classifier, its prompt encoder, the prompt type it was trained with, record) of Task 3 run ``path`` (run
    folder, best.pt or ``latest``), its kind checked before loading; copies: the segmenting decoder keeps its own."""
    from modified_classifier import load_classifier
    from utils.core.checkpoints import TASK3, check_kind, load_checkpoint
    from utils.core.errors import CheckpointError
    from utils.scaffold.runs import run_checkpoint
    from utils.scaffold.unlabelled import run_record

    checkpoint = run_checkpoint(path)
    state = load_checkpoint(checkpoint)
    check_kind(state, checkpoint, TASK3, "--classifier")  # an unrecognised file fails to load, below
    try:
        classifier, prompt_encoder = load_classifier(model.sam, state["model"], copy_weights=True)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint} (given as --classifier): its weights do not fit {model.name}'s "
                              f"classifying decoder ({str(exc).splitlines()[0]}); pass a run of the same --model") from exc
    record = run_record(checkpoint, state)
    record["trained_for_prompt"] = record["trained_for_prompt"] or "one_central_point"
    record["trained_on"] = (state.get("config") or {}).get("trained_on") or "not recorded (a run made before 2026-12-08)"
    return classifier, prompt_encoder, record["trained_for_prompt"], record


def name_prompts(args, prompts: list, decoder, model, size) -> dict | None:
    """--classifier: name every entry the prompt file left as "auto" (in place: one organ each, none the file
    names; utils.inference.naming.assign_organs) and record the classifier's opinion of every entry; None
    without --classifier."""
    from utils.core.organs import organ_name
    from utils.inference.naming import assign_organs, name_organs
    from utils.inference.prompt_file import UNNAMED
    from utils.scaffold.session import fail

    if args.classifier is None:
        return None
    classifier, prompt_encoder, prompt_type, record = open_classifier(args.classifier, model)
    print(f"naming organs with the classifier {record['checkpoint']}, trained on: {record['trained_on']}")
    if "phantom" in record["trained_on"] or "not recorded" in record["trained_on"]:
        print("  WARNING: this classifier was not trained on real CT (or does not say it was): its names and "
              "probabilities say little about your CT; check every name it gives")
    decoder.remember(memo_mb=64)  # the key-slice decodes naming needs are propagation's first ones: decoded once
    namings = name_organs(prompts, decoder, classifier, prompt_encoder, prompt_type, size, args.precision)
    unnamed = [i for i, p in enumerate(prompts) if p.organ == UNNAMED]
    for i in unnamed:
        if namings[i].log_probabilities is None:
            raise fail(f"{args.prompts}: organs[{i}]: its prompt gave an empty mask on slice {prompts[i].key_z}, so "
                       "the classifier has nothing to name; name the organ in the file or move the prompt")
    try:
        assigned = assign_organs([namings[i] for i in unnamed], {p.organ for p in prompts if p.organ != UNNAMED})
    except ValueError as exc:
        raise fail(f"{args.prompts}: {exc}; name fewer entries \"auto\"") from exc
    for i, organ in zip(unnamed, assigned):
        probability = float(namings[i].probabilities[organ - 1])
        if probability < args.min_name_probability:
            raise fail(f"{args.prompts}: organs[{i}]: the classifier's name for it, {organ_name(organ)}, has p = "
                       f"{probability:.2f} < --min-name-probability {args.min_name_probability}; name the organ in "
                       "the file (or lower the threshold)")
        prompts[i].organ = organ
    entries = []
    for i, (p, naming) in enumerate(zip(prompts, namings)):
        named_by = "classifier" if i in unnamed else "prompt file"
        entries.append(dict(naming.record(), entry=i, named_by=named_by, organ_written=organ_name(p.organ)))
        entries[-1]["probability_of_organ_written"] = (None if naming.probabilities is None else
                                                       round(float(naming.probabilities[p.organ - 1]), 4))
        print(f"  organs[{i}]: {organ_name(p.organ)} ({named_by}, p = {entries[-1]['probability_of_organ_written']}; "
              f"the classifier's most probable: {entries[-1]['organ']}, p = {naming.probability:.2f})")
    return {"classifier": record, "assignment": "one organ per entry, none the file names: largest summed "
                                                "log-probability (scipy linear_sum_assignment)", "entries": entries}


def print_result(traces: dict, scores: dict | None, score_against) -> None:
    for name, trace in traces.items():
        empty = " (EMPTY: its prompt gave no mask; check the prompt)" if not trace["voxels"] else ""
        print(f"  {name:<26} slices {trace['predicted_z_range'][0]}..{trace['predicted_z_range'][1]} "
              f"({trace['slices']} with a mask), {trace['voxels']} voxels{empty}")
    if scores:
        print(f"  scored against {score_against}, the organs you prompted:")
        print(f"    {'organ':<26} {'Dice':>7} {'HD95 mm':>8} {'NSD':>7}")
        for name, o in scores["organs"].items():
            print(f"    {name:<26} {o['dice']:7.4f} {o['hd95_mm']:8.1f} {o['nsd']:7.4f}")
        print(f"    {'mean over ' + str(len(scores['organs'])) + ' organ(s)':<26} {scores['dice']:7.4f} "
              f"{scores['hd95_mm']:8.1f} {scores['nsd']:7.4f}")
        absent = [n for n in scores.get("scored_organs", []) if n not in scores["organs"]]
        if absent:
            print(f"  prompted but not in the reference (not scored): {', '.join(absent)}")
        if scores.get("unprompted"):
            print(f"  in the reference but not prompted (not scored): {', '.join(scores['unprompted'])}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dataclasses import asdict

    from utils.core.device import describe
    from utils.core.io import check_output_path, write_json
    from utils.core.organs import organ_name
    from utils.data.ct import load_ct, load_label_display
    from utils.data.nifti import write_label_nifti
    from utils.eval.volume_scoring import score_label_file
    from utils.inference.decoder import CacheDecoder
    from utils.inference.prompt_file import prompts_of_spec, read_prompt_spec
    from utils.inference.propagation import PropagationSettings
    from utils.inference.segment3d import merge_organs, segment_prompts
    from utils.report.plots import save_label_picture
    from utils.scaffold.session import quiet_third_party
    from utils.scaffold.unlabelled import ct_embeddings, open_model, open_run_decoder, resolve_decoder, sidecar_record

    quiet_third_party()
    started = time.perf_counter()
    sidecar = args.out.with_name(args.out.name.removesuffix(".gz").removesuffix(".nii") + ".json")
    reads = {"--image": args.image, "--prompts": args.prompts, "--score-against": args.score_against}
    outputs = (("--out", args.out), ("--out's sidecar", sidecar), ("--out's picture", sidecar.with_suffix(".png")))
    for flag, path in outputs:  # nothing of yours is overwritten
        check_output_path(path, reads, flag, fix="--out")
    ct = load_ct(args.image)
    # the reference read (and its grid checked) now: a refusal must not follow the writing; used only after segmenting
    reference = load_label_display(args.score_against, ct) if args.score_against else None
    prompt_spec = read_prompt_spec(args.prompts)  # read once: parsed here, copied into the sidecar
    prompts = prompts_of_spec(prompt_spec, ct, args.prompts, allow_unnamed=args.classifier is not None)
    finetuned = resolve_decoder(args.finetuned, args.model, {p.prompt_type for p in prompts}, ROOT / "checkpoints")
    model, device = open_model(args)
    prompt_encoder, mask_decoder, decoder_record = open_run_decoder(finetuned, model)
    embeddings = ct_embeddings(model, ct.images, args)
    decoder = CacheDecoder(embeddings, prompt_encoder, mask_decoder, args.precision)
    naming = name_prompts(args, prompts, decoder, model, ct.images.shape[1:])
    settings = PropagationSettings.from_args(args)
    print(f"{args.image}: {len(ct.images)} axial slices of {ct.images.shape[2]} x {ct.images.shape[1]} px "
          f"({ct.spacing[1]:.2f} x {ct.spacing[0]:.2f} x {ct.z_mm:.2f} mm); {len(prompts)} organ(s); model "
          f"{model.name} on {describe(device)}; decoder: {decoder_record['source']}")
    decode_rows = decoder.propagation_decoder(args.decode_batch, settings.feed_logits)
    logits, traces = segment_prompts(len(ct.images), ct.spacing, prompts, decode_rows, settings)

    label = merge_organs(ct.images.shape, logits)
    for organ in logits:
        traces[organ_name(organ)]["voxels"] = int((label == organ).sum())
    write_label_nifti(label, args.image, args.out, layout="display")
    picture = save_label_picture(ct.images, label, (ct.z_mm, ct.spacing[0], ct.spacing[1]),
                                 [p.key_z for p in prompts], sidecar.with_suffix(".png"),
                                 f"{args.image.name}: {len(logits)} organ(s), {decoder_record['source'][:60]}")
    wall_seconds = round(time.perf_counter() - started, 2)  # segmenting; scoring after it is not counted
    prompted = sorted({p.organ for p in prompts})
    scores = score_label_file(args.out, args.score_against, ct, prompted, reference) if args.score_against else None
    record = sidecar_record(args, model, device, decoder_record, prompt_spec, asdict(settings), naming, traces)
    record["timing"] = {"encoded_slices": embeddings.n_encoded, "reused_slices": embeddings.n_reused,
                        "decoded_prompts": decoder.n_decoded, "reused_prompts": decoder.n_reused,
                        "wall_seconds": wall_seconds}
    if scores:
        record["scored_against"] = dict(label=str(args.score_against), **scores)
    write_json(sidecar, record)
    print_result(traces, scores, args.score_against)
    print(f"wrote {args.out}, {sidecar} and {picture} ({embeddings.n_encoded} slices encoded, {decoder.n_decoded} "
          "prompts decoded)")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
