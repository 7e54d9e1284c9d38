"""3-D metrics against hand-computed cases and a brute-force oracle, all with anisotropic spacing."""
import math

import numpy as np
import pytest

from utils.eval.metrics3d import (
    NSD_TOLERANCE_MM,
    OrganScore,
    VolumeScores,
    grid_diagonal_mm,
    score_organ,
    score_volume,
    summarise_volumes,
)

SPACING = (0.8, 0.8, 5.0)  # mm: in-plane 0.8, slices 5 apart
LIVER, AORTA, SPLEEN = 6, 8, 1


def boundary(mask):
    """Voxels of ``mask`` with a 6-neighbour outside it (the volume's outside counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for step in (1, -1):
            inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def brute_force(pred, gt, spacing, tolerance):
    """(HD95, NSD) from all pairwise boundary distances in mm: an oracle independent of MONAI."""
    bp = np.argwhere(boundary(pred)) * np.asarray(spacing)
    bg = np.argwhere(boundary(gt)) * np.asarray(spacing)
    pairwise = np.linalg.norm(bp[:, None, :] - bg[None, :, :], axis=-1)
    d_pred, d_gt = pairwise.min(axis=1), pairwise.min(axis=0)
    hd95 = max(np.percentile(d_pred, 95), np.percentile(d_gt, 95))
    nsd = ((d_pred <= tolerance).sum() + (d_gt <= tolerance).sum()) / (d_pred.size + d_gt.size)
    return float(hd95), float(nsd)


def test_identical_masks_score_perfectly():
    gt = np.zeros((12, 10, 6), np.uint8)
    gt[2:9, 3:8, 1:5] = LIVER
    gt[9:11, 1:3, 0:6] = AORTA  # touches the volume's first and last slice
    scores = score_volume(gt.copy(), gt, SPACING)
    assert set(scores.organs) == {LIVER, AORTA}
    for score in scores.organs.values():
        assert score == OrganScore(dice=1.0, hd95_mm=0.0, nsd=1.0, missed=False)


def test_two_planes_four_slices_apart_hd95_is_20_mm():
    # One-voxel-thick squares on slices 1 and 5: every boundary voxel's nearest partner is straight
    # above or below, 4 slices x 5 mm = 20 mm (in voxels it would be 4; with x/z swapped, 3.2).
    gt = np.zeros((8, 8, 7), bool)
    pred = np.zeros_like(gt)
    gt[2:6, 2:6, 1] = True
    pred[2:6, 2:6, 5] = True
    score = score_organ(pred, gt, SPACING, tolerance_mm=5.0)
    assert score.hd95_mm == pytest.approx(20.0)
    assert score.dice == 0.0 and score.nsd == 0.0 and not score.missed


def test_two_voxels_apart_along_all_three_axes():
    gt = np.zeros((8, 9, 6), bool)
    pred = np.zeros_like(gt)
    gt[2, 2, 1] = True
    pred[5, 6, 3] = True  # offset (3, 4, 2) voxels = (2.4, 3.2, 10) mm
    expected = math.sqrt(2.4**2 + 3.2**2 + 10.0**2)  # sqrt(116) = 10.770 mm
    assert score_organ(pred, gt, SPACING, 2.0).hd95_mm == pytest.approx(expected, rel=1e-6)


def test_shifted_thin_box_nsd_by_hand():
    # A 2x2-voxel column 4 slices long: every voxel is a boundary voxel. The prediction is shifted one
    # slice (5 mm) up. Per slice, a voxel's partner in the same slice is at 0 mm, else 5 mm away.
    # GT (slices 1-4): slice 1 has no predicted voxel -> 5 mm; slices 2-4 -> 0 mm.
    # Prediction (slices 2-5): slice 5 has no GT voxel -> 5 mm; slices 2-4 -> 0 mm.
    # Aorta (2 mm): (12 + 12) / (16 + 16) = 0.75. Liver (5 mm, inclusive): 1.0.
    gt = np.zeros((10, 8, 7), np.uint8)
    gt[3:5, 3:5, 1:5] = AORTA
    pred = np.roll(gt, 1, axis=2)
    assert NSD_TOLERANCE_MM[AORTA] == 2.0 and NSD_TOLERANCE_MM[LIVER] == 5.0
    aorta = score_volume(pred, gt, SPACING).organs[AORTA]
    assert aorta.nsd == pytest.approx(0.75)
    assert aorta.dice == pytest.approx(0.75)  # 2 * 12 / (16 + 16)
    assert aorta.hd95_mm == pytest.approx(5.0)
    liver = score_volume(np.where(pred > 0, LIVER, 0), np.where(gt > 0, LIVER, 0), SPACING).organs[LIVER]
    assert liver.nsd == pytest.approx(1.0)


def test_shifted_solid_box_matches_brute_force_oracle():
    gt = np.zeros((14, 12, 7), bool)
    gt[3:10, 2:9, 1:5] = True
    pred = np.zeros_like(gt)
    pred[5:12, 2:8, 2:6] = True  # shifted 2 voxels in x (1.6 mm) and 1 slice (5 mm), one column short
    for tolerance in (2.0, 3.0, 5.0):
        score = score_organ(pred, gt, SPACING, tolerance)
        hd95, nsd = brute_force(pred, gt, SPACING, tolerance)
        assert score.hd95_mm == pytest.approx(hd95, rel=1e-5)
        assert score.nsd == pytest.approx(nsd, rel=1e-6)
    # The oracle's NSD really depends on the tolerance here, so the comparison above is not vacuous.
    assert brute_force(pred, gt, SPACING, 2.0)[1] < brute_force(pred, gt, SPACING, 5.0)[1]


def test_absent_organ_is_not_scored_but_its_false_positive_is_reported():
    gt = np.zeros((10, 8, 6), np.uint8)
    gt[2:6, 2:6, 1:4] = LIVER
    pred = gt.copy()
    pred[7:9, 5:7, 2:4] = SPLEEN  # spleen predicted, not in the ground truth
    scores = score_volume(pred, gt, SPACING)
    assert list(scores.organs) == [LIVER]
    assert scores.unscored_predictions == {SPLEEN: 8}
    assert scores.n_missed == 0


def test_missed_organ_gets_zero_and_grid_diagonal_and_is_flagged():
    gt = np.zeros((10, 8, 6), np.uint8)
    gt[2:6, 2:6, 1:4] = LIVER
    gt[7:9, 5:7, 2:4] = AORTA
    pred = np.where(gt == AORTA, AORTA, 0).astype(np.uint8)  # liver not predicted at all
    scores = score_volume(pred, gt, SPACING)
    diagonal = math.sqrt((9 * 0.8) ** 2 + (7 * 0.8) ** 2 + (5 * 5.0) ** 2)  # 26.612 mm
    assert grid_diagonal_mm(gt.shape, SPACING) == pytest.approx(diagonal)
    assert scores.organs[LIVER] == OrganScore(dice=0.0, hd95_mm=pytest.approx(diagonal), nsd=0.0, missed=True)
    assert scores.missed_hd95_mm == pytest.approx(diagonal)
    assert not scores.organs[AORTA].missed and scores.n_missed == 1
    assert all(math.isfinite(v) for s in scores.organs.values() for v in (s.dice, s.hd95_mm, s.nsd))


def test_input_errors_say_what_was_expected():
    gt = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="same voxel grid"):
        score_volume(np.zeros((4, 4, 3), np.uint8), gt, SPACING)
    with pytest.raises(ValueError, match="spacing"):
        score_volume(gt, gt, (1.0, 1.0))
    with pytest.raises(ValueError, match="not scored"):
        score_organ(gt > 0, gt > 0, SPACING, 2.0)


def test_summary_means_over_volumes_then_over_organs():
    a = VolumeScores({LIVER: OrganScore(1.0, 0.0, 1.0), AORTA: OrganScore(0.5, 4.0, 0.5)})
    b = VolumeScores({LIVER: OrganScore(0.0, 30.0, 0.0, missed=True)})
    summary = summarise_volumes({"0001": a, "0002": b})
    assert summary["organs"]["liver"] == {"dice": 0.5, "hd95_mm": 15.0, "nsd": 0.5, "n_volumes": 2, "n_missed": 1}
    assert summary["organs"]["aorta"] == {"dice": 0.5, "hd95_mm": 4.0, "nsd": 0.5, "n_volumes": 1, "n_missed": 0}
    assert list(summary["organs"]) == ["liver", "aorta"]  # BTCV label order
    assert summary["dice"] == 0.5 and summary["hd95_mm"] == 9.5 and summary["nsd"] == 0.5
    assert summary["n_volumes"] == 2 and summary["n_missed"] == 1
    assert summary["volumes"]["0002"] == {"liver": {"dice": 0.0, "hd95_mm": 30.0, "nsd": 0.0, "missed": True}}
    assert math.isnan(summarise_volumes({})["dice"])
