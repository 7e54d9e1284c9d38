"""Prompts made from a slice's ground-truth organ mask: the study's five, and two extra types.

All coordinates are (x, y) = (column, row) in slice pixels; boxes are XYXY with inclusive pixel
indices. An organ split into several pieces on a slice is one target: its prompts are drawn from,
and its box bounds, all pieces.

The study's five (``STUDY_PROMPTS``, also ``PROMPT_TYPES``) are the default everywhere; their points
are all positive (label 1) and inside the organ. ``three_random_points`` is three distinct positive
points (the study's definition), not SAM-Med2D's "3 points" of one positive and two negatives: that
one is the extra type ``center_and_negatives``.

The two extra types (``EXTRA_PROMPTS``) model a person rather than a perfect oracle, and are used only
when asked for by name:

- ``jittered_box``: the tight box with each side moved by its own seeded integer shift in
  [-jitter, +jitter] px (``DEFAULT_BOX_JITTER_PX``), clipped to the slice, never empty.
- ``center_and_negatives``: the central point (label 1) plus two distinct negative points (label 0)
  drawn uniformly from the background inside the tight box grown by ``DEFAULT_NEGATIVE_MARGIN_PX``
  on each side, clipped to the slice. Labels [1, 0, 0].
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The study's five prompts: the default of every task (``parse_prompt_types(None)`` / ``'all'``).
STUDY_PROMPTS = ("one_central_point", "one_random_point", "three_random_points", "bound_box", "larger_box")
PROMPT_TYPES = STUDY_PROMPTS  # the historical name, kept: code iterating PROMPT_TYPES means the five
# Extra types, usable by every task when named, never part of the default set.
EXTRA_PROMPTS = ("jittered_box", "center_and_negatives")
ALL_PROMPT_TYPES = STUDY_PROMPTS + EXTRA_PROMPTS  # the five first: their ids (prompt_type_id) never change
BOX_PROMPTS = ("bound_box", "larger_box", "jittered_box")
PROMPT_TITLES = {
    "one_central_point": "one central point",
    "one_random_point": "one random point",
    "three_random_points": "three random points",
    "bound_box": "bound box",
    "larger_box": "larger box",
    "jittered_box": "jittered box",
    "center_and_negatives": "center + 2 negatives",
}
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


@dataclass(frozen=True)
class Prompt:
    """points: float32 (P, 2) (x, y) or None; labels: int64 (P,) (1 = foreground, 0 = background) or
    None; box: float32 (4,) XYXY or None. A box and points together is one prompt (SAM takes both:
    interactive correction clicks on a box start)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None


def parse_prompt_types(text: str | None) -> list[str]:
    """'a,b' -> ['a', 'b'], checked against ALL_PROMPT_TYPES; None, '' or 'all' -> the study's five.

    The extra types (EXTRA_PROMPTS) are accepted only by name: 'all,jittered_box' is not a form.
    """
    if text in (None, "", "all"):
        return list(STUDY_PROMPTS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in ALL_PROMPT_TYPES]
    if unknown:
        raise ValueError(f"unknown prompt type(s) {unknown}; choose from {', '.join(ALL_PROMPT_TYPES)} "
                         f"('all' = the study's five)")
    return names


def prompt_type_id(prompt_type: str) -> int:
    """A stable integer per prompt type, for seeding (``child_rng`` keys): its index in ALL_PROMPT_TYPES.

    Equal to ``PROMPT_TYPES.index(t)`` for the study's five, so their draws are unchanged.
    """
    if prompt_type not in ALL_PROMPT_TYPES:
        raise ValueError(f"unknown prompt type {prompt_type!r}; choose from {', '.join(ALL_PROMPT_TYPES)}")
    return ALL_PROMPT_TYPES.index(prompt_type)


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
    return grow_box(bound_box(mask), (margin, margin), mask.shape)


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


def make_prompt(mask: np.ndarray, prompt_type: str, rng: np.random.Generator, *,
                box_jitter: int = DEFAULT_BOX_JITTER_PX,
                negative_margin: float = DEFAULT_NEGATIVE_MARGIN_PX) -> Prompt:
    """The ``prompt_type`` prompt for bool (H, W) ``mask``; random ones draw from ``rng``.

    ``box_jitter`` (px) is used only by ``jittered_box``, ``negative_margin`` (px) only by
    ``center_and_negatives``.
    """
    if prompt_type == "jittered_box":
        return Prompt(box=jittered_box(mask, rng, box_jitter))
    if prompt_type == "center_and_negatives":
        points = np.concatenate([central_point(mask), negative_points(mask, 2, rng, negative_margin)])
        return Prompt(points=points, labels=np.array([1, 0, 0], dtype=np.int64))
    if prompt_type == "one_central_point":
        points = central_point(mask)
    elif prompt_type == "one_random_point":
        points = random_points(mask, 1, rng)
    elif prompt_type == "three_random_points":
        points = random_points(mask, 3, rng)
    elif prompt_type == "bound_box":
        return Prompt(box=bound_box(mask))
    elif prompt_type == "larger_box":
        return Prompt(box=larger_box(mask))
    else:
        raise ValueError(f"unknown prompt type {prompt_type!r}; choose from {', '.join(ALL_PROMPT_TYPES)}")
    return Prompt(points=points, labels=np.ones(len(points), dtype=np.int64))


def is_box_prompt(prompt_type: str) -> bool:
    """True for the types whose prompt is a box (no points)."""
    return prompt_type in BOX_PROMPTS
