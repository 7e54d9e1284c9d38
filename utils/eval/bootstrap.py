"""Bootstrap confidence intervals over validation volumes, from the per-sample records the tasks write.

Slices of one CT volume are not independent (neighbouring slices of one patient look alike), so the
unit resampled is the volume (case), never the slice or the (slice, organ) sample: each resample
draws ``n_volumes`` cases with replacement and takes all the samples of every drawn case, a case
drawn twice counting twice. The statistic is recomputed on each resample exactly as the table
computes it, and the interval is the percentile interval of those recomputed values.

The draw, so that anyone can redo it by hand: cases are sorted as strings (``np.unique``); with
``rng = np.random.default_rng(seed)``, resample ``r`` takes the cases at positions
``rng.integers(0, n_volumes, size=(resamples, n_volumes))[r]``. Bounds are
``np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])`` (linear interpolation).
The point estimate ("mean") is the statistic on the records as given, not the bootstrap mean.

Each function returns {"mean", "low", "high", "resamples", "seed", "unit": "volume", "confidence",
"n_volumes", "n_samples"}; :func:`bootstrap_difference` adds "excludes_zero". With the study's six
validation volumes there are only 462 distinct resamples: read the interval as a rough guide to
volume-to-volume spread, not as an exact coverage statement.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Literal, Sequence

import numpy as np

from utils.eval.dice import summarise_dice

DEFAULT_RESAMPLES = 1000  # percentile bounds of a 95 % interval settle to ~0.1 Dice point by 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0

Metric = Literal["mdice", "accuracy"]
Record = tuple[Hashable, int, float]  # (case, organ label 1..13, value: Dice, or 1/0 / True/False correct)


def triples(records: Iterable[dict], value: str = "dice") -> list[Record]:
    """Task records [{"case", "organ", value, ...}] -> [(case, organ, value)], in order."""
    return [(r["case"], int(r["organ"]), float(r[value])) for r in records]


def volume_weights(n_volumes: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """float64 (resamples, n_volumes): how many times each (sorted) case is drawn in each resample."""
    if n_volumes < 1:
        raise ValueError("a bootstrap needs at least one volume")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    draws = np.random.default_rng(seed).integers(0, n_volumes, size=(resamples, n_volumes))
    offsets = np.arange(resamples)[:, None] * n_volumes
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * n_volumes)
    return counts.reshape(resamples, n_volumes).astype(np.float64)


def _tables(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, int]:
    """(sums float64 (V, K), counts float64 (V, K), V): each (volume, organ)'s value sum and sample count."""
    if len(records) == 0:
        raise ValueError("no records to bootstrap")
    cases = np.array([str(r[0]) for r in records])
    organs = np.array([int(r[1]) for r in records])
    values = np.array([float(r[2]) for r in records], dtype=np.float64)
    _, case_idx = np.unique(cases, return_inverse=True)
    _, organ_idx = np.unique(organs, return_inverse=True)
    n_volumes, n_organs = case_idx.max() + 1, organ_idx.max() + 1
    sums = np.zeros((n_volumes, n_organs))
    counts = np.zeros((n_volumes, n_organs))
    np.add.at(sums, (case_idx, organ_idx), values)
    np.add.at(counts, (case_idx, organ_idx), 1.0)
    return sums, counts, int(n_volumes)


def _resampled(metric: Metric, weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(resamples,) statistic of each resample from volume weights (R, V) and per-volume tables (V, K)."""
    s, n = weights @ sums, weights @ counts  # (R, K)
    if metric == "accuracy":
        return s.sum(1) / n.sum(1)
    if metric == "mdice":
        present = n > 0  # organs with samples in this resample
        organ_mean = np.where(present, s / np.where(present, n, 1.0), 0.0)
        return organ_mean.sum(1) / present.sum(1)
    raise ValueError(f"metric must be 'mdice' or 'accuracy', got {metric!r}")


def _point(metric: Metric, records: Sequence[Record]) -> float:
    if metric == "mdice":
        return summarise_dice((organ, dice) for _, organ, dice in records)["mDice"]
    return float(np.mean([float(r[2]) for r in records]))


def _result(point: float, values: np.ndarray, resamples: int, seed: int, confidence: float,
            n_volumes: int, n_samples: int) -> dict:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"mean": float(point), "low": float(low), "high": float(high), "resamples": int(resamples),
            "seed": int(seed), "unit": "volume", "confidence": float(confidence), "n_volumes": n_volumes,
            "n_samples": n_samples}


def bootstrap_metric(
    records: Iterable[Record],
    metric: Metric = "mdice",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Interval of one metric over volumes. ``records``: (case, organ, value) per sample.

    metric "mdice": value = Dice; per organ the mean over its samples, then the mean over the organs
        present (in the resample): ``summarise_dice``'s mDice, which gives the point estimate.
    metric "accuracy": value = correct (1/0); correct samples / samples (sample-weighted).
    """
    records = list(records)
    sums, counts, n_volumes = _tables(records)
    values = _resampled(metric, volume_weights(n_volumes, resamples, seed), sums, counts)
    return _result(_point(metric, records), values, resamples, seed, confidence, n_volumes, len(records))


def bootstrap_mdice(records: Iterable[Record], resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                    confidence: float = DEFAULT_CONFIDENCE) -> dict:
    """Interval of mDice from (case, organ, dice) records; see :func:`bootstrap_metric`."""
    return bootstrap_metric(records, "mdice", resamples, seed, confidence)


def bootstrap_accuracy(records: Iterable[Record], resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                       confidence: float = DEFAULT_CONFIDENCE) -> dict:
    """Interval of sample-weighted accuracy from (case, organ, correct) records; see :func:`bootstrap_metric`."""
    return bootstrap_metric(records, "accuracy", resamples, seed, confidence)


def bootstrap_difference(
    records_a: Iterable[Record],
    records_b: Iterable[Record],
    metric: Metric = "mdice",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Interval of metric(a) - metric(b) for two paired runs over the same samples (e.g. fine-tuned
    minus original), with "excludes_zero": True when the interval lies wholly above or below 0.

    Paired: both record lists must hold the same (case, organ) samples in the same order (as two
    evaluations of one sample list write them), and each resample draws the same volumes for both.
    """
    records_a, records_b = list(records_a), list(records_b)
    if len(records_a) != len(records_b):
        raise ValueError(f"paired records differ in length: {len(records_a)} vs {len(records_b)}")
    for k, (a, b) in enumerate(zip(records_a, records_b)):
        if (str(a[0]), int(a[1])) != (str(b[0]), int(b[1])):
            raise ValueError(f"paired records differ at sample {k}: (case, organ) {a[:2]} vs {b[:2]}; "
                             "both runs must be scored on the same sample list")
    sums_a, counts, n_volumes = _tables(records_a)
    sums_b, _, _ = _tables(records_b)
    weights = volume_weights(n_volumes, resamples, seed)
    values = _resampled(metric, weights, sums_a, counts) - _resampled(metric, weights, sums_b, counts)
    point = _point(metric, records_a) - _point(metric, records_b)
    result = _result(point, values, resamples, seed, confidence, n_volumes, len(records_a))
    result["excludes_zero"] = bool(result["low"] > 0 or result["high"] < 0)
    return result


def format_interval(result: dict, scale: float = 100.0, digits: int = 1) -> str:
    """'91.6 [89.2, 93.1]' (values times ``scale``), with a trailing '*' when "excludes_zero" is true."""
    text = f"{result['mean'] * scale:.{digits}f} [{result['low'] * scale:.{digits}f}, {result['high'] * scale:.{digits}f}]"
    return text + ("*" if result.get("excludes_zero") else "")
