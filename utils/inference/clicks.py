"""Correction clicks: where the next click goes on a wrong mask, and the protocol they serve.

The protocol (SAM's own iterative one, as SAM-Med2D, micro-sam and Mazurowski et al. evaluate it):
round 0 decodes a start prompt; each later round adds ONE correction click per sample where its mask
is wrong, and decodes the start prompt plus all clicks so far, with the previous round's low-res
logits as SAM's mask input (unless switched off). A sample whose mask is already perfect gets no more
clicks and keeps its Dice. Dice after 0..N clicks per sample is the curve; NoC@t is the number of
clicks needed to reach Dice >= t, counted as N when never reached.

Click rules (:func:`next_click`), on the error region = prediction XOR truth:

- ``center`` (default; Mazurowski et al., RITM-style): the largest 4-connected component among the
  components of missed organ (truth & ~pred, "FN") and of leak (pred & ~truth, "FP"), labelled
  separately so a component is all of one kind; the click is its pixel farthest from the
  component's boundary (L2 distance transform on the padded component); label 1 for FN, 0 for FP.
  4-connectivity: pixels touching only at a corner are separate errors, so the aliased one-pixel
  stair-steps along a contour do not chain into one long "large" region with no interior.
  Ties: the larger component wins; an FN/FP tie goes to FN (a positive click); within a kind the
  component whose first pixel comes first in raster order.
- ``random`` (SAM-Med2D): a seeded uniform draw over all error pixels; label by the pixel's kind.

Coordinates are (x, y) = (column, row) in slice pixels; boxes XYXY. Everything here is independent of
SAM: :func:`utils.inference.rounds.run_rounds` decodes through a callable, so tests can drive it with a
stand-in.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from utils.inference.prompts import Prompt, central_point

CLICK_RULES = ("center", "random")
CONNECTIVITY = 4  # of error components for the ``center`` rule (see the module docstring)


class Click(NamedTuple):
    """One correction click: (x, y) = (column, row) slice pixel; label 1 = organ (positive), 0 = background."""

    x: int
    y: int
    label: int


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.ndim != 2 or pred.shape != truth.shape:
        raise ValueError(f"expected two bool (H, W) masks of one shape, got {pred.shape} and {truth.shape}")
    return pred, truth


def _largest_component(region: np.ndarray) -> tuple[int, np.ndarray]:
    """(pixel count, bool mask) of the largest CONNECTIVITY-connected component of a non-empty region."""
    n, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=CONNECTIVITY)
    sizes = np.bincount(labels.ravel(), minlength=n)[1:]
    k = int(np.argmax(sizes))  # first of the largest: lowest label = first in raster order
    return int(sizes[k]), labels == k + 1


def next_click(pred: np.ndarray, truth: np.ndarray, rule: str = "center",
               rng: np.random.Generator | None = None) -> Click | None:
    """The next correction click for bool (H, W) ``pred`` against bool (H, W) ``truth``, or None if equal.

    ``rule`` is ``center`` (deepest pixel of the largest FN or FP component) or ``random`` (uniform over
    all error pixels, drawn from ``rng``, required then). See the module docstring for the details.
    """
    if rule not in CLICK_RULES:
        raise ValueError(f"unknown click rule {rule!r}; choose from {', '.join(CLICK_RULES)}")
    pred, truth = _check_pair(pred, truth)
    missed = truth & ~pred
    leak = pred & ~truth
    if not (missed.any() or leak.any()):
        return None
    if rule == "random":
        if rng is None:
            raise ValueError("the random click rule needs a seeded rng (np.random.Generator)")
        rows, cols = np.nonzero(missed | leak)
        i = int(rng.integers(rows.size))
        r, c = int(rows[i]), int(cols[i])
        return Click(c, r, int(missed[r, c]))
    best: tuple[int, int, np.ndarray] | None = None
    for label, region in ((1, missed), (0, leak)):
        if region.any():
            size, component = _largest_component(region)
            if best is None or size > best[0]:  # strict: an FN/FP tie stays FN
                best = (size, label, component)
    (x, y), = central_point(best[2])
    return Click(int(x), int(y), best[1])


def with_click(prompt: Prompt, click: Click) -> Prompt:
    """``prompt`` with ``click`` appended to its points/labels; a box stays (SAM takes box + points)."""
    point = np.array([[click.x, click.y]], dtype=np.float32)
    label = np.array([click.label], dtype=np.int64)
    if prompt.points is None:
        return Prompt(points=point, labels=label, box=prompt.box)
    return Prompt(points=np.concatenate([prompt.points.astype(np.float32), point]),
                  labels=np.concatenate([prompt.labels.astype(np.int64), label]), box=prompt.box)
