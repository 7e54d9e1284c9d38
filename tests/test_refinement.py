"""Local refinement (FocalClick's merge in a growing window) and the click response, on hand-made masks,
and both inside the rounds protocol driven by a stand-in decoder."""
import numpy as np
import pytest
import torch

from utils.eval.click_response import click_response, summarise_responses
from utils.inference.prompts import Prompt
from utils.inference.clicks import (MAX_WINDOW_GROWTH, Refinement, accepted_region, change_component,
                                        low_res_region, merge_low_res)
from utils.inference.rounds import run_rounds

H = W = 64
LOCAL = Refinement("local")


def blank():
    return np.zeros((H, W), bool)


def organ_with_lobe():
    """truth: a body (rows 10..39, cols 10..29) and a lobe (rows 20..29, cols 30..41) touching it."""
    truth = blank()
    truth[10:40, 10:30] = True
    truth[20:30, 30:42] = True
    return truth


def test_a_click_inside_a_missed_lobe_adds_only_that_lobe():
    truth = organ_with_lobe()
    old = truth.copy()
    old[20:30, 30:42] = False  # the lobe missed
    new = truth.copy()
    new[50:60, 50:60] = True  # the decoder also leaks far away
    new[10:14, 10:30] = False  # and drops a rim of the body
    region = accepted_region(old, new, 36, 25, LOCAL)
    merged = np.where(region, new, old)
    assert np.array_equal(merged, truth)  # the lobe in, the leak and the lost rim refused
    assert region.sum() == 10 * 12


def test_a_leak_far_from_the_click_stays_as_it_was():
    truth = organ_with_lobe()
    old = truth.copy()
    old[20:30, 30:42] = False
    old[50:60, 50:60] = True  # a leak the click is not about
    new = truth.copy()  # the decoder removes the leak AND adds the lobe
    merged = np.where(accepted_region(old, new, 36, 25, LOCAL), new, old)
    assert merged[50:60, 50:60].all()  # the leak is still there: local refinement is a veto elsewhere
    assert merged[20:30, 30:42].all()


def test_a_perfect_mask_stays_perfect_and_an_unchanged_click_changes_nothing():
    truth = organ_with_lobe()
    new = truth.copy()
    new[0:5, 0:5] = True
    # the clicked pixel (inside the organ) did not change: no component, nothing accepted (FocalClick would
    # take every unchanged pixel here)
    assert not accepted_region(truth, new, 20, 20, LOCAL).any()
    assert not change_component(truth, new, 20, 20).any()


def test_global_accepts_everything():
    old, new = blank(), organ_with_lobe()
    assert accepted_region(old, new, 5, 5, Refinement("global")).all()


def test_the_window_grows_while_the_change_touches_its_edge_and_stops_at_four_times():
    old = blank()
    new = blank()
    new[30, 0:64] = True  # a one-row change across the slice, clicked in the middle
    whole = accepted_region(old, new, 32, 30, Refinement("local", window=8, growth=1.5))
    assert whole.sum() == 33  # grown to the cap: side 32 px, cut at its edge (cols 16..48)
    assert whole[30, 16:49].all() and not whole[30, :16].any()
    assert accepted_region(old, new, 32, 30, Refinement("local", window=16, growth=1.5)).sum() == 64
    assert MAX_WINDOW_GROWTH == 4.0


def test_refinement_settings_are_checked():
    with pytest.raises(ValueError, match="choose from"):
        Refinement("nearby")
    with pytest.raises(ValueError, match="growth"):
        Refinement("local", growth=1.0)
    assert Refinement("local", 32, 1.4).record() == {"mode": "local", "window": 32, "growth": 1.4}


def test_low_res_region_maps_the_slice_onto_the_padded_square_frame():
    region = np.zeros((128, 64), bool)
    region[64:, :32] = True  # bottom-left quarter of a tall slice
    low = low_res_region(region)
    assert low.shape == (256, 256)
    assert low[128:, :64].all() and low.sum() == 128 * 64  # the slice fills the left half; the pad stays False


def test_merge_low_res_takes_the_new_logits_inside_only():
    region = blank()
    region[:32] = True
    old_low, new_low = torch.full((1, 256, 256), -3.0), torch.full((1, 256, 256), 4.0)
    low = merge_low_res(region, new_low, old_low)
    assert (low[0, :128] == 4).all() and (low[0, 128:] == -3).all()


# ---- the click response -----------------------------------------------------------------------------

def test_click_response_counts_a_hand_made_round():
    truth = organ_with_lobe()
    old = truth.copy()
    old[20:30, 30:42] = False  # 120 px of lobe missed
    new = truth.copy()
    new[20:30, 38:42] = False  # fixes 80 of the lobe's pixels (one component with the click)
    new[50:52, 50:60] = True  # breaks 20 px far away
    out = click_response(old, new, truth, 33, 25, 1)
    assert out.tolist() == [1.0, 80.0, 0.0, 0.0, 20.0]
    # a click the decoder ignores: not corrected, nothing inside
    out = click_response(old, new, truth, 40, 25, 1)
    assert out.tolist() == [0.0, 0.0, 0.0, 80.0, 20.0]


def test_summarise_responses_ignores_rounds_without_a_click():
    r = np.full((2, 2, 5), np.nan)
    r[0, 0] = [1, 5, 0, 1, 2]
    r[1, 0] = [0, 0, 0, 3, 4]
    r[0, 1] = [1, 2, 1, 0, 0]
    out = summarise_responses(r)
    assert out["rounds"] == 3 and out["corrected_share"] == pytest.approx(2 / 3)
    assert out["corrected_per_round"] == [0.5, 1.0]
    assert (out["fixed_inside"], out["broken_inside"], out["fixed_outside"], out["broken_outside"]) == (7, 1, 4, 6)


# ---- inside the rounds protocol ------------------------------------------------------------------------

def lobe_then_leak_decoder(truth):
    """Round 0: the body without its lobe; every later round: the whole organ plus a far leak."""
    body = truth.copy()
    body[20:30, 30:42] = False
    leaky = truth.copy()
    leaky[50:60, 50:60] = True

    def decode_round(indices, prompts, mask_input):
        mask = body if prompts[0].points is None else leaky
        logits = torch.from_numpy(np.where(mask, 5.0, -5.0)).float()[None].repeat(len(indices), 1, 1)
        return logits, torch.zeros(len(indices), 1, 256, 256)

    return decode_round


def test_local_rounds_keep_the_lobe_and_refuse_the_leak_while_global_takes_both():
    truth = organ_with_lobe()
    start = [Prompt(box=np.array([10, 10, 41, 39], np.float32))]
    glob = run_rounds(truth[None], start, lobe_then_leak_decoder(truth), 2)
    local = run_rounds(truth[None], start, lobe_then_leak_decoder(truth), 2, refinement=LOCAL)
    assert local.dice[0, 1] == 1.0  # the lobe added, the leak refused
    assert glob.dice[0, 1] < 1.0  # the leak came with it
    (click,) = local.clicks[0]  # perfect after one click: no second
    assert click.label == 1 and 30 <= click.x <= 41 and 20 <= click.y <= 29  # in the missed lobe
    # the decoder's response is the same either way: the clicked pixel corrected, 120 fixed inside, 100 broken outside
    assert local.response[0, 0].tolist() == [1.0, 120.0, 0.0, 0.0, 100.0]
    assert np.isnan(local.response[0, 1]).all()
