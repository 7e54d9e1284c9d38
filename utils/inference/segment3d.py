"""The 3-D protocols: a volume's label map from 2-D decoding of its stored slices.

- :func:`segment_per_slice` (the study's protocol, in 3-D): a ground-truth prompt on every slice where
  an organ is; the slices' masks are stacked into a volume.
- :func:`segment_propagate`: one ground-truth prompt per organ on its key slice (largest organ area),
  then carried outward slice by slice (:func:`utils.inference.propagation.propagate_batch`); no ground
  truth after the first prompt. With ``bounded=True`` it is the 3-D box protocol (MedSAM / the CVPR 2024
  "SAM on laptop" challenge): the key slice's prompt plus the organ's first and last ground-truth slice;
  nothing is predicted outside that range, and a rejected slice inside it does not stop the walk.

:func:`propagate_organs` is the label-free core both use (and ``segment_volume.py``, on a CT without labels):
seeds and ranges in, per-organ logits out, with :class:`utils.inference.propagation.PropagationSettings`' rules
(in mm) and the optional largest 3-D connected component.

Both decode through ``decode_rows([Request]) -> [Answer]``: requests on store rows, answered in order
(``utils.inference.decoder.CacheDecoder.propagation_decoder``). Where two organs' masks
overlap the higher logit wins (:func:`utils.data.nifti.merge_organ_logits`). Label maps are uint8 (Z, H, W)
display stacks (the store's orientation), labels 1..13 in BTCV order.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from utils.core.organs import organ_name
from utils.data.nifti import merge_organ_logits
from utils.data.slice_store import SliceStore
from utils.data.volumes import VolumeSlices
from utils.inference.batches import prompt_for
from utils.inference.prompts import Prompt
from utils.inference.propagation import (
    Propagation,
    PropagationSettings,
    Request,
    key_slice,
    propagate_batch,
)

DecodeRows = Callable[[Sequence[Request]], Sequence]  # [Request on store rows] -> [Answer]


def merge_organs(shape: tuple[int, int, int], logits: dict[int, dict[int, np.ndarray]], z_offset: int = 0
                 ) -> np.ndarray:
    """{organ: {z: (H, W) logits}} -> uint8 label stack of ``shape`` (Z, H, W), slice z + ``z_offset``; slices no
    organ visited are background; where organs overlap the higher logit wins."""
    by_slice: dict[int, dict] = {}
    for organ, per_z in logits.items():
        for z, answer in per_z.items():
            by_slice.setdefault(z + z_offset, {})[organ] = answer
    label = np.zeros(shape, np.uint8)
    for z, organs in by_slice.items():
        label[z] = merge_organ_logits(organs, shape=shape[1:])
    return label


def merge_slices(vol: VolumeSlices, logits: dict[int, dict[int, np.ndarray]]) -> np.ndarray:
    """{z: {organ: (H, W) logits}} -> uint8 display label stack (Z, H, W); unvisited slices are background."""
    label = np.zeros(vol.gt_display.shape, np.uint8)
    for z, organs in logits.items():
        label[z] = merge_organ_logits(organs, shape=label.shape[1:])
    return label


def segment_per_slice(vol: VolumeSlices, prompt_type: str, decode_rows: DecodeRows, seed: int, store: SliceStore
                      ) -> tuple[np.ndarray, dict]:
    """A ground-truth prompt (seeded as Task 1 draws it) on every slice of every organ present; returns
    (label stack, {})."""
    requests, keys = [], []
    spacing = vol.pixel_spacing(store)
    for z, row in vol.rows.items():
        for organ in (int(o) for o in np.unique(vol.gt_display[z]) if o > 0):
            requests.append((row, prompt_for(vol.gt_display[z] == organ, prompt_type, seed, row, organ,
                                             spacing=spacing)))
            keys.append((z, organ))
    logits: dict[int, dict] = {}
    for (z, organ), answer in zip(keys, decode_rows([Request(*r) for r in requests]) if requests else []):
        logits.setdefault(z, {})[organ] = answer.logits
    return merge_slices(vol, logits), {}


def largest_component_3d(logits: dict[int, np.ndarray], threshold: float = 0.0) -> dict[int, np.ndarray]:
    """{z: (H, W) logits} of one organ with everything outside its largest 26-connected 3-D component set to
    -inf (slices left without any voxel are dropped). Slices not in ``logits`` count as empty: a gap splits
    the organ. Ties: the component with the lowest label (first in z, row, column order)."""
    from scipy import ndimage

    if not logits:
        return {}
    zs = sorted(logits)
    z0 = zs[0]
    stack = np.zeros((zs[-1] - z0 + 1, *logits[z0].shape), bool)
    for z in zs:
        stack[z - z0] = logits[z] > threshold
    components, n = ndimage.label(stack, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return dict(logits)
    keep = components == 1 + int(np.argmax(np.bincount(components.ravel(), minlength=n + 1)[1:]))
    out = {}
    for z in zs:
        if keep[z - z0].any():
            out[z] = np.where(keep[z - z0], logits[z], -np.inf).astype(np.float32)
    return out


def propagate_organs(n_slices: int, seeds: dict[int, tuple[int, Prompt]], decode_batch, prompt_type: str,
                     spacing: tuple[float, float], settings: PropagationSettings,
                     z_limits: dict[int, tuple[int, int]] | None = None) -> dict[int, Propagation]:
    """Every organ of one volume propagated at once: ``seeds`` {organ: (key z, first prompt)}, optional
    ``z_limits`` {organ: (first, last) z} (the 3-D box: a bounded range, rejected slices held through),
    ``decode_batch([Request]) -> [Answer]``, ``spacing`` (row, column) mm of the slices. Returns
    {organ: Propagation}; with ``settings.largest_component`` each one's logits keep its largest component."""
    organs = list(seeds)
    bounded = z_limits is not None
    rules, margin = settings.in_pixels(spacing, bounded)
    results = propagate_batch(n_slices, [seeds[o] for o in organs], decode_batch, prompt_type, box_margin_px=margin,
                              rules=rules, z_limits=[z_limits[o] for o in organs] if bounded else None,
                              carry=settings.carry, hold_prompt=settings.hold_prompt, exclusive=settings.exclusive)
    out = {}
    for organ, result in zip(organs, results):
        if settings.largest_component:
            result.logits = largest_component_3d(result.logits) or {result.key_z: result.logits[result.key_z]}
        out[organ] = result
    return out


def _on_rows(decode_rows: DecodeRows, vol: VolumeSlices, first: int):
    """Propagation's decode_batch over ``vol``'s stored slices: its requests' z (from ``first``) as store rows."""
    return lambda requests: decode_rows([r._replace(z=vol.rows[first + r.z]) for r in requests])


def ground_truth_seeds(vol: VolumeSlices, prompt_type: str, seed: int, bounded: bool, store: SliceStore,
                       key_rule: str = "largest"
                       ) -> tuple[int, dict[int, tuple[int, Prompt]], dict[int, tuple[int, int]] | None]:
    """(first stored z, {organ: (key z, prompt)} and, for the 3-D box, {organ: (first, last) organ z}), z
    counted from the first stored slice. The key slice (``key_rule``: :func:`key_slice`) gets its prompt drawn as
    Task 1 draws it."""
    first, last = vol.z_first, vol.z_last
    gt = vol.gt_display[first : last + 1]
    seeds, limits = {}, {}
    for organ in (int(o) for o in np.unique(gt) if o > 0):
        z = key_slice(gt, organ, key_rule)
        seeds[organ] = (z, prompt_for(gt[z] == organ, prompt_type, seed, vol.rows[first + z], organ,
                                      spacing=vol.pixel_spacing(store)))
        on = np.flatnonzero((gt == organ).any(axis=(1, 2)))
        limits[organ] = (int(on[0]), int(on[-1]))
    return first, seeds, (limits if bounded else None)


def segment_propagate(vol: VolumeSlices, prompt_type: str, decode_rows: DecodeRows, seed: int, store: SliceStore,
                      settings: PropagationSettings, bounded: bool = False) -> tuple[np.ndarray, dict]:
    """One ground-truth prompt per organ on its key slice, propagated through the volume's stored slices by
    ``settings`` (:class:`PropagationSettings`); ``bounded``: the 3-D box protocol (the organ's first and last
    ground-truth slice bound it).

    Returns (label stack, {"min_area_px", "box_margin_px", "organs": {organ name: {"key_z", "z_range", "stops",
    "organ_slices", "reached_slices"[, "rejected_slices"]}}}), z in the volume's display stack;
    ``organ_slices`` = the slices the ground-truth organ is on, ``reached_slices`` = those of them the
    propagation kept a mask for.
    """
    first, seeds, limits = ground_truth_seeds(vol, prompt_type, seed, bounded, store, settings.key_slice)
    gt = vol.gt_display[first : vol.z_last + 1]
    spacing = vol.pixel_spacing(store)
    results = propagate_organs(vol.z_last - first + 1, seeds, _on_rows(decode_rows, vol, first), prompt_type, spacing,
                               settings, limits)
    logits: dict[int, dict] = {}
    trace = {}
    for organ, result in results.items():
        for z, answer in result.logits.items():
            logits.setdefault(first + z, {})[organ] = answer
        lo, hi = result.z_range
        on = set(np.flatnonzero((gt == organ).any(axis=(1, 2))).tolist())
        trace[organ_name(organ)] = {"key_z": first + result.key_z, "z_range": [first + lo, first + hi],
                                    "stops": result.stops, "organ_slices": len(on),
                                    "reached_slices": len(on & set(result.logits))}
        if result.rejected:
            trace[organ_name(organ)]["rejected_slices"] = len(result.rejected)
    rules, margin = settings.in_pixels(spacing, bounded)
    return merge_slices(vol, logits), {"min_area_px": rules.min_area_px,
                                       "box_margin_px": [round(v, 3) for v in margin],
                                       "organs": trace}


def segment_clicks3d(vol: VolumeSlices, prompt_type: str, decode_rows: DecodeRows, decode_with_masks, seed: int,
                     store: SliceStore, settings: PropagationSettings, n_clicks: int,
                     repropagation: str = "downstream", mask_input: bool = True,
                     refinement=None) -> tuple[list[np.ndarray], dict]:
    """The 3-D click protocol (:mod:`utils.inference.clicks3d`): the 3-D box result, then ``n_clicks`` rounds
    of one click per organ. ``decode_with_masks([(store row, prompt, mask input or None)]) -> [(logits,
    low-res)]`` decodes the clicked slices (``CacheDecoder.predict_requests``); ``repropagation``: how far a
    click's change travels and ``mask_input`` whether a clicked slice's previous low-res logits are passed
    back, ``refinement`` what a clicked slice's new mask replaces (:class:`utils.inference.clicks3d.ClickSession`).

    Returns ([label stack after 0, 1, .., n_clicks clicks], {"organs": {organ name: {"clicks": [[z, x, y,
    label] or None per round]}}, "decoded_prompts": clicks and re-propagation decodes}).
    """
    from utils.inference.clicks3d import ClickSession
    from utils.inference.clicks import Refinement

    first, seeds, limits = ground_truth_seeds(vol, prompt_type, seed, True, store, settings.key_slice)
    n = vol.z_last - first + 1
    gt = vol.gt_display[first : vol.z_last + 1]
    spacing = vol.pixel_spacing(store)
    start = propagate_organs(n, seeds, _on_rows(decode_rows, vol, first), prompt_type, spacing, settings, limits)
    rules, margin = settings.in_pixels(spacing, bounded=True)
    session = ClickSession(n, start, limits,
                           lambda requests: decode_with_masks([(vol.rows[first + z], p, m) for z, p, m in requests]),
                           # A click's re-propagation judges without the predicted-IoU rule: the clicked slice is the
                           # person's correction, and its downstream walk stays inside box3d's range (said in --help).
                           prompt_type, replace(rules, min_predicted_iou=0.0), margin, repropagation, mask_input,
                           settings.carry, refinement or Refinement())

    def label_now() -> np.ndarray:
        return merge_organs(vol.gt_display.shape, session.logits(), z_offset=first)

    truth = {organ: gt == organ for organ in seeds}
    labels, clicks = [label_now()], {organ_name(o): [] for o in seeds}
    for _ in range(n_clicks):
        for organ, click in session.click_round(truth, gt.shape, vol.voxel_mm(store)).items():
            clicks[organ_name(organ)].append(None if click is None else
                                             [first + click.z, click.x, click.y, click.label])
        labels.append(label_now())
    return labels, {"organs": {name: {"clicks": c} for name, c in clicks.items()},
                    "decoded_prompts": session.n_decoded}


def segment_prompts(n_slices: int, spacing: tuple[float, float], prompts, decode_batch, settings: PropagationSettings
                    ) -> tuple[dict, dict]:
    """A person's prompts (:class:`utils.inference.prompt_file.OrganPrompt`, no ground truth) propagated through a
    volume of ``n_slices`` display slices: one :func:`propagate_organs` call per rule (prompt type, bounded or
    not). Returns ({organ: {z: logits}}, {organ name: what was decoded, predicted z range, slices, stops})."""
    logits, traces = {}, {}
    groups: dict[tuple, list] = {}
    for p in prompts:
        groups.setdefault((p.prompt_type, p.z_limits is not None), []).append(p)
    for (prompt_type, bounded), members in groups.items():
        results = propagate_organs(n_slices, {p.organ: (p.key_z, p.prompt) for p in members}, decode_batch,
                                   prompt_type, spacing, settings,
                                   {p.organ: p.z_limits for p in members} if bounded else None)
        for p in members:
            result = results[p.organ]
            logits[p.organ] = result.logits
            lo, hi = result.z_range
            traces[organ_name(p.organ)] = dict(p.record(), predicted_z_range=[lo, hi], slices=len(result.logits),
                                               stops=result.stops, rejected_slices=len(result.rejected))
    return logits, traces
