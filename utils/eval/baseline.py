"""Scoring the supervised 2-D baselines on Task 1's (slice, organ) samples with the suite's one Dice:
the whole prediction, and the prediction kept inside the organ's ground-truth box.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from utils.data.slice_store import SliceStore
from utils.eval.dice import batch_dice, summarise_dice
from utils.inference.prompts import bound_box
from utils.models.unet import predict_label_maps, restrict_to_box

# The two scored rows of Table 3 per architecture: the plain prediction, and the prediction kept only
# inside the organ's ground-truth box (the oracle box SAM's bound_box prompt gets).
EVAL_ROWS = {"none": False, "bound_box_crop": True}


# ---------------------------------------------------------------------------------------- evaluation
def _chunks(samples: Sequence[tuple[int, int]], rows_per_chunk: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive runs of samples touching at most ``rows_per_chunk`` distinct store rows."""
    chunk: list[tuple[int, int]] = []
    rows: set[int] = set()
    for sample in samples:
        row = int(sample[0])
        if row not in rows and len(rows) == rows_per_chunk:
            yield chunk
            chunk, rows = [], set()
        rows.add(row)
        chunk.append((row, int(sample[1])))
    if chunk:
        yield chunk


def _predict_rows(net: torch.nn.Module, store: SliceStore, rows: Iterable[int]) -> tuple[dict, dict]:
    """({row: uint8 (H, W) predicted label map}, {row: uint8 (H, W) true label}); one pass per slice size."""
    images: dict[int, np.ndarray] = {}
    labels: dict[int, np.ndarray] = {}
    for row in rows:
        images[row], labels[row] = store.load(row)
    by_size: dict[tuple[int, int], list[int]] = {}
    for row, image in images.items():
        by_size.setdefault(image.shape, []).append(row)
    predictions: dict[int, np.ndarray] = {}
    for group in by_size.values():
        maps = predict_label_maps(net, [images[r] for r in group]).numpy().astype(np.uint8)
        predictions.update(zip(group, maps))
    return predictions, labels


def evaluate_baseline_rows(
    net: torch.nn.Module,
    store: SliceStore,
    samples: Sequence[tuple[int, int]],
    rows: dict[str, bool] = EVAL_ROWS,
    batch_size: int = 8,
) -> dict[str, tuple[dict, list[dict]]]:
    """Several Table 3 rows from one prediction pass: {row name: (summary, records)}.

    rows: {name: restrict_to_boxes}, default ``EVAL_ROWS`` = {"none": False, "bound_box_crop": True}.
    See :func:`evaluate_baseline` for samples, summary and records.
    """
    records: dict[str, list[dict]] = {name: [] for name in rows}
    for chunk in _chunks(samples, batch_size):
        predictions, labels = _predict_rows(net, store, dict.fromkeys(r for r, _ in chunk))
        for name, restrict in rows.items():
            preds, trues = [], []
            for row, organ in chunk:
                true = labels[row] == organ
                pred = predictions[row] == organ
                if restrict:
                    if not true.any():
                        raise ValueError(f"sample (row {row}, organ {organ}): the organ is not on this slice, so it "
                                         "has no ground-truth box; pass samples of present organs (SampleIndex.samples)")
                    pred = restrict_to_box(pred, bound_box(true))
                preds.append(pred)
                trues.append(true)
            for (row, organ), d in zip(chunk, _dice_by_size(preds, trues)):
                record = store.records[row]
                records[name].append({"case": record.case_id, "z": record.z, "row": row, "organ": organ, "dice": d})
    return {name: (summarise_dice((r["organ"], r["dice"]) for r in recs), recs) for name, recs in records.items()}


def _dice_by_size(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray]) -> list[float]:
    """``batch_dice`` of bool (H, W) mask pairs, one call per mask size, in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, pred in enumerate(preds):
        groups.setdefault(pred.shape, []).append(k)
    out = [0.0] * len(preds)
    for idx in groups.values():
        dice = batch_dice(torch.from_numpy(np.stack([preds[k] for k in idx])),
                          torch.from_numpy(np.stack([trues[k] for k in idx])))
        for k, d in zip(idx, dice.tolist()):
            out[k] = d
    return out


def evaluate_baseline(
    net: torch.nn.Module,
    store: SliceStore,
    samples: Sequence[tuple[int, int]],
    restrict_to_boxes: bool,
    batch_size: int = 8,
) -> tuple[dict, list[dict]]:
    """Dice of every (store row, organ) sample of ``samples``, in their order, with the suite's Dice.

    samples: (store row, organ label) pairs, e.g. Task 1's validation samples
        (:class:`utils.data.samples.SampleIndex`: ``SampleIndex(store).split_samples("val")``)
        (with Task 1's base cache, cache row = store row). Each slice is predicted once per run of
        consecutive samples on it (``batch_size`` slices per forward pass).
    restrict_to_boxes: keep each organ's prediction only inside the tight box of its ground-truth mask
        (:func:`restrict_to_box` with ``utils.inference.prompts.bound_box``), the like-for-like row beside SAM's
        box prompt; False scores the plain argmax prediction.
    Returns (summary {"mDice", "organs": {name: {"dice", "n"}}} from ``summarise_dice``, records
    [{"case", "z", "row", "organ", "dice"}] one per sample, in sample order: Task 1's record shape).
    """
    name = "bound_box_crop" if restrict_to_boxes else "none"
    return evaluate_baseline_rows(net, store, samples, {name: restrict_to_boxes}, batch_size)[name]
