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
# decode_batch([(z, prompt), ...]) -> [logits (H, W), ...] in the same order (one request per organ front).
DecodeBatch = Callable[[Sequence[tuple[int, Prompt]]], Sequence[np.ndarray]]

DIRECTIONS = {"decreasing": -1, "increasing": +1}  # of the slice index z (display/RAS: towards inferior / superior)
# Stop reasons, per direction.
STOP_VOLUME_END = "volume_end"  # the direction reached slice 0 or Z - 1
STOP_EMPTY = "empty"  # the prediction on the next slice was empty
STOP_BELOW_MIN_AREA = "below_min_area"  # it had 1 .. min_area_px - 1 pixels


@dataclass
class Propagation:
    """One organ propagated through one volume.

    logits: z -> float32 (H, W) logits of every accepted slice (and of the key slice, always).
    z_range: (first, last) z of ``logits``, inclusive.
    stops: direction ("decreasing" / "increasing") -> why it stopped (``STOP_*``).
    stopped_at: direction -> the rejected slice's z, or None when the volume ended. When the key slice
        itself is below the minimum, both are ``key_z`` (nothing was propagated).
    n_decoded: decode calls made for this organ (accepted + rejected slices).
    """

    n_slices: int
    key_z: int
    logits: dict[int, np.ndarray] = field(default_factory=dict)
    stops: dict[str, str] = field(default_factory=dict)
    stopped_at: dict[str, int | None] = field(default_factory=dict)
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


def _as_logits(array: np.ndarray, shape: tuple[int, ...] | None, z: int) -> np.ndarray:
    logits = np.array(array, dtype=np.float32)  # a copy: decoders may reuse their output buffers
    if logits.ndim != 2:
        raise ValueError(f"decode returned shape {logits.shape} for slice {z}; expected (H, W) logits")
    if shape is not None and logits.shape != shape:
        raise ValueError(f"decode returned shape {logits.shape} for slice {z}, {shape} before; one volume, one shape")
    return logits


def _check(n_slices: int, seeds: Sequence[tuple[int, Prompt]], prompt_type: str, min_area_px: int,
           box_margin_px: tuple[float, float]) -> None:
    if len(box_margin_px) != 2 or min(box_margin_px) < 0:
        raise ValueError(f"box_margin_px must be (x, y) pixels >= 0, got {box_margin_px}")
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    if int(min_area_px) != min_area_px or min_area_px < 1:
        raise ValueError(f"min_area_px must be an integer >= 1, got {min_area_px}")
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"unknown prompt type {prompt_type!r}; choose from {', '.join(PROMPT_TYPES)}")
    for key_z, _ in seeds:
        if not 0 <= key_z < n_slices:
            raise ValueError(f"key slice {key_z} is outside the volume's slices 0..{n_slices - 1}")


class _Rounds:
    """Calls ``decode_batch`` for one round of requests and checks its answers (one (H, W) shape per volume),
    and judges each answer by the stop rule."""

    def __init__(self, decode_batch: DecodeBatch, min_area_px: int, mask_threshold: float, prompt_type: str,
                 box_margin_px: tuple[float, float]):
        self.decode_batch, self.min_area_px, self.mask_threshold = decode_batch, min_area_px, mask_threshold
        self.prompt_type, self.box_margin_px = prompt_type, tuple(float(v) for v in box_margin_px)
        self.shape: tuple[int, ...] | None = None

    def next_prompt(self, mask: np.ndarray) -> Prompt:
        return next_prompt(mask, self.prompt_type, self.box_margin_px)

    def decode(self, requests: list[tuple[int, Prompt]]) -> list[np.ndarray]:
        answers = list(self.decode_batch(requests))
        if len(answers) != len(requests):
            raise ValueError(f"decode_batch returned {len(answers)} logits for {len(requests)} requests")
        out = []
        for (z, _), answer in zip(requests, answers):
            out.append(_as_logits(answer, self.shape, z))
            self.shape = out[-1].shape
        return out

    def judge(self, logits: np.ndarray) -> tuple[np.ndarray, str | None]:
        """(mask, None) when accepted, else (mask, the STOP_* reason)."""
        mask = logits > self.mask_threshold
        area = int(mask.sum())
        if area == 0:
            return mask, STOP_EMPTY
        return mask, (STOP_BELOW_MIN_AREA if area < self.min_area_px else None)


def _key_round(rounds: _Rounds, seeds: Sequence[tuple[int, Prompt]], results: list[Propagation]) -> list[_Front]:
    """Round 0: decode every key slice, keep its logits, and open a front each way that may go on."""
    fronts: list[_Front] = []
    for i, logits in enumerate(rounds.decode([(int(z), prompt) for z, prompt in seeds])):
        result = results[i]
        result.logits[result.key_z] = logits
        result.n_decoded += 1
        mask, reason = rounds.judge(logits)
        for direction, step in DIRECTIONS.items():
            if reason is not None:
                result.stops[direction], result.stopped_at[direction] = reason, result.key_z
            elif not 0 <= result.key_z + step < result.n_slices:
                result.stops[direction], result.stopped_at[direction] = STOP_VOLUME_END, None
            else:
                fronts.append(_Front(i, direction, result.key_z + step, rounds.next_prompt(mask)))
    return fronts


def _next_round(rounds: _Rounds, fronts: list[_Front], results: list[Propagation]) -> list[_Front]:
    """Round k > 0: decode every front's slice; accepted slices move their front one slice on."""
    next_fronts = []
    for front, logits in zip(fronts, rounds.decode([(f.z, f.prompt) for f in fronts])):
        result = results[front.item]
        result.n_decoded += 1
        mask, reason = rounds.judge(logits)
        if reason is not None:
            result.stops[front.direction], result.stopped_at[front.direction] = reason, front.z
            continue
        result.logits[front.z] = logits
        z = front.z + DIRECTIONS[front.direction]
        if not 0 <= z < result.n_slices:
            result.stops[front.direction], result.stopped_at[front.direction] = STOP_VOLUME_END, None
            continue
        next_fronts.append(_Front(front.item, front.direction, z, rounds.next_prompt(mask)))
    return next_fronts


def propagate_batch(n_slices: int, seeds: Sequence[tuple[int, Prompt]], decode_batch: DecodeBatch,
                    prompt_type: str, min_area_px: int = 1, mask_threshold: float = 0.0,
                    box_margin_px: tuple[float, float] = (0.0, 0.0)) -> list[Propagation]:
    """Propagate several organs (or prompts) through one volume at once; see the module docstring.

    n_slices: Z, the number of slices of the volume.
    seeds: one (key_z, first prompt) per organ; the prompt is in (x, y) pixels of slice key_z.
    decode_batch: called once per round with every active request [(z, prompt), ...]: round 0 has the
        key slices, round k the slices k away from them (at most 2 per seed, one per direction). It
        returns logits (H, W) per request, in order. Requests of one round are independent, so the
        caller may regroup them (e.g. by z, to load each slice's embedding once).
    prompt_type: one of ``PROMPT_TYPES``; decides how a mask prompts the next slice (``next_prompt``).
    min_area_px: the smallest accepted mask in pixels (>= 1; 1 = stop only at an empty mask).
    mask_threshold: logits above it are the organ (SAM's 0.0).
    box_margin_px: (x, y) pixels each propagated box grows by on each side (box prompt types; module docstring).
    Returns one Propagation per seed, in order.
    """
    _check(n_slices, seeds, prompt_type, min_area_px, box_margin_px)
    results = [Propagation(n_slices=n_slices, key_z=int(z)) for z, _ in seeds]
    if not seeds:
        return results
    rounds = _Rounds(decode_batch, min_area_px, mask_threshold, prompt_type, box_margin_px)
    fronts = _key_round(rounds, seeds, results)
    while fronts:
        fronts = _next_round(rounds, fronts, results)
    return results


def propagate(n_slices: int, key_z: int, prompt: Prompt, decode: Decode, prompt_type: str,
              min_area_px: int = 1, mask_threshold: float = 0.0,
              box_margin_px: tuple[float, float] = (0.0, 0.0)) -> Propagation:
    """Propagate one organ from ``prompt`` on slice ``key_z`` outward through ``n_slices`` slices.

    decode(z, prompt) -> float logits (H, W) of slice z (called once per visited slice, key slice
    first, then alternating outward). Other arguments and the stop rule as in ``propagate_batch``.
    """
    return propagate_batch(n_slices, [(key_z, prompt)], lambda requests: [decode(z, p) for z, p in requests],
                           prompt_type, min_area_px=min_area_px, mask_threshold=mask_threshold,
                           box_margin_px=box_margin_px)[0]
