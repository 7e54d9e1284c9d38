"""Start prompts and correction clicks of simulated interactive sessions, as TRAINING draws them.

Evaluation places each correction click by a fixed rule (:mod:`utils.inference.clicks`, ``center``: the
deepest pixel of the largest error). Training draws them at random instead, so that a decoder sees the
spread of clicks a person makes rather than the evaluation's one rule (and is not fitted to that rule):

- :func:`sample_training_click`: uniform over the error region (prediction XOR truth), labelled by the
  kind of the pixel drawn: 1 (positive) in the missed organ (truth & ~pred), 0 (negative) in the leak
  (pred & ~truth). This is SAM's training rule ("subsequent points are selected uniformly from the
  error region", Kirillov et al. 2023, appendix, training algorithm) and SAM-Med2D's. A negative then
  comes with probability = the leak's share of the error. ``negative_share`` overrides that share (an
  emphasis on negative clicks, say): when both kinds exist, the leak is chosen with that probability
  and the pixel drawn uniformly inside the chosen kind.
- :func:`inner_half_click` (RITM's ``get_next_points``): in the larger of the missed and leaked regions,
  "larger" by the deepest pixel (L2 distance transform of each region padded by background, so the slice
  border counts as boundary; a tie goes to the missed region, a positive click, where RITM's goes to the
  leak), a pixel drawn uniformly among those deeper than half that maximum depth. After a tight box the
  errors are thin rims: this puts clicks inside the error, as the evaluation's ``center`` rule does, not on
  its edge.
- :func:`draw_training_click`: the rule a training run uses (``uniform`` | ``inner_half`` | ``center``, the
  evaluation's own deterministic rule), with a share of clicks drawn as SAM 2 mixes them in: a positive
  point uniform over the organ itself (``truth_share``), whatever the error.
- :func:`draw_start_prompt`: the session's first prompt, per sample: with probability ``box_fraction``
  the tight box with each side moved by up to ``box_jitter`` px (:func:`utils.inference.prompts.
  jittered_box`), else one positive point drawn uniformly inside the organ (SAM's starts: a box or a
  point, equally likely; MedSAM's box jitter).

Coordinates are (x, y) = (column, row) slice pixels; boxes XYXY. Every draw comes from the caller's
seeded ``np.random.Generator`` (``utils.core.seeding.child_rng``), so a sample's session does not
depend on its batch. These functions work on numpy arrays only: nothing here can carry a gradient.
"""
from __future__ import annotations

import cv2
import numpy as np

from utils.inference.clicks import Click, next_click
from utils.inference.prompts import DEFAULT_BOX_JITTER_PX, Prompt, jittered_box, random_points


def _bool_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.dtype != bool or truth.dtype != bool:
        raise TypeError(f"expected bool masks, got {pred.dtype} and {truth.dtype} (threshold logits first)")
    if pred.ndim != 2 or pred.shape != truth.shape:
        raise ValueError(f"expected two bool (H, W) masks of one shape, got {pred.shape} and {truth.shape}")
    return pred, truth


def sample_training_click(pred: np.ndarray, truth: np.ndarray, rng: np.random.Generator,
                          negative_share: float | None = None) -> Click | None:
    """A random correction click for bool (H, W) ``pred`` against bool (H, W) ``truth``; None if equal.

    ``negative_share`` None: one pixel uniform over the whole error region (SAM, SAM-Med2D). A float in
    [0, 1]: when the prediction both misses and leaks, the leak is clicked with this probability (one
    ``rng.random()`` draw first); then a pixel uniform within the chosen kind. The label is the truth at
    the pixel: 1 where the organ was missed, 0 where the prediction leaked.
    """
    pred, truth = _bool_pair(pred, truth)
    missed = truth & ~pred
    leak = pred & ~truth
    if negative_share is None:
        region = missed | leak
    else:
        if not 0.0 <= negative_share <= 1.0:
            raise ValueError(f"negative_share must be in [0, 1] or None, got {negative_share!r}")
        has_missed, has_leak = bool(missed.any()), bool(leak.any())
        if has_missed and has_leak:
            region = leak if rng.random() < negative_share else missed
        else:
            region = leak if has_leak else missed
    flat = np.flatnonzero(region)
    if flat.size == 0:
        return None
    row, col = divmod(int(flat[int(rng.integers(flat.size))]), truth.shape[1])
    return Click(col, row, int(truth[row, col]))


CLICK_SAMPLINGS = ("uniform", "inner_half", "center")


def _depth(region: np.ndarray) -> np.ndarray:
    """float32 (H, W) L2 distance of each region pixel to the nearest non-region pixel, the border counting
    as non-region (pad first: cv2.distanceTransform treats outside the image as far)."""
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def inner_half_click(pred: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> Click | None:
    """RITM's training click for bool (H, W) ``pred`` against ``truth``; None if they are equal.

    The region (missed = truth & ~pred, or leak = pred & ~truth) whose deepest pixel is deeper (tie: missed),
    then one pixel uniform among that region's pixels deeper than half that maximum; label = the truth there."""
    pred, truth = _bool_pair(pred, truth)
    missed, leak = truth & ~pred, pred & ~truth
    if not (missed.any() or leak.any()):
        return None
    depth_missed, depth_leak = _depth(missed), _depth(leak)
    depth = depth_missed if depth_missed.max() >= depth_leak.max() else depth_leak
    flat = np.flatnonzero(depth > depth.max() / 2.0)
    row, col = divmod(int(flat[int(rng.integers(flat.size))]), truth.shape[1])
    return Click(col, row, int(truth[row, col]))


def draw_training_click(pred: np.ndarray, truth: np.ndarray, rng: np.random.Generator, sampling: str = "uniform",
                        truth_share: float = 0.0, negative_share: float | None = None) -> Click | None:
    """One training click for bool (H, W) ``pred`` against ``truth`` (None if they are equal).

    With probability ``truth_share`` (one ``rng.random()`` draw, made only when the share is > 0): a positive
    point uniform over the organ (SAM 2's clicks from the ground truth). Otherwise ``sampling``: ``uniform``
    (:func:`sample_training_click`, with ``negative_share``), ``inner_half`` (:func:`inner_half_click`) or
    ``center`` (the evaluation's rule, :func:`utils.inference.clicks.next_click`)."""
    if sampling not in CLICK_SAMPLINGS:
        raise ValueError(f"unknown click sampling {sampling!r}; choose from {', '.join(CLICK_SAMPLINGS)}")
    pred, truth = _bool_pair(pred, truth)
    if not (pred ^ truth).any():
        return None
    if truth_share > 0 and rng.random() < truth_share and truth.any():
        (x, y), = random_points(truth, 1, rng)
        return Click(int(x), int(y), 1)
    if sampling == "inner_half":
        return inner_half_click(pred, truth, rng)
    if sampling == "center":
        return next_click(pred, truth, "center")
    return sample_training_click(pred, truth, rng, negative_share)


def draw_start_prompt(mask: np.ndarray, rng: np.random.Generator, box_fraction: float = 0.5,
                      box_jitter: int = DEFAULT_BOX_JITTER_PX) -> Prompt:
    """The first prompt of a simulated session for the non-empty bool (H, W) organ ``mask``.

    One ``rng.random()`` draw picks the kind (a box when below ``box_fraction``: 1.0 = always a box,
    0.0 = always a point), then the box's side shifts or the point are drawn from the same ``rng``.
    Box: float32 (4,) XYXY, each side moved by an integer in [-box_jitter, box_jitter] px (0 = the tight
    box). Point: float32 (1, 2) (x, y) uniform over the organ's pixels, label 1.
    """
    if not 0.0 <= box_fraction <= 1.0:
        raise ValueError(f"box_fraction must be in [0, 1], got {box_fraction!r}")
    if rng.random() < box_fraction:
        return Prompt(box=jittered_box(mask, rng, box_jitter))
    return Prompt(points=random_points(mask, 1, rng), labels=np.ones(1, dtype=np.int64))
