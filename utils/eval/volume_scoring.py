"""Scoring the 3-D stage's written label maps: each NIfTI file read back and scored exactly as written
against the source labels (:func:`utils.eval.metrics3d.score_volume`), the slice-mean Dice on the same
volume, and one protocol's summary over volumes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.core.organs import organ_name
from utils.data.volumes import VolumeSlices
from utils.eval.dice import dice_score
from utils.eval.metrics3d import VolumeScores, score_volume, summarise_volumes


def score_written(path: Path, vol: VolumeSlices) -> tuple[VolumeScores, dict[int, dict[int, float]], np.ndarray]:
    """Read the written NIfTI ``path`` back and score exactly it against ``vol``'s source labels; returns
    (VolumeScores, {organ label: {z: slice Dice on each ground-truth slice z, in z order}}, the written map as a
    uint8 display stack (Z, H, W))."""
    import nibabel as nib

    from utils.data.nifti import ras_to_display, source_to_ras

    image = nib.load(path)
    written = np.asarray(image.dataobj)
    scores = score_volume(written, vol.gt_source, spacing=image.header.get_zooms()[:3])
    display = ras_to_display(source_to_ras(written, image.affine))
    slice_dice = {}
    for organ in scores.organs:
        truth = vol.gt_display == organ
        slice_dice[organ] = {int(z): dice_score(display[z] == organ, truth[z])
                             for z in np.flatnonzero(truth.any(axis=(1, 2)))}
    return scores, slice_dice, display


def summarise_3d(scores: dict[str, VolumeScores], slice_dice: dict[str, dict[int, dict[int, float]]], traces: dict,
                 unscored: dict[str, dict[int, int]]) -> dict:
    """One protocol and prompt type over volumes (all keyed by case id): :func:`summarise_volumes` plus the
    slice-mean Dice per organ (pooled over the volumes' ground-truth slices) and overall (mean over organs), each
    organ's slice Dice along z per volume (``slice_profiles``: {case: {organ: [[z, Dice], ...]}}, where along the
    organ the masks go wrong), false-positive voxels of organs a volume does not have, and the propagation traces
    when there are any."""
    summary = summarise_volumes(scores)
    pooled: dict[int, list[float]] = {}
    for per_volume in slice_dice.values():
        for organ, values in per_volume.items():
            pooled.setdefault(organ, []).extend(values.values())
    for organ, values in pooled.items():
        summary["organs"][organ_name(organ)]["slice_dice"] = float(np.mean(values))
    summary["slice_dice"] = float(np.mean([o["slice_dice"] for o in summary["organs"].values()])) if pooled else float("nan")
    summary["slice_profiles"] = {case: {organ_name(o): [[z, round(d, 4)] for z, d in values.items()]
                                        for o, values in per_volume.items()} for case, per_volume in slice_dice.items()}
    summary["false_positive_voxels"] = {case: {organ_name(k): v for k, v in u.items()} for case, u in unscored.items() if u}
    if any(traces.values()):
        summary["propagation"] = traces
        organs = [o for t in traces.values() for o in t.get("organs", {}).values() if "organ_slices" in o]
        if organs:  # organ slices the propagation reached, of those the organs have (all volumes pooled)
            summary["reached_slices"] = sum(o["reached_slices"] for o in organs)
            summary["organ_slices"] = sum(o["organ_slices"] for o in organs)
    return summary


def summarise_clicks(rounds: list[dict]) -> dict:
    """The 3-D click protocol's curves from :func:`summarise_3d` of the label maps after 0, 1, .., N clicks:
    mean-over-organs Dice, NSD and HD95 per round, per organ Dice per round, and the Dice and NSD AUC
    (:func:`utils.eval.auc.dice_auc`, the mean of the N + 1 points; the same rule for NSD)."""
    from utils.eval.auc import dice_auc

    dice = [r["dice"] for r in rounds]
    nsd = [r["nsd"] for r in rounds]
    return {"dice_per_click": dice, "nsd_per_click": nsd, "hd95_mm_per_click": [r["hd95_mm"] for r in rounds],
            "dice_auc": float(dice_auc(dice)), "nsd_auc": float(dice_auc(nsd)),
            "organ_dice_per_click": {name: [r["organs"][name]["dice"] for r in rounds] for name in rounds[0]["organs"]}}


def score_label_file(written: Path, labels: Path, ct, organs=None, reference: np.ndarray | None = None) -> dict:
    """A written label map scored against the label file ``labels`` on ``ct``'s grid (checked by
    :func:`utils.data.ct.load_label_display`), as the 3-D stage scores: {"dice", "hd95_mm", "nsd", "n_missed",
    "organs": {name: {...}}} (segment_volume.py --score-against). ``organs``: the labels to score (the ones the
    person prompted; the means are over those present in the reference); then also "scored_organs" and
    "unprompted": the reference's organs left out, by name, so that an organ nobody asked for is never a miss."""
    import nibabel as nib

    from utils.core.organs import organ_name
    from utils.data.ct import load_label_display
    from utils.data.nifti import display_to_ras, ras_to_source

    if reference is None:  # ``reference``: the display stack load_label_display already read from ``labels``
        reference = load_label_display(labels, ct)
    truth = ras_to_source(display_to_ras(reference), ct.affine)
    image = nib.load(written)
    scores = score_volume(np.asarray(image.dataobj), truth, image.header.get_zooms()[:3], organs)
    summary = summarise_volumes({"volume": scores})
    out = {k: summary[k] for k in ("dice", "hd95_mm", "nsd", "n_missed", "organs")}
    if organs is not None:
        wanted = {int(o) for o in organs}
        present = sorted(int(v) for v in np.unique(truth) if v)
        out["scored_organs"] = [organ_name(v) for v in sorted(wanted)]
        out["unprompted"] = [organ_name(v) for v in present if v not in wanted]
    return out

