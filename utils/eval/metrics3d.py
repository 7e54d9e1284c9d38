"""Per-volume, per-organ 3-D metrics: Dice, HD95 in mm and normalised surface Dice (NSD), via MONAI.

Inputs are two label maps on the same voxel grid, uint8 (X, Y, Z) with BTCV labels 0..13 (any axis
order works as long as ``spacing`` follows the same order), and the voxel spacing in mm. Distances
are physical: MONAI scales voxel coordinates by the ``spacing`` passed, so anisotropic CT
(e.g. 0.8 x 0.8 x 5 mm) is measured in mm, not in voxels.

Rules (the suite's, stated once here):

- An organ absent from the ground truth is **not scored** in that volume (no Dice, HD95 or NSD;
  a prediction of it there is reported in ``VolumeScores.unscored_predictions`` as a voxel count,
  so false positives stay visible without entering the means).
- An organ present in the ground truth but with an **empty prediction** (a miss) gets Dice 0,
  NSD 0 and HD95 = the grid's diagonal in mm, ``sqrt(sum(((n_i - 1) * spacing_i) ** 2))``: the
  largest distance two voxel centres of this volume can be apart. No non-empty prediction can score
  a worse HD95, so a miss never looks better than a bad hit, and the value stays finite (MONAI
  returns ``inf`` here, which would make every mean ``inf``). The organ is flagged ``missed`` so
  callers can count misses.
- Boundaries are MONAI's: voxels of the mask with a 6-neighbour outside it (scipy binary erosion,
  XOR), with volume borders counting as outside. HD95 is MONAI's symmetric percentile Hausdorff:
  ``max(p95(d(pred -> gt)), p95(d(gt -> pred)))`` over boundary voxels, linear-interpolated
  percentiles (``torch.quantile``). NSD is MONAI's ``compute_surface_dice`` without sub-voxels:
  (boundary voxels of both masks within the tolerance of the other boundary) / (all boundary voxels).

Each organ is scored on a crop around the union of its two masks (plus a one-voxel margin, clipped
to the volume), which leaves every value unchanged (MONAI crops the same way for the distances) and
keeps memory small on 512 x 512 x 200 CT.
"""
from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from utils.core.organs import NUM_ORGANS, organ_name

# NSD tolerance per organ in mm, as in the FLARE22 evaluation (keys: BTCV labels 1..13).
NSD_TOLERANCE_MM: dict[int, float] = {
    1: 3.0,  # spleen
    2: 3.0,  # right kidney
    3: 3.0,  # left kidney
    4: 2.0,  # gallbladder
    5: 3.0,  # esophagus
    6: 5.0,  # liver
    7: 5.0,  # stomach
    8: 2.0,  # aorta
    9: 2.0,  # inferior vena cava
    # Portal & splenic veins are not a FLARE22 class; 2 mm, like the other vessels (aorta, IVC) there:
    # thin tubular structures whose boundaries are sharp in contrast CT, where a few mm is a large
    # fraction of the diameter (the portal vein is ~10-13 mm wide, the splenic vein less).
    10: 2.0,  # portal and splenic veins
    11: 5.0,  # pancreas
    12: 2.0,  # right adrenal gland
    13: 2.0,  # left adrenal gland
}


@dataclass(frozen=True)
class OrganScore:
    """One organ in one volume. hd95_mm in mm; dice and nsd in [0, 1].

    missed: the organ is in the ground truth but the prediction is empty (Dice 0, NSD 0 and HD95 =
    the volume's diagonal by rule, see the module docstring).
    """

    dice: float
    hd95_mm: float
    nsd: float
    missed: bool = False


@dataclass(frozen=True)
class VolumeScores:
    """The scores of one volume.

    organs: BTCV label -> OrganScore, for the organs present in the ground truth (label order).
    unscored_predictions: BTCV label -> predicted voxel count, for organs predicted but absent from
        the ground truth (false positives that no metric here scores).
    missed_hd95_mm: the HD95 given to a missed organ in this volume (its grid diagonal, mm).
    """

    organs: dict[int, OrganScore]
    unscored_predictions: dict[int, int] = field(default_factory=dict)
    missed_hd95_mm: float = float("nan")

    @property
    def n_missed(self) -> int:
        return sum(score.missed for score in self.organs.values())

    def to_dict(self) -> dict[str, dict]:
        """{organ name: {"dice", "hd95_mm", "nsd", "missed"}} of plain floats/bools, for JSON."""
        return {organ_name(label): asdict(score) for label, score in self.organs.items()}


def grid_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Largest distance in mm between two voxel centres of a grid: sqrt(sum(((n_i - 1) * s_i) ** 2))."""
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing))))


def _check_inputs(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, tuple]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}; "
                         "both must be label maps on the same voxel grid")
    if pred.ndim != 3:
        raise ValueError(f"expected 3-D label maps (X, Y, Z), got shape {pred.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be three positive voxel sizes in mm, got {spacing}")
    return pred, gt, spacing


def _require_scipy() -> None:
    if importlib.util.find_spec("scipy") is None:
        raise ImportError(
            "utils.eval.metrics3d needs scipy: MONAI computes mask boundaries (scipy.ndimage) and surface "
            "distances (scipy.spatial.KDTree) with it. Install it: pip install scipy (it belongs in requirements.txt)."
        )


def _union_crop(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of a | b grown by one voxel, clipped to the array."""
    union = a | b
    crop = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(union.any(axis=other))
        crop.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, union.shape[axis])))
    return tuple(crop)


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    """bool (X, Y, Z) -> float32 (1, 2, X, Y, Z): channel 0 background, channel 1 the organ."""
    fg = torch.from_numpy(np.ascontiguousarray(mask))
    return torch.stack([~fg, fg])[None].float()


def score_organ(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float], tolerance_mm: float,
                missed_hd95_mm: float | None = None) -> OrganScore:
    """Dice, HD95 (mm) and NSD of one binary organ, bool (X, Y, Z) masks, ``spacing`` mm per axis.

    ``gt_mask`` must be non-empty (absent organs are not scored). An empty ``pred_mask`` is a miss:
    Dice 0, NSD 0, HD95 ``missed_hd95_mm`` (default: the grid diagonal, ``grid_diagonal_mm``).
    """
    from monai.metrics import (
        compute_dice,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    _require_scipy()
    pred_mask = np.asarray(pred_mask, dtype=bool)
    gt_mask = np.asarray(gt_mask, dtype=bool)
    if not gt_mask.any():
        raise ValueError("score_organ: the ground-truth mask is empty; an absent organ is not scored")
    if not pred_mask.any():
        hd = grid_diagonal_mm(gt_mask.shape, spacing) if missed_hd95_mm is None else float(missed_hd95_mm)
        return OrganScore(dice=0.0, hd95_mm=hd, nsd=0.0, missed=True)
    crop = _union_crop(pred_mask, gt_mask)
    y_pred, y = _one_hot(pred_mask[crop]), _one_hot(gt_mask[crop])
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated argument internally (get_mask_edges always_return_as_numpy).
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        dice = compute_dice(y_pred, y, include_background=False)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[float(tolerance_mm)], include_background=False,
                                   spacing=spacing)
    values = [float(dice[0, 0]), float(hd95[0, 0]), float(nsd[0, 0])]
    if not all(math.isfinite(v) for v in values):  # both masks are non-empty: MONAI must give finite values
        raise RuntimeError(f"MONAI returned non-finite metrics {values} for two non-empty masks")
    return OrganScore(dice=values[0], hd95_mm=values[1], nsd=values[2], missed=False)


def score_volume(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float],
                 organs: Iterable[int] | None = None,
                 tolerances_mm: Mapping[int, float] = NSD_TOLERANCE_MM) -> VolumeScores:
    """Score a predicted label map against the ground truth, organ by organ.

    pred, gt: integer label maps (X, Y, Z) on the same grid, BTCV labels 0..13 (0 = background).
    spacing: voxel size in mm along the same three axes (e.g. ``Volume.spacing`` for RAS arrays, or
        the NIfTI header's ``get_zooms()[:3]`` for arrays in the file's own voxel order).
    organs: the labels to consider (default 1..13); of those, the ones absent from ``gt`` are skipped.
    tolerances_mm: NSD tolerance per label in mm (default FLARE22's, ``NSD_TOLERANCE_MM``).
    """
    pred, gt, spacing = _check_inputs(pred, gt, spacing)
    labels = list(range(1, NUM_ORGANS + 1)) if organs is None else sorted({int(o) for o in organs})
    for label in labels:
        organ_name(label)  # raises for a label outside 1..13
    missed_hd = grid_diagonal_mm(gt.shape, spacing)
    scores: dict[int, OrganScore] = {}
    unscored: dict[int, int] = {}
    for label in labels:
        gt_mask = gt == label
        pred_mask = pred == label
        if not gt_mask.any():
            count = int(pred_mask.sum())
            if count:
                unscored[label] = count
            continue
        scores[label] = score_organ(pred_mask, gt_mask, spacing, tolerances_mm[label], missed_hd95_mm=missed_hd)
    return VolumeScores(organs=scores, unscored_predictions=unscored, missed_hd95_mm=missed_hd)


def summarise_volumes(volumes: Mapping[str, VolumeScores]) -> dict:
    """Aggregate per-volume scores: per organ the mean over the volumes where it is scored, then the
    unweighted mean over organs.

    volumes: case id -> VolumeScores. Returns plain JSON-ready values::

        {"dice", "hd95_mm", "nsd",                       # means over organs (nan if nothing scored)
         "n_volumes", "n_missed",                        # volumes; (volume, organ) misses in all
         "organs": {name: {"dice", "hd95_mm", "nsd", "n_volumes", "n_missed"}},   # label order
         "volumes": {case: {name: {"dice", "hd95_mm", "nsd", "missed"}}}}
    """
    per_organ: dict[int, list[OrganScore]] = {}
    for scores in volumes.values():
        for label, score in scores.organs.items():
            per_organ.setdefault(label, []).append(score)
    organs = {}
    for label in sorted(per_organ):
        items = per_organ[label]
        organs[organ_name(label)] = {
            "dice": float(np.mean([s.dice for s in items])),
            "hd95_mm": float(np.mean([s.hd95_mm for s in items])),
            "nsd": float(np.mean([s.nsd for s in items])),
            "n_volumes": len(items),
            "n_missed": sum(s.missed for s in items),
        }

    def over_organs(key: str) -> float:
        return float(np.mean([o[key] for o in organs.values()])) if organs else float("nan")

    return {
        "dice": over_organs("dice"),
        "hd95_mm": over_organs("hd95_mm"),
        "nsd": over_organs("nsd"),
        "n_volumes": len(volumes),
        "n_missed": sum(o["n_missed"] for o in organs.values()),
        "organs": organs,
        "volumes": {case: scores.to_dict() for case, scores in volumes.items()},
    }
