"""Task 3's classification scores: per-organ accuracy, weighted and unweighted averages, the
majority-class baseline, and the confusion matrix.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from utils.core.organs import NUM_ORGANS, organ_name


def accuracy_summary(truth: Sequence[int], predicted: Sequence[int], train_truth: Sequence[int] | None = None) -> dict:
    """Per-organ accuracy, sample counts and shares; the sample-weighted average (= overall accuracy),
    the unweighted mean over organs, and the majority-class baseline (the most frequent training organ,
    or the most frequent organ in ``truth`` without training labels)."""
    truth = np.asarray(truth)
    predicted = np.asarray(predicted)
    organs = {}
    for label in range(1, NUM_ORGANS + 1):
        hit = truth == label
        if hit.any():
            organs[organ_name(label)] = {"accuracy": float((predicted[hit] == label).mean()), "n": int(hit.sum()),
                                         "share": float(hit.mean())}
    weighted = sum(v["accuracy"] * v["n"] for v in organs.values()) / max(len(truth), 1)
    reference = np.asarray(train_truth) if train_truth is not None else truth
    majority = int(np.bincount(reference, minlength=NUM_ORGANS + 1)[1:].argmax() + 1)
    return {
        "organs": organs,
        "weighted_average": float(weighted),
        "mean": float(np.mean([v["accuracy"] for v in organs.values()])) if organs else float("nan"),
        "majority_baseline": float((truth == majority).mean()) if len(truth) else float("nan"),
        "majority_organ": organ_name(majority),
        "n": int(len(truth)),
    }


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int]) -> np.ndarray:
    """(13, 13) counts: rows true organ, columns predicted organ (labels 1..13)."""
    matrix = np.zeros((NUM_ORGANS, NUM_ORGANS), dtype=np.int64)
    for t, p in zip(truth, predicted):
        matrix[int(t) - 1, int(p) - 1] += 1
    return matrix
