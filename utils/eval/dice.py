"""Dice, the study's one segmentation metric, and its aggregation over organs.

Dice = 2|A ∩ B| / (|A| + |B|), the standard definition. (The study report writes "union" in the
denominator; 2|A ∩ B| / |A ∪ B| is not bounded by 1, so the suite uses the standard formula.)
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np
import torch

from utils.core.organs import organ_name


def dice_score(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Dice of two binary masks of the same shape. Both empty -> 1.0 (perfect agreement)."""
    pred = torch.as_tensor(pred).bool()
    target = torch.as_tensor(target).bool()
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    total = int(pred.sum()) + int(target.sum())
    if total == 0:
        return 1.0
    return 2.0 * int((pred & target).sum()) / total


def batch_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) Dice of N pairs of binary masks (N, H, W); an empty pair scores 1."""
    pred = pred.bool().flatten(1)
    target = target.bool().flatten(1)
    inter = (pred & target).sum(1).double()
    total = (pred.sum(1) + target.sum(1)).double()
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def summarise_dice(records: Iterable[tuple[int, float]]) -> dict:
    """(organ label, Dice) records -> {"mDice", "organs": {name: {"dice", "n"}}}.

    Per organ: mean over its samples. mDice: mean over the organs that have samples.
    """
    per_organ: dict[int, list[float]] = defaultdict(list)
    for organ, dice in records:
        per_organ[int(organ)].append(float(dice))
    organs = {
        organ_name(o): {"dice": float(np.mean(v)), "n": len(v)} for o, v in sorted(per_organ.items())
    }
    mdice = float(np.mean([v["dice"] for v in organs.values()])) if organs else float("nan")
    return {"mDice": mdice, "organs": organs}
