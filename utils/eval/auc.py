"""Dice AUC: one number for a whole Dice-vs-clicks curve, beside NoC (:mod:`utils.eval.noc`).

NoC counts the clicks to a threshold and ignores everything else; the AUC weighs every round, so a
decoder whose clicks make the mask worse scores lower even when it reaches the threshold.

:func:`dice_auc` (the suite's): over rounds 0..N (the start prompt, then N clicks), the area under the
curve drawn as N + 1 unit-wide bars, one per round, divided by N + 1: the MEAN OF THE N + 1 POINTS.
It lies in [0, 1] whatever N (1 = perfect from the start prompt on), every round counts the same
(round 0, what the start prompt alone gives, and round N, what a person ends with, count fully, where
the trapezoid rule halves both ends), and it is linear in the curve, so the AUC of a mean curve is the
mean of the per-sample AUCs (the summaries' mean-over-organs curves and per-sample AUCs agree).
``rule="trapezoid"`` gives the trapezoid rule over 0..N divided by N (the end points at half weight).
(A trapezoid over 0..N divided by N + 1, the other reading of "divided by N + 1", would never reach 1.)

:func:`cvpr25_dice_auc` reproduces the summary of the CVPR 2025 challenge "Foundation Models for
Interactive 3D Biomedical Image Segmentation" for comparison with its papers: the challenge's evaluation
script (``CVPR25_iter_eval.py`` in the organisers' CVPR-MedSegFMCompetition repository) computes
DSC_AUC with ``scipy.integrate.cumulative_trapezoid`` at unit spacing over the Dice after clicks 1..5
only ("AUC is only over the point prompts since the bbox prompt is optional"; an earlier version of
that script integrated all six rounds, the box included), NOT normalised: its range is [0, 4] for five
clicks, which is why challenge papers report Dice AUCs such as 2.48. It is a different number from
:func:`dice_auc`: do not put the two in one column.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

AUC_RULES = ("mean", "trapezoid")
CVPR25_CLICKS = 5  # the challenge's refinement clicks after its box start


def _curves(dice_per_click) -> np.ndarray:
    curves = np.asarray(dice_per_click, dtype=np.float64)
    if curves.ndim == 0 or curves.shape[-1] == 0:
        raise ValueError(f"expected Dice after 0..N clicks along the last axis (N + 1 >= 1 values), got shape "
                         f"{curves.shape}")
    return curves


def _trapezoid(curves: np.ndarray) -> np.ndarray:
    """Unit-spacing trapezoid rule along the last axis (as scipy's cumulative_trapezoid(...)[-1], dx=1)."""
    return 0.5 * (curves[..., :-1] + curves[..., 1:]).sum(axis=-1)


def dice_auc(dice_per_click: Sequence[float] | np.ndarray, rule: str = "mean") -> float | np.ndarray:
    """Normalised area under Dice after 0..N clicks, in [0, 1]: a float for one curve (N + 1,), an array
    for curves stacked on leading axes (..., N + 1).

    ``mean`` (default): the mean of the N + 1 points (N + 1 unit bars / (N + 1)); ``trapezoid``: the
    trapezoid rule over 0..N divided by N (a single point, N = 0, is its own AUC). See the module docstring.
    """
    curves = _curves(dice_per_click)
    if rule == "mean":
        out = curves.mean(axis=-1)
    elif rule == "trapezoid":
        n = curves.shape[-1] - 1
        out = curves[..., 0] if n == 0 else _trapezoid(curves) / n
    else:
        raise ValueError(f"unknown AUC rule {rule!r}; choose from {', '.join(AUC_RULES)}")
    return float(out) if np.ndim(out) == 0 else out


def cvpr25_dice_auc(dice_per_click: Sequence[float] | np.ndarray, n_clicks: int = CVPR25_CLICKS) -> float | np.ndarray:
    """The CVPR 2025 interactive challenge's DSC_AUC: the unit-spacing trapezoid over the LAST ``n_clicks``
    values of Dice after 0..N clicks (the rounds after the start prompt), not normalised: in [0, n_clicks - 1].

    Needs N >= n_clicks >= 2 (for the challenge, a curve of rounds 0..5). Shapes as :func:`dice_auc`.
    """
    curves = _curves(dice_per_click)
    if n_clicks < 2 or curves.shape[-1] < n_clicks + 1:
        raise ValueError(f"the challenge's AUC needs a curve of rounds 0..N with N >= n_clicks >= 2; got "
                         f"{curves.shape[-1]} values and n_clicks={n_clicks}")
    out = _trapezoid(curves[..., -n_clicks:])
    return float(out) if np.ndim(out) == 0 else out


def with_dice_auc(summary: dict, rule: str = "mean") -> dict:
    """A copy of a :func:`utils.eval.noc.summarise_rounds` summary with "dice_auc" added at the top level
    and per organ (each from its own mean curve; with ``mean`` the top level is the mean over organs of theirs,
    as for the curve and NoC). A summary with an empty curve gets no top-level AUC."""
    out = dict(summary)
    out["organs"] = {name: dict(v, dice_auc=dice_auc(v["dice_per_click"], rule))
                     for name, v in summary.get("organs", {}).items()}
    if len(summary.get("dice_per_click", [])):
        out["dice_auc"] = dice_auc(summary["dice_per_click"], rule)
    return out
