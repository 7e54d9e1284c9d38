"""Prompts made from a slice's ground-truth organ mask: one registry of prompt types (``PROMPT_REGISTRY``).

All coordinates are (x, y) = (column, row) in slice pixels; boxes are XYXY with inclusive pixel
indices. An organ split into several pieces on a slice is one target: its prompts are drawn from,
and its box bounds, all pieces.

Every prompt type is one :class:`PromptType` entry: its name, title, builder, a seed id that never moves
(the ``child_rng`` key of its random draws: a new type takes the next free id, so adding one changes no
other type's draws), whether it is a box, and how propagation carries a mask of its kind to the next slice
(``carried_as``: "box" or "point", :func:`utils.inference.propagation.carry_prompt`). Everything else
(``STUDY_PROMPTS``, ``ALL_PROMPT_TYPES``, ``BOX_PROMPTS``, ``PROMPT_TITLES``) is derived from it. Adding a
type is its builder, its entry, its test and a line of docs.

The study's five (``STUDY_PROMPTS``) are the default everywhere; their points are all positive (label 1)
and inside the organ. ``three_random_points`` is three distinct positive points (the study's definition),
not SAM-Med2D's "3 points" of one positive and two negatives: that one is ``center_and_negatives``.

The extra types are used only when asked for by name:

- ``jittered_box``: the tight box with each side moved by its own seeded integer shift in
  [-jitter, +jitter] px (``DEFAULT_BOX_JITTER_PX``), clipped to the slice, never empty.
- ``center_and_negatives``: the central point (label 1) plus two distinct negative points (label 0)
  drawn uniformly from the background inside the tight box grown by ``DEFAULT_NEGATIVE_MARGIN_PX``
  on each side, clipped to the slice. Labels [1, 0, 0].
- ``propagated_box``: the box propagation hands the next slice (the tight box grown by
  ``CARRY_MARGIN_MM`` on each side, :func:`carried_box`), with each side moved by a seeded shift of up to
  ``CARRY_TRAIN_JITTER_PX``: the prompt a decoder trained for propagation is trained on (Task 2's
  ``--prompts propagated_box``; the issue on whole organs from one box). Its margin is in mm, so it needs
  the slice's pixel spacing (``spacing``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

# The larger box grows the tight box by this many pixels in width and in height (half on each
# side), as the study words it, then is clipped to the slice.
LARGER_BOX_GROWTH_PX = 5.0
# jittered_box: each side of the tight box moves by up to this many slice pixels (uniform integer
# shift in [-5, +5], independently per side). 5 px on a 512 px BTCV slice is 10 px at SAM's 1024
# input: half of MedSAM's training perturbation (up to 20 px at 1024), i.e. a careful person's
# error rather than a careless one; the robustness table sweeps 0/5/10/20 px for the rest.
DEFAULT_BOX_JITTER_PX = 5
# center_and_negatives: negatives come from background within the tight box grown by this many
# slice pixels on each side (clipped to the slice). Close enough that a negative sits on tissue next
# to the organ (what a person would mark as "not this"), wide enough (twice the default box jitter)
# that there is background to draw from even when the organ fills its tight box.
DEFAULT_NEGATIVE_MARGIN_PX = 10
# propagated_box / propagation: the box a mask hands the next slice is its tight box grown by this many mm on each
# side (converted with the slice's pixel spacing). The same 4 mm as segmentation_3d.py's --box-margin-mm, chosen on
# training volumes (docs/3d.md): a decoder trained for propagation is trained on the margin it is propagated with.
CARRY_MARGIN_MM = 4.0
# propagated_box's training jitter: each side of that grown box moves by a seeded integer shift of up to this many
# slice pixels (the prototype: +-3 px); propagation itself adds none (inference is deterministic).
# LiteMedSAM trains with 0-5 px box shifts and propagates with +3 px at 256 px, inside that range.
CARRY_TRAIN_JITTER_PX = 3


@dataclass(frozen=True)
class Prompt:
    """points: float32 (P, 2) (x, y) or None; labels: int64 (P,) (1 = foreground, 0 = background) or
    None; box: float32 (4,) XYXY or None. A box and points together is one prompt (SAM takes both:
    interactive correction clicks on a box start)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None


def central_point(mask: np.ndarray) -> np.ndarray:
    """(1, 2) (x, y) of the organ pixel farthest from the background (cv2.distanceTransform, L2).

    The mask is padded with one background pixel first: distanceTransform treats outside the image as
    far away, so an organ touching the edge would otherwise get its 'centre' on the border.
    """
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_5)
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return np.array([[col - 1, row - 1]], dtype=np.float32)


def random_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) (x, y) of n distinct foreground pixels (with repeats only if the organ has fewer)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("cannot draw points from an empty mask")
    pick = rng.choice(rows.size, size=n, replace=rows.size < n)
    return np.stack([cols[pick], rows[pick]], axis=1).astype(np.float32)


def bound_box(mask: np.ndarray) -> np.ndarray:
    """(4,) tight XYXY box of the mask, inclusive pixel indices."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("cannot box an empty mask")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def grow_box(box: np.ndarray, margin_px: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """(4,) XYXY ``box`` grown by ``margin_px`` = (x, y) pixels on each side, clipped to a slice of ``shape`` (H, W)."""
    mx, my = margin_px
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([max(x0 - mx, 0.0), max(y0 - my, 0.0), min(x1 + mx, w - 1.0), min(y1 + my, h - 1.0)],
                    dtype=np.float32)


def larger_box(mask: np.ndarray, growth: float = LARGER_BOX_GROWTH_PX) -> np.ndarray:
    """(4,) tight box grown by ``growth`` px in width and in height, clipped to the slice."""
    return grow_box(bound_box(mask), (growth / 2.0, growth / 2.0), mask.shape)


def _jitter_sides(lo: float, hi: float, size: int, jitter: int, rng: np.random.Generator) -> tuple[float, float]:
    """One axis of a jittered box: (lo + s0, hi + s1) clipped to [0, size - 1], with hi' > lo'.

    (s0, s1) is drawn uniformly from the integer pairs in [-jitter, jitter]^2 whose clipped sides keep
    hi' > lo' (exact rejection sampling: one draw from ``rng`` whatever the case). When no pair does
    (an organ one pixel wide with jitter 0, or one at the slice's last pixel with jitter 0) the box is
    widened by one pixel, towards the slice's inside: the one place a side leaves the jitter range.
    """
    if size < 2:
        raise ValueError(f"cannot make a non-empty box on a slice {size} px wide")
    shifts = np.arange(-jitter, jitter + 1)
    s0, s1 = np.meshgrid(shifts, shifts, indexing="ij")
    a0 = np.clip(lo + s0, 0, size - 1).ravel()
    a1 = np.clip(hi + s1, 0, size - 1).ravel()
    valid = np.flatnonzero(a1 > a0)
    if valid.size == 0:
        a, b = min(lo, hi), max(lo, hi)
        return (a, a + 1.0) if a + 1 <= size - 1 else (b - 1.0, b)
    pick = valid[int(rng.integers(valid.size))]
    return float(a0[pick]), float(a1[pick])


def jittered_box(mask: np.ndarray, rng: np.random.Generator, jitter: int = DEFAULT_BOX_JITTER_PX) -> np.ndarray:
    """(4,) float32 XYXY: the tight box with each side shifted by an integer in [-jitter, jitter].

    Sides are clipped to the slice (0..W-1, 0..H-1) and the box is never empty: x1 > x0 and y1 > y0
    (see :func:`_jitter_sides` for the draw). Deterministic for a given ``rng`` state. ``jitter`` is in
    slice pixels; 0 gives the tight box (widened by one pixel only if that box has zero width/height).
    """
    if int(jitter) != jitter or jitter < 0:
        raise ValueError(f"box jitter must be a whole number of pixels >= 0, got {jitter!r}")
    x0, y0, x1, y1 = bound_box(mask)
    h, w = mask.shape
    nx0, nx1 = _jitter_sides(x0, x1, w, int(jitter), rng)
    ny0, ny1 = _jitter_sides(y0, y1, h, int(jitter), rng)
    return np.array([nx0, ny0, nx1, ny1], dtype=np.float32)


def grown_box(mask: np.ndarray, margin: float) -> np.ndarray:
    """(4,) float32 XYXY: the tight box grown by ``margin`` px on each side, clipped to the slice."""
    return carried_box(mask, (margin, margin))


def negative_points(mask: np.ndarray, n: int, rng: np.random.Generator,
                    margin: float = DEFAULT_NEGATIVE_MARGIN_PX) -> np.ndarray:
    """(n, 2) float32 (x, y) of n distinct background pixels inside ``grown_box(mask, margin)``.

    Drawn uniformly (repeats only if that area has fewer than n background pixels). Raises ValueError
    when the grown box holds no background at all (the organ covers it: widen ``margin``).
    """
    gx0, gy0, gx1, gy1 = grown_box(mask, margin)
    x0, y0, x1, y1 = int(np.ceil(gx0)), int(np.ceil(gy0)), int(np.floor(gx1)), int(np.floor(gy1))
    rows, cols = np.nonzero(~mask[y0 : y1 + 1, x0 : x1 + 1].astype(bool))
    if rows.size == 0:
        raise ValueError(f"no background within {margin} px of the organ's box to draw negative points from")
    pick = rng.choice(rows.size, size=n, replace=rows.size < n)
    return np.stack([cols[pick] + x0, rows[pick] + y0], axis=1).astype(np.float32)


def margin_px(margin_mm: float, spacing: tuple[float, float]) -> tuple[float, float]:
    """(x, y) pixels of a margin of ``margin_mm`` on a slice of ``spacing`` = (row, column) mm."""
    sy, sx = spacing
    return margin_mm / sx, margin_mm / sy


def carried_box(mask: np.ndarray, margin: tuple[float, float], rng: np.random.Generator | None = None,
                jitter: int = 0) -> np.ndarray:
    """(4,) float32 XYXY: the box a (non-empty) bool (H, W) ``mask`` hands the next slice in propagation: its tight
    box grown by ``margin`` = (x, y) px on each side, clipped to the slice; with ``rng`` and ``jitter`` > 0 each side
    then moves by a seeded integer shift in [-jitter, jitter] (:func:`_jitter_sides`: clipped, never empty).

    The one function behind both the boxes propagation carries (no jitter) and the ``propagated_box`` training
    prompts (with ``CARRY_TRAIN_JITTER_PX``), so a propagation decoder is trained on what it is propagated with."""
    box = grow_box(bound_box(mask), margin, mask.shape) if any(margin) else bound_box(mask)
    if rng is None or jitter == 0:
        return box
    h, w = mask.shape
    x0, x1 = _jitter_sides(float(box[0]), float(box[2]), w, int(jitter), rng)
    y0, y1 = _jitter_sides(float(box[1]), float(box[3]), h, int(jitter), rng)
    return np.array([x0, y0, x1, y1], dtype=np.float32)


@dataclass(frozen=True)
class PromptOptions:
    """The knobs some prompt types read: ``box_jitter`` (jittered_box, px), ``negative_margin``
    (center_and_negatives, px), ``spacing`` ((row, column) mm of the slice: propagated_box's mm margin)."""

    box_jitter: int = DEFAULT_BOX_JITTER_PX
    negative_margin: float = DEFAULT_NEGATIVE_MARGIN_PX
    spacing: tuple[float, float] | None = None


def _points(points: np.ndarray) -> Prompt:
    return Prompt(points=points, labels=np.ones(len(points), dtype=np.int64))


def _center_and_negatives(mask: np.ndarray, rng: np.random.Generator, options: PromptOptions) -> Prompt:
    points = np.concatenate([central_point(mask), negative_points(mask, 2, rng, options.negative_margin)])
    return Prompt(points=points, labels=np.array([1, 0, 0], dtype=np.int64))


def _propagated_box(mask: np.ndarray, rng: np.random.Generator, options: PromptOptions) -> Prompt:
    if options.spacing is None:
        raise ValueError("propagated_box prompts need the slice's pixel spacing (their margin is in mm)")
    return Prompt(box=carried_box(mask, margin_px(CARRY_MARGIN_MM, options.spacing), rng, CARRY_TRAIN_JITTER_PX))


@dataclass(frozen=True)
class PromptType:
    """One prompt type. ``build(mask, rng, options) -> Prompt`` for a bool (H, W) mask; ``seed_id``: the key of its
    random draws (``child_rng``), fixed for good; ``is_box``: a box alone (the 3-D box protocols take these);
    ``carried_as``: how propagation carries a mask of this kind to the next slice ("box", "larger_box" or "point",
``utils.inference.propagation.carry_prompt``); ``study``:
    one of the study's five (the default set)."""

    name: str
    title: str
    seed_id: int
    build: Callable[[np.ndarray, np.random.Generator, PromptOptions], Prompt]
    is_box: bool
    carried_as: str
    study: bool = False


PROMPT_REGISTRY: dict[str, PromptType] = {t.name: t for t in (
    PromptType("one_central_point", "one central point", 0, lambda m, r, o: _points(central_point(m)), False,
               "point", True),
    PromptType("one_random_point", "one random point", 1, lambda m, r, o: _points(random_points(m, 1, r)), False,
               "point", True),
    PromptType("three_random_points", "three random points", 2, lambda m, r, o: _points(random_points(m, 3, r)),
               False, "point", True),
    PromptType("bound_box", "bound box", 3, lambda m, r, o: Prompt(box=bound_box(m)), True, "box", True),
    PromptType("larger_box", "larger box", 4, lambda m, r, o: Prompt(box=larger_box(m)), True, "larger_box", True),
    PromptType("jittered_box", "jittered box", 5, lambda m, r, o: Prompt(box=jittered_box(m, r, o.box_jitter)),
               True, "box"),
    PromptType("center_and_negatives", "center + 2 negatives", 6, _center_and_negatives, False, "point"),
    PromptType("propagated_box", "propagated box", 7, _propagated_box, True, "box"),
)}
STUDY_PROMPTS = tuple(t.name for t in PROMPT_REGISTRY.values() if t.study)  # the default of every task
ALL_PROMPT_TYPES = tuple(PROMPT_REGISTRY)
BOX_PROMPTS = tuple(t.name for t in PROMPT_REGISTRY.values() if t.is_box)
PROMPT_TITLES = {t.name: t.title for t in PROMPT_REGISTRY.values()}


def prompt_type(name: str) -> PromptType:
    """The registry entry of ``name``; ValueError naming the choices for an unknown one."""
    if name not in PROMPT_REGISTRY:
        raise ValueError(f"unknown prompt type {name!r}; choose from {', '.join(ALL_PROMPT_TYPES)}")
    return PROMPT_REGISTRY[name]


def parse_prompt_types(text: str | None) -> list[str]:
    """'a,b' -> ['a', 'b'], checked against the registry; None, '' or 'all' -> the study's five.

    The extra types are accepted only by name: 'all,jittered_box' is not a form.
    """
    if text in (None, "", "all"):
        return list(STUDY_PROMPTS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in PROMPT_REGISTRY]
    if unknown:
        raise ValueError(f"unknown prompt type(s) {unknown}; choose from {', '.join(ALL_PROMPT_TYPES)} "
                         f"('all' = the study's five)")
    return names


def prompt_type_id(name: str) -> int:
    """A stable integer per prompt type, for seeding (``child_rng`` keys): its registry ``seed_id``."""
    return prompt_type(name).seed_id


def draw_settings(name: str, box_jitter: int = DEFAULT_BOX_JITTER_PX) -> dict:
    """What ``name``'s draws depend on beyond the seed and the sample, for a training run's key: a jittered_box run
    on ``box_jitter``, a propagated_box run on the carried box's margin and training jitter; the other types on
    nothing (their keys stay as they were)."""
    prompt_type(name)  # an unknown name is a ValueError
    if name == "jittered_box":
        return {"box_jitter": box_jitter}
    if name == "propagated_box":
        return {"carry_margin_mm": CARRY_MARGIN_MM, "carry_train_jitter_px": CARRY_TRAIN_JITTER_PX}
    return {}


def make_prompt(mask: np.ndarray, prompt_type_name: str, rng: np.random.Generator, *,
                box_jitter: int = DEFAULT_BOX_JITTER_PX, negative_margin: float = DEFAULT_NEGATIVE_MARGIN_PX,
                spacing: tuple[float, float] | None = None) -> Prompt:
    """The ``prompt_type_name`` prompt for bool (H, W) ``mask``; random ones draw from ``rng``.

    ``box_jitter`` (px) is used only by ``jittered_box``, ``negative_margin`` (px) only by
    ``center_and_negatives``, ``spacing`` ((row, column) mm) only by ``propagated_box``.
    """
    return prompt_type(prompt_type_name).build(mask, rng, PromptOptions(box_jitter, negative_margin, spacing))


def is_box_prompt(name: str) -> bool:
    """True for the types whose prompt is a box (no points)."""
    return prompt_type(name).is_box
