"""Whole organs from one prompt: slice-by-slice propagation through a volume, independent of SAM.

One prompt (from the ground truth, made by ``utils.inference.prompts.make_prompt``) is given on one key slice.
The mask predicted there gives the prompt for the next slice outward, and so on in both directions:

- box prompt types (``bound_box``, ``larger_box``): the same kind of box around the previous slice's
  predicted mask (``utils.inference.prompts.bound_box`` / ``larger_box``; all pieces of the mask, one target);
- point prompt types (``one_central_point``, ``one_random_point``, ``three_random_points``): one
  positive point at the previous mask's distance-transform centre (``utils.inference.prompts.central_point``).
  Deterministic and always inside the mask; the same for all point types, so propagation needs no RNG.

No ground truth is used after the first prompt: the functions here never see a label map.

Box margin (``box_margin_px``, (x, y) pixels, default (0, 0) = the rule above): the box handed on is grown
by this much on each side, clipped to the slice. Why: a model's mask sits inside its box, so the tight
box of slice z's mask is smaller than the organ on z +- 1, whose mask is smaller again; without a margin
the masks shrink slice by slice until a direction dies before the organ ends (the issue on whole organs
in 3-D measured a median area ratio of 0.72 per step where the organ's is 0.94). Point prompts ignore it.

Stop rule, per direction: a slice's prediction (``logits > mask_threshold``) is **accepted** when it has
at least ``min_area_px`` pixels; its logits are kept and it prompts the next slice. The first slice
whose prediction is smaller (or empty) is **rejected**: its logits are discarded (a speck at an
organ's end is more likely noise than organ) and that direction stops there. A direction also stops
at the volume's first or last slice. The key slice is the exception: its logits are always kept
(they are the model's answer to the person's prompt), but if its mask is below ``min_area_px``
nothing is propagated from it.

Extra stop rules (each off in :class:`StopRules`; the scripts set their own defaults, docs/3d.md; the issue
on whole organs in 3-D asks for them as named options, measured on training volumes): ``min_iou_previous``
rejects a slice whose mask overlaps the previous accepted mask of its direction with IoU below it (drift
onto a neighbour, or past the organ's end, shows up as a sudden loss of overlap); ``max_area_factor``
rejects a slice whose area is more than that factor above or below the previous accepted mask's;
``min_predicted_iou`` rejects a slice whose mask the model itself scores below it (SAM's IoU head:
``decode_batch`` then returns (logits, predicted IoU) per request). A rejected slice stops its direction,
like the minimum area.

Mask input (``feed_logits``, off by default): every propagated slice is decoded with the low-res logits of
the slice that prompted it (its direction's last accepted one) as SAM's mask input, as SAM's own iterative
protocol feeds a previous answer back; the key slice has none.

Range (``z_limits``, one (first, last) per seed, inclusive; the 3-D box protocol): a direction never
decodes outside it and stops at its end (``STOP_RANGE_END``). With ``hold_through_rejects`` (the 3-D box
protocol too) a rejected slice inside the range does not stop its direction: the slice keeps no mask and the
next slice is prompted again with the last accepted prompt (LiteMedSAM's 3-D inference re-uses a box when
a slice comes back empty), so a direction always walks to the range's end.

Slices are indexed along the volume's Z axis (the slice store's display stack (Z, H, W), inferior to
superior); masks and logits are (H, W) = (rows, columns); points (x, y) = (column, row); boxes XYXY.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from utils.inference.prompts import (
    PROMPT_TYPES,
    Prompt,
    bound_box,
    central_point,
    grow_box,
    larger_box,
)

# decode(z, prompt) -> float logits (H, W) of slice z; > mask_threshold is the organ.
Decode = Callable[[int, Prompt], np.ndarray]
# decode_batch([(z, prompt), ...]) -> [logits (H, W), ...] in the same order (one request per organ front);
# or [(logits, predicted IoU), ...] (needed by StopRules.min_predicted_iou).
DecodeBatch = Callable[[Sequence[tuple[int, Prompt]]], Sequence[np.ndarray]]

DIRECTIONS = {"decreasing": -1, "increasing": +1}  # of the slice index z (display/RAS: towards inferior / superior)
# Stop reasons, per direction.
STOP_VOLUME_END = "volume_end"  # the direction reached slice 0 or Z - 1
STOP_EMPTY = "empty"  # the prediction on the next slice was empty
STOP_BELOW_MIN_AREA = "below_min_area"  # it had 1 .. min_area_px - 1 pixels
STOP_LOW_OVERLAP = "low_overlap"  # its IoU with the previous accepted mask was below min_iou_previous
STOP_AREA_JUMP = "area_jump"  # its area was more than max_area_factor above or below the previous mask's
STOP_LOW_PREDICTED_IOU = "low_predicted_iou"  # the model's own IoU estimate for it was below min_predicted_iou
STOP_RANGE_END = "range_end"  # the direction reached the end of its z_limits (the 3-D box's first / last slice)


@dataclass(frozen=True)
class StopRules:
    """When a slice's prediction is rejected (module docstring). 0 switches a ratio rule off.

    min_area_px: the smallest accepted mask in pixels (>= 1; 1 = reject only an empty mask).
    min_iou_previous: reject a mask whose IoU with the previous accepted mask of its direction is below this.
    max_area_factor: reject a mask whose area is > factor x or < 1 / factor x the previous accepted mask's (> 1).
    min_predicted_iou: reject a propagated mask whose predicted IoU (the model's IoU head) is below this.
    hold_through_rejects: a rejected slice does not stop its direction (for a bounded range, ``z_limits``).
    """

    min_area_px: int = 1
    min_iou_previous: float = 0.0
    max_area_factor: float = 0.0
    min_predicted_iou: float = 0.0
    hold_through_rejects: bool = False

    def __post_init__(self):
        if int(self.min_area_px) != self.min_area_px or self.min_area_px < 1:
            raise ValueError(f"min_area_px must be an integer >= 1, got {self.min_area_px}")
        if not 0.0 <= self.min_iou_previous <= 1.0:
            raise ValueError(f"min_iou_previous must be in [0, 1] (0 = off), got {self.min_iou_previous}")
        if not 0.0 <= self.min_predicted_iou <= 1.0:
            raise ValueError(f"min_predicted_iou must be in [0, 1] (0 = off), got {self.min_predicted_iou}")
        if self.max_area_factor != 0.0 and self.max_area_factor <= 1.0:
            raise ValueError(f"max_area_factor must be > 1 (0 = off), got {self.max_area_factor}")

    def judge(self, mask: np.ndarray, previous: np.ndarray | None, predicted_iou: float | None = None) -> str | None:
        """None when bool (H, W) ``mask`` is accepted after ``previous`` (the direction's last accepted mask,
        None on the key slice: only the area rule applies there), else the STOP_* reason. ``predicted_iou``:
        the model's IoU estimate for ``mask`` (required when ``min_predicted_iou`` is on)."""
        area = int(mask.sum())
        if area == 0:
            return STOP_EMPTY
        if area < self.min_area_px:
            return STOP_BELOW_MIN_AREA
        if previous is None:
            return None
        if self.min_iou_previous > 0:
            union = int((mask | previous).sum())
            if int((mask & previous).sum()) < self.min_iou_previous * union:
                return STOP_LOW_OVERLAP
        if self.max_area_factor > 0:
            before = int(previous.sum())
            if area > self.max_area_factor * before or area * self.max_area_factor < before:
                return STOP_AREA_JUMP
        if self.min_predicted_iou > 0:
            if predicted_iou is None:
                raise ValueError("min_predicted_iou needs the model's predicted IoU: decode_batch must return "
                                 "(logits, predicted IoU) per request")
            if predicted_iou < self.min_predicted_iou:
                return STOP_LOW_PREDICTED_IOU
        return None


@dataclass
class Propagation:
    """One organ propagated through one volume.

    logits: z -> float32 (H, W) logits of every accepted slice (and of the key slice, always).
    prompts: z -> the prompt each decoded slice (accepted or rejected) was decoded with last (the 3-D click
        protocol re-decodes with it).
    z_range: (first, last) z of ``logits``, inclusive.
    stops: direction ("decreasing" / "increasing") -> why it stopped (``STOP_*``).
    stopped_at: direction -> the rejected slice's z, or None when the volume or the range ended. When the key
        slice itself is below the minimum, both are ``key_z`` (nothing was propagated).
    rejected: z -> STOP_* reason of every rejected slice (with ``hold_through_rejects``, those inside the range).
    n_decoded: decode calls made for this organ (accepted + rejected slices).
    """

    n_slices: int
    key_z: int
    logits: dict[int, np.ndarray] = field(default_factory=dict)
    prompts: dict[int, Prompt] = field(default_factory=dict)
    stops: dict[str, str] = field(default_factory=dict)
    stopped_at: dict[str, int | None] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    n_decoded: int = 0

    @property
    def z_range(self) -> tuple[int, int]:
        return min(self.logits), max(self.logits)

    def stack(self, fill: float = -np.inf) -> np.ndarray:
        """float32 (Z, H, W) logits; slices without logits (not visited or rejected) hold ``fill``.

        The default -inf never wins in ``utils.data.nifti.merge_organ_logits`` and is background
        under any threshold.
        """
        shape = next(iter(self.logits.values())).shape
        out = np.full((self.n_slices, *shape), fill, np.float32)
        for z, logits in self.logits.items():
            out[z] = logits
        return out


def next_prompt(mask: np.ndarray, prompt_type: str, box_margin_px: tuple[float, float] = (0.0, 0.0)) -> Prompt:
    """The prompt a predicted bool (H, W) ``mask`` (non-empty) gives to the neighbouring slice.

    bound_box -> tight XYXY box; larger_box -> the larger box; either grown by ``box_margin_px`` (x, y) on
    each side (:func:`utils.inference.prompts.grow_box`); point types -> one positive point at the distance-transform centre, points
    float32 (1, 2) (x, y), labels int64 (1,).
    """
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"unknown prompt type {prompt_type!r}; choose from {', '.join(PROMPT_TYPES)}")
    if prompt_type in ("bound_box", "larger_box"):
        box = bound_box(mask) if prompt_type == "bound_box" else larger_box(mask)
        return Prompt(box=grow_box(box, box_margin_px, mask.shape) if any(box_margin_px) else box)
    return Prompt(points=central_point(mask), labels=np.ones(1, dtype=np.int64))


def key_slice(label_volume_display: np.ndarray, organ: int) -> int:
    """The key slice of ``organ``: the z with the largest organ area.

    label_volume_display: integer labels (Z, H, W) (the display stack; any (Z, ...) stack works).
    Ties go to the slice nearest the middle of the organ's z extent, then to the lower z: on a flat
    run of equal areas, propagation then has the least distance to cover each way.
    Raises ValueError if the organ is on no slice.
    """
    labels = np.asarray(label_volume_display)
    if labels.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) label stack, got shape {labels.shape}")
    areas = (labels == organ).reshape(labels.shape[0], -1).sum(axis=1)
    present = np.flatnonzero(areas)
    if present.size == 0:
        raise ValueError(f"organ {organ} is on no slice of this volume: there is no key slice")
    middle = (present[0] + present[-1]) / 2.0
    best = np.flatnonzero(areas == areas.max())
    return int(best[np.argmin(np.abs(best - middle))])  # argmin takes the first (lower z) of equal distances


@dataclass
class _Front:
    item: int
    direction: str
    z: int
    prompt: Prompt
    previous: np.ndarray  # the direction's last accepted mask, bool (H, W)
    low_res: object = None  # that mask's low-res logits (the mask input with ``feed_logits``)


def _as_logits(array: np.ndarray, shape: tuple[int, ...] | None, z: int) -> np.ndarray:
    logits = np.array(array, dtype=np.float32)  # a copy: decoders may reuse their output buffers
    if logits.ndim != 2:
        raise ValueError(f"decode returned shape {logits.shape} for slice {z}; expected (H, W) logits")
    if shape is not None and logits.shape != shape:
        raise ValueError(f"decode returned shape {logits.shape} for slice {z}, {shape} before; one volume, one shape")
    return logits


def _check(n_slices: int, seeds: Sequence[tuple[int, Prompt]], prompt_type: str, box_margin_px: tuple[float, float],
           z_limits: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """Checks the arguments; returns each seed's (first, last) z, inclusive (the whole volume without limits)."""
    if len(box_margin_px) != 2 or min(box_margin_px) < 0:
        raise ValueError(f"box_margin_px must be (x, y) pixels >= 0, got {box_margin_px}")
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"unknown prompt type {prompt_type!r}; choose from {', '.join(PROMPT_TYPES)}")
    if z_limits is not None and len(z_limits) != len(seeds):
        raise ValueError(f"z_limits has {len(z_limits)} ranges for {len(seeds)} seeds; give one per seed")
    limits = []
    for i, (key_z, _) in enumerate(seeds):
        if not 0 <= key_z < n_slices:
            raise ValueError(f"key slice {key_z} is outside the volume's slices 0..{n_slices - 1}")
        lo, hi = (0, n_slices - 1) if z_limits is None else (int(z_limits[i][0]), int(z_limits[i][1]))
        if not 0 <= lo <= key_z <= hi < n_slices:
            raise ValueError(f"z range {lo}..{hi} must hold key slice {key_z} and lie inside 0..{n_slices - 1}")
        limits.append((lo, hi))
    return limits


class _Rounds:
    """Calls ``decode_batch`` for one round of requests and checks its answers (one (H, W) shape per volume),
    judges each answer by the stop rules and moves the fronts on."""

    def __init__(self, decode_batch: DecodeBatch, rules: StopRules, mask_threshold: float, prompt_type: str,
                 box_margin_px: tuple[float, float], limits: list[tuple[int, int]], ranged: bool,
                 results: list[Propagation], feed_logits: bool = False):
        self.decode_batch, self.rules, self.mask_threshold = decode_batch, rules, mask_threshold
        self.feed_logits = feed_logits
        self.prompt_type, self.box_margin_px = prompt_type, tuple(float(v) for v in box_margin_px)
        self.limits, self.ranged, self.results = limits, ranged, results
        self.shape: tuple[int, ...] | None = None

    def decode(self, requests: list[tuple[int, Prompt, object]]) -> list[tuple[np.ndarray, float | None, object]]:
        """(logits, predicted IoU or None, low-res logits or None) per (z, prompt, mask input) request:
        decode_batch is asked (z, prompt), or (z, prompt, mask input) with ``feed_logits``, and may answer
        logits, (logits, IoU) or (logits, IoU, low-res logits); with ``feed_logits`` it must give the last."""
        asked = requests if self.feed_logits else [(z, prompt) for z, prompt, _ in requests]
        answers = list(self.decode_batch(asked))
        if len(answers) != len(requests):
            raise ValueError(f"decode_batch returned {len(answers)} logits for {len(requests)} requests")
        out = []
        for (z, _, _), answer in zip(requests, answers):
            logits, iou, *low = answer if isinstance(answer, tuple) else (answer, None)
            low_res = low[0] if low else None
            if self.feed_logits and low_res is None:
                raise ValueError("feed_logits needs decode_batch to answer (logits, IoU, low-res logits)")
            out.append((_as_logits(logits, self.shape, z), None if iou is None else float(iou), low_res))
            self.shape = out[-1][0].shape
        return out

    def advance(self, item: int, direction: str, z: int, prompt: Prompt, previous: np.ndarray,
                low_res: object = None) -> list[_Front]:
        """The front of ``item`` moving on from slice z (done), or [] with the reason recorded at an end."""
        result, nxt = self.results[item], z + DIRECTIONS[direction]
        lo, hi = self.limits[item]
        if not lo <= nxt <= hi:
            ended_volume = not 0 <= nxt < result.n_slices
            result.stops[direction] = STOP_VOLUME_END if ended_volume or not self.ranged else STOP_RANGE_END
            result.stopped_at[direction] = None
            return []
        return [_Front(item, direction, nxt, prompt, previous, low_res)]


def _key_round(rounds: _Rounds, seeds: Sequence[tuple[int, Prompt]]) -> list[_Front]:
    """Round 0: decode every key slice, keep its logits, and open a front each way that may go on."""
    fronts: list[_Front] = []
    for i, (logits, _, low_res) in enumerate(rounds.decode([(int(z), prompt, None) for z, prompt in seeds])):
        result = rounds.results[i]
        result.logits[result.key_z], result.prompts[result.key_z] = logits, seeds[i][1]
        result.n_decoded += 1
        mask = logits > rounds.mask_threshold
        reason = rounds.rules.judge(mask, None)
        for direction in DIRECTIONS:
            if reason is not None:
                result.stops[direction], result.stopped_at[direction] = reason, result.key_z
            else:
                prompt = next_prompt(mask, rounds.prompt_type, rounds.box_margin_px)
                fronts += rounds.advance(i, direction, result.key_z, prompt, mask, low_res)
        if reason is not None:
            result.rejected[result.key_z] = reason
    return fronts


def _next_round(rounds: _Rounds, fronts: list[_Front]) -> list[_Front]:
    """Round k > 0: decode every front's slice; accepted slices move their front one slice on (so do rejected
    ones with ``hold_through_rejects``, prompted again as before)."""
    next_fronts = []
    for front, (logits, predicted_iou, low_res) in zip(fronts, rounds.decode([(f.z, f.prompt, f.low_res)
                                                                             for f in fronts])):
        result = rounds.results[front.item]
        result.n_decoded += 1
        result.prompts[front.z] = front.prompt
        mask = logits > rounds.mask_threshold
        reason = rounds.rules.judge(mask, front.previous, predicted_iou)
        if reason is None:
            result.logits[front.z] = logits
            prompt, previous = next_prompt(mask, rounds.prompt_type, rounds.box_margin_px), mask
        else:
            result.rejected[front.z] = reason
            if not rounds.rules.hold_through_rejects:
                result.stops[front.direction], result.stopped_at[front.direction] = reason, front.z
                continue
            prompt, previous, low_res = front.prompt, front.previous, front.low_res
        next_fronts += rounds.advance(front.item, front.direction, front.z, prompt, previous, low_res)
    return next_fronts


def propagate_batch(n_slices: int, seeds: Sequence[tuple[int, Prompt]], decode_batch: DecodeBatch,
                    prompt_type: str, min_area_px: int = 1, mask_threshold: float = 0.0,
                    box_margin_px: tuple[float, float] = (0.0, 0.0), rules: StopRules | None = None,
                    z_limits: Sequence[tuple[int, int]] | None = None, feed_logits: bool = False) -> list[Propagation]:
    """Propagate several organs (or prompts) through one volume at once; see the module docstring.

    n_slices: Z, the number of slices of the volume.
    seeds: one (key_z, first prompt) per organ; the prompt is in (x, y) pixels of slice key_z.
    decode_batch: called once per round with every active request [(z, prompt), ...]: round 0 has the
        key slices, round k the slices k away from them (at most 2 per seed, one per direction). It
        returns logits (H, W) per request, in order. Requests of one round are independent, so the
        caller may regroup them (e.g. by z, to load each slice's embedding once).
    prompt_type: one of ``PROMPT_TYPES``; decides how a mask prompts the next slice (``next_prompt``).
    min_area_px: the smallest accepted mask in pixels (>= 1; 1 = stop only at an empty mask); used when
        ``rules`` is None, else ``rules.min_area_px`` is.
    mask_threshold: logits above it are the organ (SAM's 0.0).
    box_margin_px: (x, y) pixels each propagated box grows by on each side (box prompt types; module docstring).
    rules: the stop rules (:class:`StopRules`); None = the minimum area alone.
    z_limits: optional (first, last) z per seed, inclusive, holding its key slice: nothing outside is decoded.
    feed_logits: give every propagated slice the previous accepted slice's low-res logits as SAM's mask input:
        requests become (z, prompt, mask input or None), answers (logits, IoU or None, low-res logits).
    Returns one Propagation per seed, in order.
    """
    rules = rules if rules is not None else StopRules(min_area_px=min_area_px)
    limits = _check(n_slices, seeds, prompt_type, box_margin_px, z_limits)
    results = [Propagation(n_slices=n_slices, key_z=int(z)) for z, _ in seeds]
    if not seeds:
        return results
    rounds = _Rounds(decode_batch, rules, mask_threshold, prompt_type, box_margin_px, limits, z_limits is not None,
                     results, feed_logits)
    fronts = _key_round(rounds, seeds)
    while fronts:
        fronts = _next_round(rounds, fronts)
    return results


def propagate(n_slices: int, key_z: int, prompt: Prompt, decode: Decode, prompt_type: str,
              min_area_px: int = 1, mask_threshold: float = 0.0,
              box_margin_px: tuple[float, float] = (0.0, 0.0), rules: StopRules | None = None,
              z_limits: tuple[int, int] | None = None) -> Propagation:
    """Propagate one organ from ``prompt`` on slice ``key_z`` outward through ``n_slices`` slices.

    decode(z, prompt) -> float logits (H, W) of slice z (called once per visited slice, key slice
    first, then alternating outward). Other arguments and the stop rules as in ``propagate_batch``.
    """
    return propagate_batch(n_slices, [(key_z, prompt)], lambda requests: [decode(z, p) for z, p in requests],
                           prompt_type, min_area_px=min_area_px, mask_threshold=mask_threshold,
                           box_margin_px=box_margin_px, rules=rules,
                           z_limits=None if z_limits is None else [z_limits])[0]
