"""Interactive-segmentation summaries: the number of clicks to reach a Dice (NoC@85, NoC@90), and
Dice-per-click curves per organ (:func:`summarise_rounds`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

NOC_THRESHOLDS = (0.85, 0.90)  # NoC@85 and NoC@90, the interactive-segmentation convention


def noc(dice_per_click: Sequence[float], threshold: float) -> float:
    """Clicks needed to reach Dice >= ``threshold``: 0 if the start prompt does; N if never reached.

    ``dice_per_click``: Dice after 0, 1, ..., N clicks (N + 1 values; N = the click rounds available).
    """
    dice = np.asarray(dice_per_click, dtype=np.float64)
    if dice.ndim != 1 or dice.size == 0:
        raise ValueError(f"expected Dice after 0..N clicks (a non-empty 1-D sequence), got shape {dice.shape}")
    reached = np.flatnonzero(dice >= threshold)
    return float(reached[0]) if reached.size else float(dice.size - 1)


def mean_noc(dice_curves: np.ndarray | Sequence[Sequence[float]], threshold: float) -> float:
    """Mean over samples of :func:`noc`; ``dice_curves`` is (S, N + 1), one curve per sample."""
    curves = np.asarray(dice_curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[0] == 0:
        raise ValueError(f"expected (samples, N + 1) Dice curves, got shape {curves.shape}")
    return float(np.mean([noc(c, threshold) for c in curves]))


def summarise_rounds(organs: Sequence[int], dice: np.ndarray,
                     thresholds: Sequence[float] = NOC_THRESHOLDS) -> dict:
    """Per-sample curves -> {"dice_per_click", "noc", "n", "organs": {name: {...same}}}.

    ``organs``: (S,) organ label per sample; ``dice``: (S, N + 1) (``Rounds.dice``, rows of many batches
    stacked). Per organ: the mean curve and mean NoC over its samples. Top level: both are means over
    ORGANS of the per-organ values (one convention for both, as mDice everywhere in the suite): a small
    organ counts as much as the liver, whose many slices would otherwise dominate NoC while mDice
    ignored them. With the same number of samples per organ this equals the mean over samples (the
    usual interactive-segmentation reading, "mean clicks per sample"). NoC keys are "85", "90".
    """
    from utils.core.organs import organ_name

    organs = np.asarray(organs)
    dice = np.asarray(dice, dtype=np.float64)
    if dice.ndim != 2 or len(organs) != len(dice):
        raise ValueError(f"expected (S,) organs and (S, N + 1) Dice, got {organs.shape} and {dice.shape}")

    def key(t: float) -> str:
        return f"{round(t * 100):d}"

    per_organ = {}
    for organ in sorted(set(organs.tolist())):
        rows = dice[organs == organ]
        per_organ[organ_name(int(organ))] = {
            "dice_per_click": rows.mean(axis=0).tolist(),
            "noc": {key(t): mean_noc(rows, t) for t in thresholds},
            "n": int(len(rows)),
        }
    curves = np.array([v["dice_per_click"] for v in per_organ.values()])
    return {
        "dice_per_click": curves.mean(axis=0).tolist() if len(curves) else [],
        "noc": {key(t): float(np.mean([v["noc"][key(t)] for v in per_organ.values()])) for t in thresholds}
        if per_organ else {},
        "n": int(len(dice)),
        "organs": per_organ,
    }
