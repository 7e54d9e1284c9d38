"""Does a click do what it says? Per round: whether the decoder turned the clicked pixel to the click's label,
and the pixels it fixed and broke inside and outside the click's own change.

For one round of one sample (``old`` = the mask the click was placed on, ``new`` = what the decoder returned
for it, before any local merge: this measures the decoder, not the refinement; ``truth`` the organ):

- ``corrected``: 1 if ``new`` at the clicked pixel equals the click's label (1 = organ), else 0;
- the click's change: the 8-connected component of (old XOR new) holding the clicked pixel
  (:func:`utils.inference.clicks.change_component`; empty when the clicked pixel did not change);
- ``fixed``: pixels wrong in ``old`` and right in ``new``; ``broken``: right in ``old``, wrong in ``new``;
  each counted ``inside`` and ``outside`` the click's change.

A decoder that corrects the pixel it is told to has ``corrected`` near 1; one whose changes away from the
click break more than they fix (broken_outside > fixed_outside) is what local refinement guards against.
"""
from __future__ import annotations

import numpy as np

from utils.inference.clicks import change_component

RESPONSE_FIELDS = ("corrected", "fixed_inside", "broken_inside", "fixed_outside", "broken_outside")


def click_response(old: np.ndarray, new: np.ndarray, truth: np.ndarray, x: int, y: int, label: int) -> np.ndarray:
    """float64 (5,) in :data:`RESPONSE_FIELDS` order for bool (H, W) ``old``/``new``/``truth`` and a click at
    (x, y) = (column, row) with ``label`` (1 positive, 0 negative)."""
    old, new, truth = (np.asarray(a, dtype=bool) for a in (old, new, truth))
    if not old.shape == new.shape == truth.shape or old.ndim != 2:
        raise ValueError(f"expected bool (H, W) masks of one shape, got {old.shape}, {new.shape}, {truth.shape}")
    inside = change_component(old, new, x, y)
    fixed = (old != truth) & (new == truth)
    broken = (old == truth) & (new != truth)
    return np.array([float(new[y, x] == bool(label)), (fixed & inside).sum(), (broken & inside).sum(),
                     (fixed & ~inside).sum(), (broken & ~inside).sum()], dtype=np.float64)


def summarise_responses(responses: np.ndarray) -> dict:
    """The click response of S samples over N rounds, float (S, N, 5) with NaN rows where a sample got no click.

    Returns {"rounds": rounds with a click, "corrected_share": share of them whose clicked pixel was corrected,
    "corrected_per_round": that share for rounds 1..N (None where no sample clicked), and the four pixel
    counts summed over every round and sample}."""
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 3 or responses.shape[2] != len(RESPONSE_FIELDS):
        raise ValueError(f"expected (S, N, {len(RESPONSE_FIELDS)}) click responses, got {responses.shape}")
    clicked = ~np.isnan(responses[..., 0])
    n = int(clicked.sum())
    per_round = [float(responses[clicked[:, r], r, 0].mean()) if clicked[:, r].any() else None
                 for r in range(responses.shape[1])]
    out = {"rounds": n, "corrected_share": float(responses[clicked][:, 0].mean()) if n else None,
           "corrected_per_round": per_round}
    for k, name in enumerate(RESPONSE_FIELDS[1:], start=1):
        out[name] = int(responses[clicked][:, k].sum()) if n else 0
    return out
