"""The 3-D protocols: a volume's label map from 2-D decoding of its stored slices.

- :func:`segment_per_slice` (the study's protocol, in 3-D): a ground-truth prompt on every slice where
  an organ is; the slices' masks are stacked into a volume.
- :func:`segment_propagate`: one ground-truth prompt per organ on its key slice (largest organ area),
  then carried outward slice by slice (:func:`utils.inference.propagation.propagate_batch`); no ground
  truth after the first prompt. With ``bounded=True`` it is the 3-D box protocol (MedSAM / the CVPR 2024
  "SAM on laptop" challenge): the key slice's prompt plus the organ's first and last ground-truth slice;
  nothing is predicted outside that range, and a rejected slice inside it does not stop the walk.

:func:`propagate_organs` is the label-free core both use (and ``segment_volume.py``, on a CT without labels):
seeds and ranges in, per-organ logits out, with :class:`PropagationSettings`' stop rules in mm and the
optional largest 3-D connected component.

Both decode through ``decode_rows(requests) -> [logits]``: (store row, prompt) requests -> float32 (H, W)
slice logits in order (``utils.inference.decoder.CacheDecoder.predict_rows``). Where two organs' masks
overlap the higher logit wins (:func:`utils.data.nifti.merge_organ_logits`). Label maps are uint8 (Z, H, W)
display stacks (the store's orientation), labels 1..13 in BTCV order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from utils.core.organs import organ_name
from utils.data.nifti import merge_organ_logits
from utils.data.slice_store import SliceStore
from utils.data.volumes import VolumeSlices
from utils.inference.batches import prompt_for
from utils.inference.prompts import Prompt
from utils.inference.propagation import Propagation, StopRules, key_slice, propagate_batch

DecodeRows = Callable[[Sequence[tuple[int, Prompt]]], Sequence[np.ndarray]]


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


def segment_per_slice(vol: VolumeSlices, prompt_type: str, decode_rows: DecodeRows, seed: int
                      ) -> tuple[np.ndarray, dict]:
    """A ground-truth prompt (seeded as Task 1 draws it) on every slice of every organ present; returns
    (label stack, {})."""
    requests, keys = [], []
    for z, row in vol.rows.items():
        for organ in (int(o) for o in np.unique(vol.gt_display[z]) if o > 0):
            requests.append((row, prompt_for(vol.gt_display[z] == organ, prompt_type, seed, row, organ)))
            keys.append((z, organ))
    logits: dict[int, dict] = {}
    for (z, organ), answer in zip(keys, decode_rows(requests) if requests else []):
        logits.setdefault(z, {})[organ] = answer
    return merge_slices(vol, logits), {}


@dataclass(frozen=True)
class PropagationSettings:
    """The propagation rules, in units that mean the same at any spacing (segmentation_3d.py's flags).

    min_area_mm2: a mask below this stops its direction (converted with the slice spacing, at least 1 px);
    box_margin_mm: each propagated box grows by this on each side (0 = the previous mask's tight box);
    min_iou_previous / max_area_factor / min_predicted_iou: the overlap, area-jump and predicted-IoU stop rules
    (0 = off; :class:`utils.inference.propagation.StopRules`; the last needs a decode_rows that returns
    (logits, predicted IoU): :attr:`needs_iou`); largest_component: keep each organ's largest
    26-connected 3-D component of the result (MedSAM2 does this after propagating both ways);
    rules_in_range: whether those three rules also judge slices inside a known range (the 3-D box: box3d,
    clicks3d, a prompt with a first and last slice). Off, only the minimum area rejects a slice there: the
    range already says where the organ ends, which is what the rules look for; feed_logits: give each
    propagated slice the previous accepted slice's low-res logits as SAM's mask input (decode_rows is then
    asked (row, prompt, mask input) and answers (logits, IoU, low-res logits): ``CacheDecoder.propagation_decoder``).
    """

    min_area_mm2: float = 25.0
    box_margin_mm: float = 0.0
    min_iou_previous: float = 0.0
    max_area_factor: float = 0.0
    min_predicted_iou: float = 0.0
    largest_component: bool = False
    rules_in_range: bool = False
    feed_logits: bool = False

    @classmethod
    def from_args(cls, args) -> "PropagationSettings":
        """From the flags of the same names (segmentation_3d.py, segment_volume.py)."""
        return cls(min_area_mm2=args.min_area_mm2, box_margin_mm=args.box_margin_mm,
                   min_iou_previous=args.min_iou_previous, max_area_factor=args.max_area_factor,
                   min_predicted_iou=args.min_predicted_iou, largest_component=args.largest_component,
                   rules_in_range=args.rules_in_range, feed_logits=args.propagation_mask_input)

    @property
    def needs_iou(self) -> bool:
        """Whether propagation must be given the model's predicted IoU (``predict_rows(..., with_iou=True)``)."""
        return self.min_predicted_iou > 0

    def rules(self, spacing: tuple[float, float], bounded: bool) -> StopRules:
        """The stop rules for slices of ``spacing`` (row, column) mm; ``bounded``: inside a known range (held
        through rejects; the ratio rules only with ``rules_in_range``)."""
        sy, sx = spacing
        judged = not bounded or self.rules_in_range
        return StopRules(min_area_px=max(1, math.ceil(self.min_area_mm2 / (sy * sx))),
                         min_iou_previous=self.min_iou_previous if judged else 0.0,
                         max_area_factor=self.max_area_factor if judged else 0.0,
                         min_predicted_iou=self.min_predicted_iou if judged else 0.0, hold_through_rejects=bounded)

    def margin_px(self, spacing: tuple[float, float]) -> tuple[float, float]:
        sy, sx = spacing
        return self.box_margin_mm / sx, self.box_margin_mm / sy


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
    ``decode_batch([(z, prompt), ...]) -> [logits]``, ``spacing`` (row, column) mm of the slices. Returns
    {organ: Propagation}; with ``settings.largest_component`` each one's logits keep its largest component."""
    organs = list(seeds)
    bounded = z_limits is not None
    results = propagate_batch(n_slices, [seeds[o] for o in organs], decode_batch, prompt_type,
                              box_margin_px=settings.margin_px(spacing), rules=settings.rules(spacing, bounded),
                              z_limits=[z_limits[o] for o in organs] if bounded else None,
                              feed_logits=settings.feed_logits)
    out = {}
    for organ, result in zip(organs, results):
        if settings.largest_component:
            result.logits = largest_component_3d(result.logits) or {result.key_z: result.logits[result.key_z]}
        out[organ] = result
    return out


def _on_rows(decode_rows: DecodeRows, vol: VolumeSlices, first: int):
    """Propagation's decode_batch over ``vol``'s stored slices: its requests' z (from ``first``) as store rows,
    the rest of each request (prompt, and the mask input with ``feed_logits``) passed on."""
    return lambda requests: decode_rows([(vol.rows[first + r[0]], *r[1:]) for r in requests])


def ground_truth_seeds(vol: VolumeSlices, prompt_type: str, seed: int, bounded: bool
                       ) -> tuple[int, dict[int, tuple[int, Prompt]], dict[int, tuple[int, int]] | None]:
    """(first stored z, {organ: (key z, prompt)} and, for the 3-D box, {organ: (first, last) organ z}), z
    counted from the first stored slice. The key slice's prompt is drawn as Task 1 draws it."""
    first, last = vol.z_first, vol.z_last
    gt = vol.gt_display[first : last + 1]
    seeds, limits = {}, {}
    for organ in (int(o) for o in np.unique(gt) if o > 0):
        z = key_slice(gt, organ)
        seeds[organ] = (z, prompt_for(gt[z] == organ, prompt_type, seed, vol.rows[first + z], organ))
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
    first, seeds, limits = ground_truth_seeds(vol, prompt_type, seed, bounded)
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
    rules = settings.rules(spacing, bounded)
    return merge_slices(vol, logits), {"min_area_px": rules.min_area_px,
                                       "box_margin_px": [round(v, 3) for v in settings.margin_px(spacing)],
                                       "organs": trace}


def segment_clicks3d(vol: VolumeSlices, prompt_type: str, decode_rows: DecodeRows, decode_with_masks, seed: int,
                     store: SliceStore, settings: PropagationSettings, n_clicks: int,
                     repropagation: str = "downstream", mask_input: bool = True) -> tuple[list[np.ndarray], dict]:
    """The 3-D click protocol (:mod:`utils.inference.clicks3d`): the 3-D box result, then ``n_clicks`` rounds
    of one click per organ. ``decode_with_masks([(store row, prompt, mask input or None)]) -> [(logits,
    low-res)]`` decodes the clicked slices (``CacheDecoder.predict_requests``); ``repropagation``: how far a
    click's change travels and ``mask_input`` whether a clicked slice's previous low-res logits are passed
    back (:class:`utils.inference.clicks3d.ClickSession`).

    Returns ([label stack after 0, 1, .., n_clicks clicks], {"organs": {organ name: {"clicks": [[z, x, y,
    label] or None per round]}}, "decoded_prompts": clicks and re-propagation decodes}).
    """
    from utils.inference.clicks3d import ClickSession

    first, seeds, limits = ground_truth_seeds(vol, prompt_type, seed, bounded=True)
    n = vol.z_last - first + 1
    gt = vol.gt_display[first : vol.z_last + 1]
    spacing = vol.pixel_spacing(store)
    start = propagate_organs(n, seeds, _on_rows(decode_rows, vol, first), prompt_type, spacing, settings, limits)
    session = ClickSession(n, start, limits,
                           lambda requests: decode_with_masks([(vol.rows[first + z], p, m) for z, p, m in requests]),
                           # A click's re-propagation judges without the predicted-IoU rule: the clicked slice is the
                           # person's correction, and its downstream walk stays inside box3d's range (said in --help).
                           prompt_type, replace(settings.rules(spacing, bounded=True), min_predicted_iou=0.0),
                           settings.margin_px(spacing), repropagation, mask_input)

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
