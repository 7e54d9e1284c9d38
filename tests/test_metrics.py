import numpy as np
import torch
from monai.metrics import compute_dice

from utils.eval.dice import batch_dice, dice_score, summarise_dice


def test_dice_matches_monai_on_random_masks():
    rng = np.random.default_rng(0)
    pred = rng.random((6, 32, 32)) > 0.5
    target = rng.random((6, 32, 32)) > 0.6
    ours = batch_dice(torch.from_numpy(pred), torch.from_numpy(target))
    theirs = compute_dice(
        torch.from_numpy(pred[:, None]).float(), torch.from_numpy(target[:, None]).float(), include_background=True
    )[:, 0]
    assert torch.allclose(ours, theirs.double(), atol=1e-6)
    assert dice_score(pred[0], target[0]) == float(ours[0])


def test_dice_hand_computed():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :2] = True  # 2 px
    b[0, 1:4] = True  # 3 px, overlap 1
    assert dice_score(a, b) == 2 * 1 / 5
    assert dice_score(a, a) == 1.0
    assert dice_score(a, np.zeros_like(a)) == 0.0
    assert dice_score(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_summary_is_mean_over_organs_not_samples():
    summary = summarise_dice([(6, 1.0), (6, 0.8), (6, 0.9), (12, 0.2)])
    assert summary["organs"]["liver"]["n"] == 3
    assert abs(summary["organs"]["liver"]["dice"] - 0.9) < 1e-12
    assert summary["organs"]["right_adrenal_gland"]["n"] == 1
    assert abs(summary["mDice"] - (0.9 + 0.2) / 2) < 1e-12
