"""Running the 3-D stage's protocols (segmentation_3d.py --modes) over volumes: each volume segmented by a
protocol (:mod:`utils.inference.segment3d`), its label map written as NIfTI, read back and scored
(:mod:`utils.eval.volume_scoring`), and every protocol of one volume run before the next, so a prompt two
protocols ask for is decoded once.
"""
from __future__ import annotations

import time
from pathlib import Path

MODES = ("per_slice", "propagate", "box3d", "clicks3d")
BOX_MODES = ("box3d", "clicks3d")  # the field's 3-D box protocols: run for box prompt types only


def click_refinement(args):
    """segmentation_3d.py's --refine/--refine-window/--refine-growth as a Refinement (global when absent)."""
    from utils.inference.clicks import Refinement

    return Refinement(getattr(args, "refine", "global"), getattr(args, "refine_window", 0),
                      getattr(args, "refine_growth", 1.4))


def segment(mode: str, prompt_type: str, decoder, vol, store, args) -> tuple[list, dict]:
    """One volume by one protocol: ([label stack] (one per click round for clicks3d), trace).

    decoder: a ``utils.inference.decoder.CacheDecoder``; args: segmentation_3d.py's flags (the propagation
    rules of ``PropagationSettings.from_args``, decode_batch, seed, clicks, click_repropagation,
    click_mask_input, refine, refine_window, refine_growth)."""
    from utils.inference.propagation import PropagationSettings
    from utils.inference.segment3d import segment_clicks3d, segment_per_slice, segment_propagate

    settings = PropagationSettings.from_args(args)
    decode_rows = decoder.propagation_decoder(args.decode_batch, settings.feed_logits and mode != "per_slice")
    if mode == "per_slice":
        label, trace = segment_per_slice(vol, prompt_type, decode_rows, args.seed, store)
        return [label], trace
    if mode == "clicks3d":
        decode_with_masks = lambda requests: decoder.predict_requests(requests, args.decode_batch)  # noqa: E731
        return segment_clicks3d(vol, prompt_type, decode_rows, decode_with_masks, args.seed, store, settings,
                                args.clicks, args.click_repropagation, args.click_mask_input, click_refinement(args))
    label, trace = segment_propagate(vol, prompt_type, decode_rows, args.seed, store, settings, bounded=mode == "box3d")
    return [label], trace


class VolumeProtocol:
    """One protocol with one prompt type over the volumes: per click round (one round unless clicks3d) the
    scores, slice Dice, traces and unscored predictions of each volume; the first volume's written map as a
    display stack (the figures' view); the prompts it asked for and its seconds."""

    def __init__(self, mode: str, prompt_type: str):
        self.mode, self.prompt_type = mode, prompt_type
        self.per_click: list[tuple[dict, dict, dict, dict]] = []
        self.first_view, self.asked, self.seconds = None, 0, 0.0

    def run(self, decoder, vol, store, args, out: Path) -> None:
        """Segment ``vol``, write its label map(s) under ``out``/predictions/<mode>/<prompt>/ as NIfTI, read back
        and score them (clicks3d: after every click, the last one kept on disk)."""
        from utils.data.nifti import write_label_nifti
        from utils.eval.volume_scoring import score_written

        t0, before = time.perf_counter(), decoder.n_decoded + decoder.n_reused
        labels, trace = segment(self.mode, self.prompt_type, decoder, vol, store, args)
        self.asked += decoder.n_decoded + decoder.n_reused - before
        path = out / "predictions" / self.mode / self.prompt_type / f"{vol.case}.nii.gz"
        for k, label in enumerate(labels):
            written = write_label_nifti(label, vol.label_path, path, layout="display")
            scores, slice_dice, display = score_written(written, vol)
            if len(self.per_click) <= k:
                self.per_click.append(({}, {}, {}, {}))
            for bucket, value in zip(self.per_click[k], (scores, slice_dice, trace, scores.unscored_predictions)):
                bucket[vol.case] = value
        self.first_view = display if self.first_view is None else self.first_view
        self.seconds += time.perf_counter() - t0

    def summary(self) -> dict:
        from utils.eval.volume_scoring import summarise_3d, summarise_clicks

        summary = summarise_3d(*self.per_click[-1])
        if self.mode == "clicks3d":
            summary.update(summarise_clicks([summarise_3d(*round_) for round_ in self.per_click]))
        summary["decoded_prompts"] = self.asked  # what the protocol asks for, whether decoded or kept from another
        return summary


def plan_protocols(modes: list[str], prompt_types: list[str]) -> tuple[list[VolumeProtocol], list[tuple[str, str]]]:
    """Every (mode, prompt type) to run, in that order, and the (mode, prompt type) pairs skipped because the
    mode is a box protocol and the prompt is not a box."""
    from utils.inference.prompts import is_box_prompt

    protocols, skipped = [], []
    for mode in modes:
        for prompt_type in prompt_types:
            if mode in BOX_MODES and not is_box_prompt(prompt_type):
                skipped.append((mode, prompt_type))
            else:
                protocols.append(VolumeProtocol(mode, prompt_type))
    return protocols, skipped


def remembering_decoders(choices: dict, make_decoder) -> dict:
    """{prompt type: decoder} with one ``CacheDecoder`` (``make_decoder(choice)``) per set of weights, each
    keeping its answers (``remember``): prompt types that share a decoder share what it decoded."""
    built: dict[int, object] = {}
    for choice in choices.values():
        if id(choice) not in built:
            built[id(choice)] = make_decoder(choice)
            built[id(choice)].remember()
    return {prompt: built[id(choice)] for prompt, choice in choices.items()}


def run_protocols(protocols: list[VolumeProtocol], decoders: dict, volumes: list, store, args, out: Path,
                  progress: bool = True) -> dict[str, int]:
    """Every protocol on each volume in turn; ``decoders`` ({prompt type: decoder}, from
    :func:`remembering_decoders`) keep their answers while they work on a volume, so a prompt two protocols
    ask for (clicks3d starts with box3d's walk; box3d repeats propagate's until it stops) is decoded once.
    Returns the decoders' counts of prompts decoded and reused, for the timing."""
    from tqdm import tqdm

    distinct = list({id(d): d for d in decoders.values()}.values())
    for vol in tqdm(volumes, desc="volumes", unit="vol", disable=not progress):
        for decoder in distinct:
            decoder.forget()  # answers are kept for one volume at a time
        for protocol in protocols:
            protocol.run(decoders[protocol.prompt_type], vol, store, args, out)
    return {"decoded": sum(d.n_decoded for d in distinct), "reused": sum(d.n_reused for d in distinct)}
