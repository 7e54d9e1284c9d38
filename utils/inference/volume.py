"""The 3-D protocols: a volume's label map from 2-D decoding of its stored slices.

- :func:`segment_per_slice` (the study's protocol, in 3-D): a ground-truth prompt on every slice where
  an organ is; the slices' masks are stacked into a volume.
- :func:`segment_propagate`: one ground-truth prompt per organ on its key slice (largest organ area),
  then carried outward slice by slice (:func:`utils.inference.propagation.propagate_batch`); no ground
  truth after the first prompt.

Both decode through ``decode_rows(requests) -> [logits]``: (store row, prompt) requests -> float32 (H, W)
slice logits in order (``utils.inference.decoder.CacheDecoder.predict_rows``). Where two organs' masks
overlap the higher logit wins (:func:`utils.data.nifti.merge_organ_logits`). Label maps are uint8 (Z, H, W)
display stacks (the store's orientation), labels 1..13 in BTCV order.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from utils.core.organs import organ_name
from utils.data.nifti import merge_organ_logits
from utils.data.slice_store import SliceStore
from utils.data.volumes import VolumeSlices
from utils.inference.batches import prompt_for
from utils.inference.prompts import Prompt
from utils.inference.propagation import key_slice, propagate_batch

DecodeRows = Callable[[Sequence[tuple[int, Prompt]]], Sequence[np.ndarray]]


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


def segment_propagate(vol: VolumeSlices, prompt_type: str, decode_rows: DecodeRows, seed: int,
                      min_area_mm2: float, store: SliceStore, box_margin_mm: float = 0.0) -> tuple[np.ndarray, dict]:
    """One ground-truth prompt per organ on its key slice, propagated through the volume's stored slices;
    a direction stops at a mask under ``min_area_mm2`` (converted with the slices' spacing, at least 1 px);
    each propagated box grows by ``box_margin_mm`` on each side (in mm, so it means the same at any spacing;
    0 = the tight box of the previous mask).

    Returns (label stack, {"min_area_px", "box_margin_px", "organs": {organ name: {"key_z", "z_range", "stops",
    "organ_slices", "reached_slices"}}}), z in the volume's display stack; ``organ_slices`` = the slices the
    ground-truth organ is on, ``reached_slices`` = those of them the propagation kept a mask for.
    """
    first, last = vol.z_first, vol.z_last
    gt = vol.gt_display[first : last + 1]
    organs = [int(o) for o in np.unique(gt) if o > 0]
    sy, sx = vol.pixel_spacing(store)
    min_area_px = max(1, math.ceil(min_area_mm2 / (sy * sx)))
    box_margin_px = (box_margin_mm / sx, box_margin_mm / sy)
    seeds = []
    for organ in organs:
        z = key_slice(gt, organ)
        seeds.append((z, prompt_for(gt[z] == organ, prompt_type, seed, vol.rows[first + z], organ)))
    results = propagate_batch(last - first + 1, seeds,
                              lambda requests: decode_rows([(vol.rows[first + z], p) for z, p in requests]),
                              prompt_type, min_area_px=min_area_px, box_margin_px=box_margin_px)
    logits: dict[int, dict] = {}
    trace = {}
    for organ, result in zip(organs, results):
        for z, answer in result.logits.items():
            logits.setdefault(first + z, {})[organ] = answer
        lo, hi = result.z_range
        on = set(np.flatnonzero((gt == organ).any(axis=(1, 2))).tolist())
        trace[organ_name(organ)] = {"key_z": first + result.key_z, "z_range": [first + lo, first + hi],
                                    "stops": result.stops, "organ_slices": len(on),
                                    "reached_slices": len(on & set(result.logits))}
    return merge_slices(vol, logits), {"min_area_px": min_area_px,
                                       "box_margin_px": [round(v, 3) for v in box_margin_px], "organs": trace}
