"""Whole organs from one prompt: slice-by-slice propagation through a volume, independent of SAM.

One prompt (from the ground truth, made by ``utils.inference.prompts.make_prompt``) is given on one key slice.
The mask predicted there gives the prompt for the next slice outward, and so on in both directions:

- how a mask is carried (``carry``, one of ``CARRY_MODES``; the field's ways, docs/3d.md): ``as_prompt`` (the
  default) carries a box for box prompt types (the tight box of the previous slice's mask, the larger box for
  ``larger_box``; :func:`utils.inference.prompts.carried_box`, the function that also builds the
  ``propagated_box`` training prompts) and one positive point at the previous mask's distance-transform centre
  for point types (micro-sam's default); ``box`` / ``point`` carry that kind whatever the prompt type; a
  ``+mask`` mode also gives the previous slice's low-res logits as SAM's mask input (micro-sam's "points +
  mask"). Deterministic, so propagation needs no RNG.

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
:attr:`Answer.iou`). A rejected slice stops its direction,
like the minimum area.

Organs that do not steal each other's slices (``exclusive``, a fraction, 0 = off): where a propagated mask and
another organ's accepted mask on the same slice overlap, each organ's claim on the overlap is how much of it its
own previous accepted mask (towards its key slice) covered. The organ whose previous mask covered under half of
it, while the other's covered at least half, has drifted there: if at least ``exclusive`` of its own mask lies in
the overlap (it mostly lies on the other organ), its mask on that slice is rejected (``STOP_ANOTHER_ORGAN``: held
through inside a range, a stop outside one). A key slice never is; otherwise both masks stay (the merge decides,
by logit), so a large organ that only grows over a small neighbour keeps its slice. A tube whose walk slides onto
the neighbouring tube (the aorta onto the oesophagus on the phantom's training volumes) then loses that slice
instead of taking the neighbour's. The check is made as slices are accepted, so a claimant that comes later
can still reject one accepted before.

Mask input (a ``+mask`` carry mode, ``feed_logits`` here): every propagated slice is decoded with the low-res logits of
the slice that prompted it (its direction's last accepted one) as SAM's mask input, as SAM's own iterative
protocol feeds a previous answer back; the key slice has none.

Decoding: ``decode_batch`` is asked a list of :class:`Request` (z, prompt, mask input or None) and answers one
:class:`Answer` (logits, the model's predicted IoU or None, low-res logits or None) per request.

:class:`PropagationSettings` holds every rule in units that mean the same at any spacing (mm); it is the one
place a rule is declared: its fields' metadata give the scripts' flags (:data:`PROPAGATION_HYPERPARAMETERS`),
and :meth:`PropagationSettings.in_pixels` turns it into :class:`StopRules` and a margin in pixels once per
spacing. A new stop rule is its field here, its check in :meth:`StopRules.judge`, its test and a line of docs.

Range (``z_limits``, one (first, last) per seed, inclusive; the 3-D box protocol): a direction never
decodes outside it and stops at its end (``STOP_RANGE_END``). With ``hold_through_rejects`` (the 3-D box
protocol too) a rejected slice inside the range does not stop its direction: the slice keeps no mask and the
next slice is prompted again (``hold_prompt``): with the last accepted prompt ("last"), or with the key slice's
prompt ("key": LiteMedSAM's 3-D inference falls back to the whole-organ box when a slice comes back empty; the
suite's 3-D box is the key slice's box), so a direction always walks to the range's end.

Slices are indexed along the volume's Z axis (the slice store's display stack (Z, H, W), inferior to
superior); masks and logits are (H, W) = (rows, columns); points (x, y) = (column, row); boxes XYXY.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable, NamedTuple, Sequence

import numpy as np

from utils.inference.prompts import LARGER_BOX_GROWTH_PX, Prompt, carried_box, central_point, margin_px, prompt_type


class Request(NamedTuple):
    """One slice to decode: its z (or store row, once mapped), its prompt, and the low-res logits (1, 256, 256) to
    give SAM as mask input, or None."""

    z: int
    prompt: Prompt
    mask_input: object = None


@dataclass(frozen=True)
class Answer:
    """The decoder's answer to a :class:`Request`: float32 (H, W) logits (> threshold = the organ), the model's
    predicted IoU (SAM's IoU head; what ``StopRules.min_predicted_iou`` judges) and the low-res logits (what a
    ``+mask`` carry mode passes on), each None where the decoder does not give it."""

    logits: np.ndarray
    iou: float | None = None
    low_res: object = None


# decode(z, prompt) -> float logits (H, W) of slice z; > mask_threshold is the organ (one organ, ``propagate``).
Decode = Callable[[int, Prompt], np.ndarray]
# decode_batch([Request, ...]) -> [Answer, ...] in the same order (one request per organ front).
DecodeBatch = Callable[[Sequence[Request]], Sequence[Answer]]


@dataclass(frozen=True)
class CarryMode:
    """How a slice's mask prompts the next slice: ``kind`` "box", "point" or None (the prompt type's own,
    ``PromptType.carried_as``), and whether the previous low-res logits go along as SAM's mask input."""

    kind: str | None
    mask_input: bool
    description: str


CARRY_MODES = {
    "as_prompt": CarryMode(None, False, "the prompt type's own: its box for box types (LiteMedSAM, MedSAM2), the "
                                        "distance-transform centre for point types (micro-sam's default)"),
    "box": CarryMode("box", False, "the previous mask's tight box grown by the margin, for every prompt type"),
    "point": CarryMode("point", False, "one positive point at the previous mask's distance-transform maximum"),
    "as_prompt+mask": CarryMode(None, True, "as_prompt, with the previous slice's low-res logits as mask input"),
    "box+mask": CarryMode("box", True, "box, with the previous slice's low-res logits as mask input"),
    "point+mask": CarryMode("point", True, "point, with the previous slice's low-res logits as mask input (micro-sam's "
                                           "points + mask)"),
}
HOLD_PROMPTS = ("last", "key")  # what prompts the slice after a rejected one inside a range (module docstring)
KEY_SLICES = ("largest", "middle")  # the ground-truth protocols' key slice: largest organ area, or the middle of its extent

DIRECTIONS = {"decreasing": -1, "increasing": +1}  # of the slice index z (display/RAS: towards inferior / superior)
# Stop reasons, per direction.
STOP_VOLUME_END = "volume_end"  # the direction reached slice 0 or Z - 1
STOP_EMPTY = "empty"  # the prediction on the next slice was empty
STOP_BELOW_MIN_AREA = "below_min_area"  # it had 1 .. min_area_px - 1 pixels
STOP_LOW_OVERLAP = "low_overlap"  # its IoU with the previous accepted mask was below min_iou_previous
STOP_AREA_JUMP = "area_jump"  # its area was more than max_area_factor above or below the previous mask's
STOP_LOW_PREDICTED_IOU = "low_predicted_iou"  # the model's own IoU estimate for it was below min_predicted_iou
STOP_RANGE_END = "range_end"  # the direction reached the end of its z_limits (the 3-D box's first / last slice)
STOP_ANOTHER_ORGAN = "another_organ"  # it lay on another organ's mask that the other organ's own walk led to (overlap)


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
                raise ValueError("min_predicted_iou needs the model's predicted IoU: decode_batch must answer "
                                 "Answer(logits, iou)")
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


def carried_kind(prompt_type_name: str, carry: str = "as_prompt") -> str:
    """What a mask of ``prompt_type_name`` hands the next slice under carry mode ``carry``: "box", "larger_box" or
    "point" (``as_prompt``: the type's own, ``PromptType.carried_as``)."""
    if carry not in CARRY_MODES:
        raise ValueError(f"unknown carry mode {carry!r}; choose from {', '.join(CARRY_MODES)}")
    return CARRY_MODES[carry].kind or prompt_type(prompt_type_name).carried_as


def carry_prompt(mask: np.ndarray, kind: str, box_margin_px: tuple[float, float] = (0.0, 0.0)) -> Prompt:
    """The prompt a predicted bool (H, W) ``mask`` (non-empty) gives to the neighbouring slice, by ``kind``
    (:func:`carried_kind`): "box" -> its tight XYXY box grown by ``box_margin_px`` (x, y) on each side;
    "larger_box" -> the larger box (tight + ``LARGER_BOX_GROWTH_PX`` / 2), grown the same; "point" -> one positive
    point at the distance-transform centre, points float32 (1, 2) (x, y), labels int64 (1,)."""
    mx, my = box_margin_px
    if kind == "box":
        return Prompt(box=carried_box(mask, (mx, my)))
    if kind == "larger_box":
        half = LARGER_BOX_GROWTH_PX / 2.0
        return Prompt(box=carried_box(mask, (mx + half, my + half)))
    if kind == "point":
        return Prompt(points=central_point(mask), labels=np.ones(1, dtype=np.int64))
    raise ValueError(f"unknown carried prompt kind {kind!r}; one of box, larger_box, point")


def next_prompt(mask: np.ndarray, prompt_type_name: str, box_margin_px: tuple[float, float] = (0.0, 0.0),
                carry: str = "as_prompt") -> Prompt:
    """The prompt a predicted mask of a ``prompt_type_name`` propagation gives the next slice under ``carry``
    (:func:`carry_prompt` of :func:`carried_kind`)."""
    return carry_prompt(mask, carried_kind(prompt_type_name, carry), box_margin_px)


def key_slice(label_volume_display: np.ndarray, organ: int, rule: str = "largest") -> int:
    """The key slice of ``organ`` by ``rule``: "largest", the z with the largest organ area (MedSAM2's start), or
    "middle", the middle of the organ's z extent (LiteMedSAM's 3-D inference starts from the 3-D box's middle slice;
    if the organ skips that slice, the nearest slice it is on).

    label_volume_display: integer labels (Z, H, W) (the display stack; any (Z, ...) stack works).
    Ties go to the slice nearest the middle of the organ's z extent, then to the lower z: on a flat
    run of equal areas, propagation then has the least distance to cover each way.
    Raises ValueError if the organ is on no slice.
    """
    if rule not in KEY_SLICES:
        raise ValueError(f"unknown key slice rule {rule!r}; choose from {', '.join(KEY_SLICES)}")
    labels = np.asarray(label_volume_display)
    if labels.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) label stack, got shape {labels.shape}")
    areas = (labels == organ).reshape(labels.shape[0], -1).sum(axis=1)
    present = np.flatnonzero(areas)
    if present.size == 0:
        raise ValueError(f"organ {organ} is on no slice of this volume: there is no key slice")
    middle = (present[0] + present[-1]) / 2.0
    best = present if rule == "middle" else np.flatnonzero(areas == areas.max())
    return int(best[np.argmin(np.abs(best - middle))])  # argmin takes the first (lower z) of equal distances


@dataclass(frozen=True)
class PropagationSettings:
    """Every propagation rule, in units that mean the same at any spacing: the one place a rule is declared.

    Each field's metadata (``flag``: (help, check)) makes its flag in segmentation_3d.py and segment_volume.py
    (:data:`PROPAGATION_HYPERPARAMETERS`, :meth:`from_args`); the defaults were chosen on TRAINING volumes of
    the whole-abdomen phantom (cases 1 and 2; docs/3d.md). :meth:`in_pixels` converts them once per spacing.
    """

    # A speck at an organ's end is more likely noise than organ. 25 mm^2 (a 5 x 5 mm patch) is ~44 px at BTCV's
    # ~0.75 mm pixels and 5 px at the phantom's 2.4 mm; a third of the smallest organ cross-section the phantom
    # draws (an adrenal gland, ~13 px = 75 mm^2), so real organ ends pass.
    min_area_mm2: float = field(default=25.0, metadata={"flag": (
        "a propagated mask smaller than this (mm^2, converted with the slice's spacing, at least 1 px) is rejected",)})
    # 0 = the previous mask's tight box, which let masks shrink slice by slice. 4 mm with the overlap stop below was
    # chosen on training volumes (bound box, 16 rules): the best mean propagate 3-D Dice of the zero-shot and Task 2
    # decoders. The propagated_box training prompts use the same margin (prompts.CARRY_MARGIN_MM).
    box_margin_mm: float = field(default=4.0, metadata={"flag": (
        "each carried box grows by this many mm on each side (converted with the slice's spacing)",)})
    # Where an organ ends the next slice's mask is a neighbour's and overlaps the previous one little: on those
    # training volumes this stop at 0.5 caught Task 2's decoder walking through the whole stack.
    min_iou_previous: float = field(default=0.5, metadata={"flag": (
        "reject a mask whose IoU with the previous accepted slice's mask is below this (0 = off)", "fraction")})
    max_area_factor: float = field(default=0.0, metadata={"flag": (
        "reject a mask whose area is more than this factor above or below the previous slice's (0 = off)",
        "factor_or_off")})
    min_predicted_iou: float = field(default=0.0, metadata={"flag": (
        "reject a mask whose predicted IoU (the model's IoU head) is below this (0 = off; clicks3d's re-propagation "
        "after a click does not apply it)", "fraction")})
    # On since 2026-12-07, with hold_prompt "key": on the training volumes (cases 1, 2) the IoU stop inside the 3-D box
    # with LiteMedSAM's fallback to the key box raised box3d for three of four decoders (mean 0.706 -> 0.714; the
    # propagation decoder 0.715 -> 0.733); without the fallback it had cost Task 2's decoder (docs/3d.md).
    rules_in_range: bool = field(default=True, metadata={"flag": (
        "inside a known range (a 3-D box: box3d, clicks3d, a prompt with first and last slices) apply the IoU, "
        "area-jump and predicted-IoU rules too (off: there only the minimum area rejects a slice)",)})
    largest_component: bool = field(default=False, metadata={"flag": (
        "keep each organ's largest 26-connected 3-D component of the result (MedSAM2 does, after both ways)",)})
    carry: str = field(default="as_prompt", metadata={"flag": (
        "how a slice's mask prompts the next: " + "; ".join(f"{k} = {m.description}" for k, m in CARRY_MODES.items()),
        tuple(CARRY_MODES))})
    # Off: on the training volumes it rejected the few slices where the aorta slid onto the oesophagus but cost as
    # much elsewhere (the propagation decoder's box3d 0.715 -> 0.710; docs/3d.md).
    exclusive: float = field(default=0.0, metadata={"flag": (
        "organs that do not steal each other's slices: a propagated mask that lies at least this fraction on another "
        "organ's mask, on an overlap the other's previous slice covered and its own did not, is rejected (0 = off; "
        "utils/inference/propagation.py)", "fraction")})
    # "key" since 2026-12-07 (with rules_in_range; docs/3d.md): a stale box from a rejected walk re-prompts the wrong
    # place, the key slice's box brings the walk back to the organ.
    hold_prompt: str = field(default="key", metadata={"flag": (
        "inside a range, what prompts the slice after a rejected one: last (the last accepted prompt) or key (the key "
        "slice's prompt: LiteMedSAM's whole-organ box fallback)", HOLD_PROMPTS)})
    key_slice: str = field(default="largest", metadata={"flag": (
        "the ground-truth protocols' key slice (where the one prompt is given): largest (organ area; MedSAM2) or "
        "middle (of the organ's extent; LiteMedSAM's 3-D box)", KEY_SLICES)})

    def __post_init__(self):
        if self.carry not in CARRY_MODES:
            raise ValueError(f"unknown carry mode {self.carry!r}; choose from {', '.join(CARRY_MODES)}")
        if self.hold_prompt not in HOLD_PROMPTS:
            raise ValueError(f"unknown hold prompt {self.hold_prompt!r}; choose from {', '.join(HOLD_PROMPTS)}")
        if self.key_slice not in KEY_SLICES:
            raise ValueError(f"unknown key slice rule {self.key_slice!r}; choose from {', '.join(KEY_SLICES)}")

    @classmethod
    def from_args(cls, args) -> "PropagationSettings":
        """From the flags of :data:`PROPAGATION_HYPERPARAMETERS` (every field, by its name; a script that does not
        take one, as segment_volume.py does not take --key-slice, gets its default)."""
        return cls(**{f.name: getattr(args, f.name, f.default) for f in fields(cls)})

    @property
    def needs_iou(self) -> bool:
        """Whether propagation must judge the model's predicted IoU."""
        return self.min_predicted_iou > 0

    @property
    def feed_logits(self) -> bool:
        """Whether each carried prompt takes the previous slice's low-res logits along (a ``+mask`` carry mode)."""
        return CARRY_MODES[self.carry].mask_input

    def in_pixels(self, spacing: tuple[float, float], bounded: bool) -> tuple[StopRules, tuple[float, float]]:
        """(stop rules, box margin (x, y) px) for slices of ``spacing`` (row, column) mm; ``bounded``: inside a
        known range (rejects held through; the ratio rules only with ``rules_in_range``)."""
        sy, sx = spacing
        judged = not bounded or self.rules_in_range
        rules = StopRules(min_area_px=max(1, math.ceil(self.min_area_mm2 / (sy * sx))),
                          min_iou_previous=self.min_iou_previous if judged else 0.0,
                          max_area_factor=self.max_area_factor if judged else 0.0,
                          min_predicted_iou=self.min_predicted_iou if judged else 0.0, hold_through_rejects=bounded)
        return rules, margin_px(self.box_margin_mm, spacing)


# The scripts' flags, one per PropagationSettings field, in the HYPERPARAMETERS form ``NAME: (default, help[, check])``
# (a tuple check = the allowed values).
PROPAGATION_HYPERPARAMETERS = {f.name.upper(): (f.default, *f.metadata["flag"]) for f in fields(PropagationSettings)}


@dataclass
class _Front:
    item: int
    direction: str
    z: int
    prompt: Prompt
    previous: np.ndarray  # the direction's last accepted mask, bool (H, W)
    low_res: object = None  # that mask's low-res logits (the mask input of a +mask carry mode)
    previous_z: int | None = None  # that mask's slice


class _Claims:
    """The cross-organ overlap rule (``exclusive``; module docstring): every accepted mask by (item, z), the slice
    its walk came from, and which were dropped later."""

    def __init__(self, exclusive: float, results: list[Propagation]):
        self.exclusive, self.results = exclusive, results
        self.masks: dict[tuple[int, int], np.ndarray] = {}
        self.came_from: dict[tuple[int, int], int | None] = {}
        self.dropped: set[tuple[int, int]] = set()
        self.at: dict[int, set[int]] = {}  # z -> items with an accepted mask there now

    def claim(self, item: int, came_from: int | None, overlap: np.ndarray) -> float:
        """The share of ``overlap`` that ``item``'s own previous accepted mask covered (1 on its key slice);
        a previous slice dropped since does not count: the walk's last undropped slice before it does."""
        while came_from is not None and (item, came_from) in self.dropped:
            came_from = self.came_from[(item, came_from)]
        if came_from is None:
            return 1.0
        return float((overlap & self.masks[(item, came_from)]).sum()) / float(overlap.sum())

    def accept(self, item: int, z: int, mask: np.ndarray, came_from: int | None) -> bool:
        """Record ``item``'s mask on z (``came_from``: the slice its walk came from, None on its key slice);
        False when the rule rejects it. A mask accepted earlier that loses the contest is dropped here. With the
        rule off nothing is kept (no work in the walk)."""
        if self.exclusive == 0:
            return True
        for other in sorted(self.at.get(z, ())):
            theirs = self.masks[(other, z)]
            overlap = mask & theirs
            n = int(overlap.sum())
            if n == 0:
                continue
            mine, their_claim = self.claim(item, came_from, overlap), self.claim(other, self.came_from[(other, z)],
                                                                                overlap)
            if mine < 0.5 <= their_claim and n >= self.exclusive * int(mask.sum()):
                return False
            if their_claim < 0.5 <= mine and n >= self.exclusive * int(theirs.sum()):
                self._drop(other, z)
        self.masks[(item, z)], self.came_from[(item, z)] = mask, came_from
        self.at.setdefault(z, set()).add(item)
        return True

    def _drop(self, item: int, z: int) -> None:
        result = self.results[item]
        del result.logits[z]
        result.rejected[z] = STOP_ANOTHER_ORGAN
        self.dropped.add((item, z))
        self.at[z].discard(item)


def _as_logits(array: np.ndarray, shape: tuple[int, ...] | None, z: int) -> np.ndarray:
    logits = np.array(array, dtype=np.float32)  # a copy: decoders may reuse their output buffers
    if logits.ndim != 2:
        raise ValueError(f"decode returned shape {logits.shape} for slice {z}; expected (H, W) logits")
    if shape is not None and logits.shape != shape:
        raise ValueError(f"decode returned shape {logits.shape} for slice {z}, {shape} before; one volume, one shape")
    return logits


def _check(n_slices: int, seeds: Sequence[tuple[int, Prompt]], box_margin_px: tuple[float, float],
           z_limits: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """Checks the arguments; returns each seed's (first, last) z, inclusive (the whole volume without limits)."""
    if len(box_margin_px) != 2 or min(box_margin_px) < 0:
        raise ValueError(f"box_margin_px must be (x, y) pixels >= 0, got {box_margin_px}")
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
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


class _Walk:
    """One propagate_batch call: asks ``decode_batch`` for one round of requests and checks its answers (one (H, W)
    shape per volume), judges each answer by the stop rules and moves the fronts on."""

    def __init__(self, decode_batch: DecodeBatch, rules: StopRules, mask_threshold: float, kind: str,
                 box_margin_px: tuple[float, float], limits: list[tuple[int, int]], ranged: bool,
                 results: list[Propagation], feed_logits: bool = False, hold_prompt: str = "last",
                 exclusive: float = 0.0):
        if not 0.0 <= exclusive <= 1.0:
            raise ValueError(f"exclusive must be a fraction in [0, 1] (0 = off), got {exclusive}")
        self.claims = _Claims(exclusive, results)
        if hold_prompt not in HOLD_PROMPTS:
            raise ValueError(f"unknown hold prompt {hold_prompt!r}; choose from {', '.join(HOLD_PROMPTS)}")
        self.hold_prompt = hold_prompt
        self.decode_batch, self.rules, self.mask_threshold = decode_batch, rules, mask_threshold
        self.feed_logits, self.kind = feed_logits, kind
        self.box_margin_px = tuple(float(v) for v in box_margin_px)
        self.limits, self.ranged, self.results = limits, ranged, results
        self.shape: tuple[int, ...] | None = None

    def carry(self, mask: np.ndarray) -> Prompt:
        return carry_prompt(mask, self.kind, self.box_margin_px)

    def decode(self, requests: list[Request]) -> list[Answer]:
        """decode_batch's checked :class:`Answer` per request (the mask inputs dropped unless ``feed_logits``)."""
        asked = requests if self.feed_logits else [Request(r.z, r.prompt) for r in requests]
        answers = list(self.decode_batch(asked))
        if len(answers) != len(requests):
            raise ValueError(f"decode_batch returned {len(answers)} answers for {len(requests)} requests")
        out = []
        for request, answer in zip(requests, answers):
            if self.feed_logits and answer.low_res is None:
                raise ValueError("a +mask carry mode needs decode_batch to answer the low-res logits")
            out.append(Answer(_as_logits(answer.logits, self.shape, request.z),
                              None if answer.iou is None else float(answer.iou), answer.low_res))
            self.shape = out[-1].logits.shape
        return out

    def advance(self, item: int, direction: str, z: int, prompt: Prompt, previous: np.ndarray,
                low_res: object = None, previous_z: int | None = None) -> list[_Front]:
        """The front of ``item`` moving on from slice z (done), or [] with the reason recorded at an end."""
        result, nxt = self.results[item], z + DIRECTIONS[direction]
        lo, hi = self.limits[item]
        if not lo <= nxt <= hi:
            ended_volume = not 0 <= nxt < result.n_slices
            result.stops[direction] = STOP_VOLUME_END if ended_volume or not self.ranged else STOP_RANGE_END
            result.stopped_at[direction] = None
            return []
        return [_Front(item, direction, nxt, prompt, previous, low_res, previous_z)]


def _key_round(walk: _Walk, seeds: Sequence[tuple[int, Prompt]]) -> list[_Front]:
    """Round 0: decode every key slice, keep its logits, and open a front each way that may go on."""
    fronts: list[_Front] = []
    for i, answer in enumerate(walk.decode([Request(int(z), prompt) for z, prompt in seeds])):
        result = walk.results[i]
        result.logits[result.key_z], result.prompts[result.key_z] = answer.logits, seeds[i][1]
        result.n_decoded += 1
        mask = answer.logits > walk.mask_threshold
        reason = walk.rules.judge(mask, None)
        if reason is None:
            walk.claims.accept(i, result.key_z, mask, None)  # a key slice is never rejected by another organ
        for direction in DIRECTIONS:
            if reason is not None:
                result.stops[direction], result.stopped_at[direction] = reason, result.key_z
            else:
                fronts += walk.advance(i, direction, result.key_z, walk.carry(mask), mask, answer.low_res,
                                       result.key_z)
        if reason is not None:
            result.rejected[result.key_z] = reason
    return fronts


def _next_round(walk: _Walk, fronts: list[_Front]) -> list[_Front]:
    """Round k > 0: decode every front's slice; accepted slices move their front one slice on (so do rejected
    ones with ``hold_through_rejects``, prompted again as before)."""
    next_fronts = []
    for front, answer in zip(fronts, walk.decode([Request(f.z, f.prompt, f.low_res) for f in fronts])):
        result = walk.results[front.item]
        result.n_decoded += 1
        result.prompts[front.z] = front.prompt
        mask = answer.logits > walk.mask_threshold
        reason = walk.rules.judge(mask, front.previous, answer.iou)
        if reason is None and not walk.claims.accept(front.item, front.z, mask, front.previous_z):
            reason = STOP_ANOTHER_ORGAN
        low_res, previous_z = answer.low_res, front.z
        if reason is None:
            result.logits[front.z] = answer.logits
            prompt, previous = walk.carry(mask), mask
        else:
            result.rejected[front.z] = reason
            if not walk.rules.hold_through_rejects:
                result.stops[front.direction], result.stopped_at[front.direction] = reason, front.z
                continue
            prompt, previous, low_res, previous_z = front.prompt, front.previous, front.low_res, front.previous_z
            if walk.hold_prompt == "key":  # LiteMedSAM's fallback: back to the key slice's (the person's) prompt
                prompt, low_res = result.prompts[result.key_z], None
        next_fronts += walk.advance(front.item, front.direction, front.z, prompt, previous, low_res, previous_z)
    return next_fronts


def propagate_batch(n_slices: int, seeds: Sequence[tuple[int, Prompt]], decode_batch: DecodeBatch,
                    prompt_type: str, min_area_px: int = 1, mask_threshold: float = 0.0,
                    box_margin_px: tuple[float, float] = (0.0, 0.0), rules: StopRules | None = None,
                    z_limits: Sequence[tuple[int, int]] | None = None, carry: str = "as_prompt",
                    hold_prompt: str = "last", exclusive: float = 0.0) -> list[Propagation]:
    """Propagate several organs (or prompts) through one volume at once; see the module docstring.

    n_slices: Z, the number of slices of the volume.
    seeds: one (key_z, first prompt) per organ; the prompt is in (x, y) pixels of slice key_z.
    decode_batch: called once per round with every active :class:`Request`: round 0 has the key slices, round k
        the slices k away from them (at most 2 per seed, one per direction). It returns one :class:`Answer` per
        request, in order. Requests of one round are independent, so the caller may regroup them (e.g. by z, to
        load each slice's embedding once). Mask inputs are given only by a ``+mask`` carry mode.
    prompt_type: the seeds' prompt type (with ``carry``, it decides what a mask hands the next slice).
    min_area_px: the smallest accepted mask in pixels (>= 1; 1 = stop only at an empty mask); used when
        ``rules`` is None, else ``rules.min_area_px`` is.
    mask_threshold: logits above it are the organ (SAM's 0.0).
    box_margin_px: (x, y) pixels each carried box grows by on each side.
    rules: the stop rules (:class:`StopRules`); None = the minimum area alone.
    z_limits: optional (first, last) z per seed, inclusive, holding its key slice: nothing outside is decoded.
    carry: one of ``CARRY_MODES``.
    hold_prompt: with ``rules.hold_through_rejects``, what prompts the slice after a rejected one (``HOLD_PROMPTS``).
    exclusive: the cross-organ overlap rule's fraction (module docstring; 0 = off): seeds are different organs.
    Returns one Propagation per seed, in order.
    """
    rules = rules if rules is not None else StopRules(min_area_px=min_area_px)
    kind = carried_kind(prompt_type, carry)
    limits = _check(n_slices, seeds, box_margin_px, z_limits)
    results = [Propagation(n_slices=n_slices, key_z=int(z)) for z, _ in seeds]
    if not seeds:
        return results
    walk = _Walk(decode_batch, rules, mask_threshold, kind, box_margin_px, limits, z_limits is not None, results,
                 CARRY_MODES[carry].mask_input, hold_prompt, exclusive)
    fronts = _key_round(walk, seeds)
    while fronts:
        fronts = _next_round(walk, fronts)
    return results


def propagate(n_slices: int, key_z: int, prompt: Prompt, decode: Decode, prompt_type: str,
              min_area_px: int = 1, mask_threshold: float = 0.0,
              box_margin_px: tuple[float, float] = (0.0, 0.0), rules: StopRules | None = None,
              z_limits: tuple[int, int] | None = None, carry: str = "as_prompt") -> Propagation:
    """Propagate one organ from ``prompt`` on slice ``key_z`` outward through ``n_slices`` slices.

    decode(z, prompt) -> float logits (H, W) of slice z (called once per visited slice, key slice
    first, then alternating outward). Other arguments and the stop rules as in ``propagate_batch`` (a ``+mask``
    carry mode needs propagate_batch: ``decode`` gives no low-res logits).
    """
    return propagate_batch(n_slices, [(key_z, prompt)],
                           lambda requests: [Answer(decode(r.z, r.prompt)) for r in requests],
                           prompt_type, min_area_px=min_area_px, mask_threshold=mask_threshold,
                           box_margin_px=box_margin_px, rules=rules,
                           z_limits=None if z_limits is None else [z_limits], carry=carry)[0]
