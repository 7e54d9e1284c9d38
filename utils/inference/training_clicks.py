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
- :func:`draw_start_prompt`: the session's first prompt, per sample: with probability ``box_fraction``
  the tight box with each side moved by up to ``box_jitter`` px (:func:`utils.inference.prompts.
  jittered_box`), else one positive point drawn uniformly inside the organ (SAM's starts: a box or a
  point, equally likely; MedSAM's box jitter).

Coordinates are (x, y) = (column, row) slice pixels; boxes XYXY. Every draw comes from the caller's
seeded ``np.random.Generator`` (``utils.core.seeding.child_rng``), so a sample's session does not
depend on its batch. These functions work on numpy arrays only: nothing here can carry a gradient.
"""
from __future__ import annotations

import numpy as np

from utils.inference.clicks import Click
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
