"""The study's five prompts, made from a slice's ground-truth organ mask.

All coordinates are (x, y) = (column, row) in slice pixels; boxes are XYXY with inclusive pixel
indices. Every point prompt is positive (label 1) and lies inside the organ. An organ split into
several pieces on a slice is one target: its prompts are drawn from, and its box bounds, all pieces.

``three_random_points`` is three distinct positive points (the study's definition), not SAM-Med2D's
"3 points" of one positive and two negatives.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PROMPT_TYPES = ("one_central_point", "one_random_point", "three_random_points", "bound_box", "larger_box")
PROMPT_TITLES = {
    "one_central_point": "one central point",
    "one_random_point": "one random point",
    "three_random_points": "three random points",
    "bound_box": "bound box",
    "larger_box": "larger box",
}
# The larger box grows the tight box by this many pixels in width and in height (half on each
# side), as the study words it, then is clipped to the slice.
LARGER_BOX_GROWTH_PX = 5.0


@dataclass(frozen=True)
class Prompt:
    """points: float32 (P, 2) (x, y) or None; labels: int64 (P,) (1 = foreground) or None;
    box: float32 (4,) XYXY or None."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None


def parse_prompt_types(text: str | None) -> list[str]:
    """'a,b' -> ['a', 'b'], checked against PROMPT_TYPES; None or 'all' -> all five."""
    if text in (None, "", "all"):
        return list(PROMPT_TYPES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in PROMPT_TYPES]
    if unknown:
        raise ValueError(f"unknown prompt type(s) {unknown}; choose from {', '.join(PROMPT_TYPES)}")
    return names


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


def larger_box(mask: np.ndarray, growth: float = LARGER_BOX_GROWTH_PX) -> np.ndarray:
    """(4,) tight box grown by ``growth`` px in width and in height, clipped to the slice."""
    x0, y0, x1, y1 = bound_box(mask)
    h, w = mask.shape
    half = growth / 2.0
    return np.array(
        [max(x0 - half, 0.0), max(y0 - half, 0.0), min(x1 + half, w - 1.0), min(y1 + half, h - 1.0)],
        dtype=np.float32,
    )


def make_prompt(mask: np.ndarray, prompt_type: str, rng: np.random.Generator) -> Prompt:
    """The ``prompt_type`` prompt for bool (H, W) ``mask``; random ones draw from ``rng``."""
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
        raise ValueError(f"unknown prompt type {prompt_type!r}; choose from {', '.join(PROMPT_TYPES)}")
    return Prompt(points=points, labels=np.ones(len(points), dtype=np.int64))


def is_box_prompt(prompt_type: str) -> bool:
    return prompt_type in ("bound_box", "larger_box")
