"""Dice AUC (utils.eval.auc) on hand-computed curves."""
import numpy as np
import pytest

from utils.eval.auc import cvpr25_dice_auc, dice_auc, with_dice_auc
from utils.eval.noc import summarise_rounds

CURVE = [0.5, 0.7, 0.6, 0.9]  # Dice after 0..3 clicks


def test_mean_rule_is_the_mean_of_the_points():
    # four unit bars: (0.5 + 0.7 + 0.6 + 0.9) / 4
    assert dice_auc(CURVE) == pytest.approx(2.7 / 4)


def test_trapezoid_rule_halves_the_end_points():
    # (0.5/2 + 0.7 + 0.6 + 0.9/2) / 3 = 2.0 / 3
    assert dice_auc(CURVE, rule="trapezoid") == pytest.approx(2.0 / 3)


def test_the_two_rules_differ_only_through_the_end_points():
    flat_ends = [0.6, 0.2, 1.0, 0.6]  # equal ends, mean of the ends = mean of the inside
    assert dice_auc(flat_ends) == pytest.approx(dice_auc(flat_ends, rule="trapezoid"))
    rising, falling = [0.2, 0.5, 0.8], [0.8, 0.5, 0.2]
    assert dice_auc(rising) == pytest.approx(dice_auc(falling))  # the mean rule ignores the order
    assert dice_auc(rising, "trapezoid") == pytest.approx(dice_auc(falling, "trapezoid"))


def test_bounds_and_a_single_round():
    assert dice_auc([1.0] * 6) == 1.0 and dice_auc([0.0] * 6) == 0.0
    assert dice_auc([1.0] * 6, "trapezoid") == 1.0
    assert dice_auc([0.42]) == pytest.approx(0.42) and dice_auc([0.42], "trapezoid") == pytest.approx(0.42)


def test_stacked_curves_give_one_auc_each_and_mean_of_aucs_is_auc_of_mean():
    curves = np.array([CURVE, [1.0, 0.0, 1.0, 0.0]])
    got = dice_auc(curves)
    assert got.shape == (2,)
    assert got == pytest.approx([2.7 / 4, 0.5])
    assert dice_auc(curves.mean(axis=0)) == pytest.approx(got.mean())


def test_cvpr25_auc_is_the_unnormalised_trapezoid_over_the_five_clicks():
    curve = [0.1, 0.5, 0.6, 0.7, 0.8, 0.9]  # box, then clicks 1..5; the box round is left out
    # (0.5 + 0.9) / 2 + 0.6 + 0.7 + 0.8 = 2.8
    assert cvpr25_dice_auc(curve) == pytest.approx(2.8)
    assert cvpr25_dice_auc([0.0] + [1.0] * 5) == pytest.approx(4.0)  # its maximum is n_clicks - 1
    assert cvpr25_dice_auc([0.9, 0.5, 0.6, 0.7, 0.8, 0.9]) == pytest.approx(2.8)  # round 0 does not count
    scipy = pytest.importorskip("scipy.integrate")
    assert cvpr25_dice_auc(curve) == pytest.approx(
        scipy.cumulative_trapezoid(np.array(curve[-5:]), np.arange(5))[-1])


def test_refusals():
    with pytest.raises(ValueError, match="last axis"):
        dice_auc([])
    with pytest.raises(ValueError, match="rule"):
        dice_auc(CURVE, rule="simpson")
    with pytest.raises(ValueError, match="n_clicks"):
        cvpr25_dice_auc(CURVE)  # rounds 0..3: fewer than the challenge's five clicks


def test_with_dice_auc_adds_per_organ_and_top_level():
    organs = [1, 1, 6]
    dice = np.array([[0.2, 0.6, 1.0], [0.4, 0.6, 0.8], [0.9, 0.9, 0.6]])
    summary = with_dice_auc(summarise_rounds(organs, dice))
    spleen, liver = summary["organs"]["spleen"], summary["organs"]["liver"]
    assert spleen["dice_auc"] == pytest.approx((0.3 + 0.6 + 0.9) / 3)
    assert liver["dice_auc"] == pytest.approx(0.8)
    assert summary["dice_auc"] == pytest.approx((spleen["dice_auc"] + liver["dice_auc"]) / 2)
    assert "dice_auc" not in summarise_rounds(organs, dice)  # a copy: the input summary is untouched
