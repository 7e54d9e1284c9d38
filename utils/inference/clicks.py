"""Correction clicks: where the next click goes on a wrong mask, the protocol they serve, and what a click may change.

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

What a click may change (:class:`Refinement`, :func:`accepted_region`): what a correction click may change: the whole mask (``global``, SAM's rule) or only the part near the click
(``local``, FocalClick's progressive merge inside an nnInteractive-style window).

``local`` (:func:`accepted_region`): after a click at (x, y), the new prediction is taken only inside the
8-connected component of (old mask XOR new mask) that holds the click, searched inside a square window of
``window`` px centred on the click (0 = the whole slice); when that component touches the window's edge
(and the window is not yet the whole slice) the window grows by ``growth`` and the component is searched
again, up to :data:`MAX_WINDOW_GROWTH` times its first side (nnInteractive's 4x), where the change is cut
at the window's edge. Everywhere else the old mask stays. When the decoder did not change the clicked pixel at all, there is
no such component and nothing changes: the merge is a veto, never a repair.

How this relates to the field (read, not copied):
- FocalClick (Chen et al. 2022), ``FocalPredictor.progressive_merge``: the component of (previous XOR new)
  holding the click, added when the clicked pixel was background, removed when it was foreground; cv2's
  default 8-connectivity, over the whole image. Where the clicked pixel did not change, its label is the
  XOR's background and it takes every unchanged pixel; here that case keeps the old mask instead.
  FocalClick's window (its focus crop, 1.4x the changed region's box) bounds where its refiner predicts.
- nnInteractive (Isensee et al. 2025) predicts only in a patch around the newest interaction and pastes it
  back, enlarging the patch (1.5x, up to 4x) while the change touches its border: the window and growth here.

Masks are bool (H, W) slices; clicks (x, y) = (column, row). The low-res logits SAM feeds back as mask input
(N, 1, 256, 256) cover the padded square frame of the longest-side resize, so a slice region maps to it by
:func:`low_res_region` whatever the encoder's input size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch

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

REFINE_MODES = ("global", "local")
MERGE_CONNECTIVITY = 8  # FocalClick's (cv2's default): a change touching at a corner is one change
LOW_RES_SIDE = 256  # SAM's low-res logits: (N, 1, 256, 256) over the padded square input frame
MAX_WINDOW_GROWTH = 4.0  # nnInteractive's limit: a window grows to at most 4x its first side


@dataclass(frozen=True)
class Refinement:
    """How a round's new mask replaces the old one: ``mode`` global | local; for local, the square ``window``
    (px side centred on the click, 0 = the whole slice) and the ``growth`` factor applied while the accepted
    change touches the window's edge."""

    mode: str = "global"
    window: int = 0
    growth: float = 1.4

    def __post_init__(self):
        if self.mode not in REFINE_MODES:
            raise ValueError(f"refine {self.mode!r}: choose from {', '.join(REFINE_MODES)}")
        if int(self.window) != self.window or self.window < 0:
            raise ValueError(f"refine window must be a whole number of px >= 0, got {self.window!r}")
        if not self.growth > 1.0:
            raise ValueError(f"refine growth must be > 1, got {self.growth!r}")

    @property
    def local(self) -> bool:
        return self.mode == "local"

    def record(self) -> dict:
        """What results files and run keys record."""
        if not self.local:
            return {"mode": "global"}
        return {"mode": "local", "window": int(self.window), "growth": float(self.growth)}


def _window(x: int, y: int, side: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) of a square of ``side`` px centred on (x, y), clipped to the slice."""
    half = side / 2.0
    return (max(0, int(np.floor(y - half))), min(shape[0], int(np.ceil(y + half)) + 1),
            max(0, int(np.floor(x - half))), min(shape[1], int(np.ceil(x + half)) + 1))


def change_component(old: np.ndarray, new: np.ndarray, x: int, y: int) -> np.ndarray:
    """bool (H, W): the 8-connected component of (old XOR new) holding pixel (x, y); empty if it did not change."""
    changed = np.logical_xor(old, new)
    if not changed[y, x]:
        return np.zeros_like(changed)
    _, labels = cv2.connectedComponents(changed.astype(np.uint8), connectivity=MERGE_CONNECTIVITY)
    return labels == labels[y, x]


def accepted_region(old: np.ndarray, new: np.ndarray, x: int, y: int, refinement: Refinement) -> np.ndarray:
    """bool (H, W): where ``new`` replaces ``old`` after a click at (x, y) (module docstring); all True for global."""
    old, new = np.asarray(old, dtype=bool), np.asarray(new, dtype=bool)
    if old.shape != new.shape or old.ndim != 2:
        raise ValueError(f"expected two bool (H, W) masks of one shape, got {old.shape} and {new.shape}")
    if not refinement.local:
        return np.ones_like(old)
    h, w = old.shape
    first = float(refinement.window) if refinement.window else float(max(h, w)) * 2
    side = first
    while True:
        r0, r1, c0, c1 = _window(x, y, side, (h, w))
        part = change_component(old[r0:r1, c0:c1], new[r0:r1, c0:c1], x - c0, y - r0)
        whole = r0 == 0 and c0 == 0 and r1 == h and c1 == w
        touches = ((part[0].any() and r0 > 0) or (part[-1].any() and r1 < h)
                   or (part[:, 0].any() and c0 > 0) or (part[:, -1].any() and c1 < w))
        if whole or not touches or side >= first * MAX_WINDOW_GROWTH:
            region = np.zeros_like(old)
            region[r0:r1, c0:c1] = part
            return region
        side = min(side * refinement.growth, first * MAX_WINDOW_GROWTH)


def low_res_region(region: np.ndarray) -> np.ndarray:
    """bool (H, W) slice region -> bool (256, 256) on SAM's low-res frame (the longest side scaled to 256,
    padded at the bottom and right; nearest-neighbour)."""
    h, w = region.shape
    scale = LOW_RES_SIDE / max(h, w)
    rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
    small = cv2.resize(region.astype(np.uint8), (rw, rh), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = np.zeros((LOW_RES_SIDE, LOW_RES_SIDE), dtype=bool)
    out[:rh, :rw] = small
    return out


def merge_low_res(region: np.ndarray, new_low: torch.Tensor, old_low: torch.Tensor) -> torch.Tensor:
    """float (1, 256, 256): the new low-res logits inside bool (H, W) slice ``region`` (on the low-res frame,
    :func:`low_res_region`), the old elsewhere, so the next round's mask input is the merged mask."""
    inside = torch.from_numpy(low_res_region(region)).to(new_low.device)[None]
    return torch.where(inside, new_low, old_low.to(new_low.device, new_low.dtype))
