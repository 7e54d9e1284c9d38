"""Propagation with stand-in decoders: one that answers with the ground truth (only where the prompt
touches the organ), one that answers nothing; the min-area stop; batching; the key-slice rule."""
import numpy as np
import pytest

from utils.inference.prompts import Prompt, bound_box, central_point, make_prompt
from utils.inference.propagation import (
    STOP_BELOW_MIN_AREA,
    Answer,
    STOP_EMPTY,
    STOP_VOLUME_END,
    key_slice,
    next_prompt,
    propagate,
    propagate_batch,
)

LIVER = 6


def drifting_organ(n_slices=12, z_first=3, z_last=8, h=24, w=28, radii=None):
    """(Z, H, W) labels: a square organ on slices z_first..z_last that moves 1 px right per slice."""
    labels = np.zeros((n_slices, h, w), np.uint8)
    for i, z in enumerate(range(z_first, z_last + 1)):
        r = 3 if radii is None else radii[i]
        labels[z, 10 - r : 10 + r + 1, 6 + i - r + 4 : 6 + i + r + 5] = LIVER
    return labels


class GroundTruthDecoder:
    """Returns the organ's ground truth on slice z as logits (+8 / -8), but only when the prompt
    touches it (its point lies inside, or its box overlaps); otherwise nothing. Records its calls."""

    def __init__(self, labels, organ=LIVER):
        self.masks = labels == organ
        self.calls: list[tuple[int, Prompt]] = []

    def __call__(self, z, prompt):
        self.calls.append((z, prompt))
        mask = self.masks[z]
        if prompt.box is not None:
            x0, y0, x1, y1 = np.round(prompt.box).astype(int)
            touches = mask[y0 : y1 + 1, x0 : x1 + 1].any()
        else:
            touches = all(mask[int(y), int(x)] for x, y in prompt.points)
        return np.where(mask & touches, 8.0, -8.0).astype(np.float32)


@pytest.mark.parametrize("prompt_type", ["bound_box", "one_central_point", "larger_box", "three_random_points"])
def test_ground_truth_decoder_recovers_whole_organ_and_stops_where_it_ends(prompt_type):
    labels = drifting_organ()
    key = key_slice(labels, LIVER)
    first = make_prompt(labels[key] == LIVER, prompt_type, np.random.default_rng(0))
    decoder = GroundTruthDecoder(labels)
    result = propagate(len(labels), key, first, decoder, prompt_type)
    assert result.z_range == (3, 8)
    assert np.array_equal(result.stack() > 0, labels == LIVER)  # the whole organ, nothing else
    assert result.stops == {"decreasing": STOP_EMPTY, "increasing": STOP_EMPTY}
    assert result.stopped_at == {"decreasing": 2, "increasing": 9}
    assert result.n_decoded == len(decoder.calls) == 6 + 2  # each organ slice once, one empty slice each way
    assert sorted(z for z, _ in decoder.calls) == list(range(2, 10))
    # Each later prompt comes from the previous slice's predicted mask, not from the ground truth there.
    for z, prompt in decoder.calls[1:]:
        previous = labels[z - 1 if z > key else z + 1] == LIVER
        assert _same_prompt(prompt, next_prompt(previous, prompt_type))


def _same_prompt(a, b):
    same = lambda u, v: (u is None and v is None) or (u is not None and v is not None and np.array_equal(u, v))
    return same(a.points, b.points) and same(a.labels, b.labels) and same(a.box, b.box)


def test_propagated_prompts_by_type():
    mask = np.zeros((20, 20), bool)
    mask[4:9, 5:15] = True
    assert np.array_equal(next_prompt(mask, "bound_box").box, bound_box(mask))
    point = next_prompt(mask, "one_random_point")
    assert np.array_equal(point.points, central_point(mask)) and point.labels.tolist() == [1]
    assert next_prompt(mask, "larger_box").box.tolist() == [2.5, 1.5, 16.5, 10.5]


def test_organ_reaching_the_volume_end_stops_there():
    labels = drifting_organ(n_slices=7, z_first=0, z_last=6)
    result = propagate(7, 2, Prompt(box=bound_box(labels[2] == LIVER)), GroundTruthDecoder(labels), "bound_box")
    assert result.z_range == (0, 6)
    assert result.stops == {"decreasing": STOP_VOLUME_END, "increasing": STOP_VOLUME_END}
    assert result.stopped_at == {"decreasing": None, "increasing": None}
    assert result.n_decoded == 7


def test_decoder_that_returns_nothing_stops_at_once():
    calls = []

    def nothing(z, prompt):
        calls.append(z)
        return np.full((16, 16), -5.0, np.float32)

    result = propagate(10, 4, Prompt(box=np.array([2, 2, 8, 8], np.float32)), nothing, "bound_box")
    assert calls == [4]
    assert result.z_range == (4, 4)
    assert result.stops == {"decreasing": STOP_EMPTY, "increasing": STOP_EMPTY}
    assert result.stopped_at == {"decreasing": 4, "increasing": 4}
    stack = result.stack()
    assert stack.shape == (10, 16, 16) and not (stack > 0).any()
    assert np.all(stack[4] == -5.0) and np.all(np.isneginf(stack[:4]))


def test_min_area_stops_where_ground_truth_gets_smaller_than_the_minimum():
    # Half-widths per organ slice 1..9: areas (2r+1)^2 = 9, 25, 49, 81, 49, 9, 1, 49, 81.
    radii = [1, 2, 3, 4, 3, 1, 0, 3, 4]
    labels = drifting_organ(n_slices=12, z_first=1, z_last=9, radii=radii)
    areas = (labels == LIVER).sum(axis=(1, 2)).tolist()
    assert areas == [0, 9, 25, 49, 81, 49, 9, 1, 49, 81, 0, 0]
    key = key_slice(labels, LIVER)
    assert key == 4  # area 81 on z=4 and z=9; z=4 is nearer the middle (5) of the extent 1..9
    decoder = GroundTruthDecoder(labels)
    result = propagate(12, key, Prompt(box=bound_box(labels[key] == LIVER)), decoder, "bound_box", min_area_px=20)
    assert result.z_range == (2, 5)  # 25, 49, 81, 49 accepted; 9 (z=1, z=6) < 20 rejected
    assert result.stops == {"decreasing": STOP_BELOW_MIN_AREA, "increasing": STOP_BELOW_MIN_AREA}
    assert result.stopped_at == {"decreasing": 1, "increasing": 6}
    assert 8 not in [z for z, _ in decoder.calls]  # the organ grows again at z=8, but propagation has stopped
    assert np.array_equal(result.stack()[2:6] > 0, labels[2:6] == LIVER)
    assert not (result.stack()[[0, 1, 6, 7, 8, 9, 10, 11]] > 0).any()  # rejected slices keep no logits


def test_key_slice_below_min_area_is_kept_but_not_propagated():
    labels = drifting_organ()
    decoder = GroundTruthDecoder(labels)
    result = propagate(12, 5, Prompt(box=bound_box(labels[5] == LIVER)), decoder, "bound_box", min_area_px=100)
    assert [z for z, _ in decoder.calls] == [5]
    assert list(result.logits) == [5] and (result.logits[5] > 0).sum() == 49
    assert result.stops == {"decreasing": STOP_BELOW_MIN_AREA, "increasing": STOP_BELOW_MIN_AREA}


def test_batch_equals_one_by_one_and_asks_once_per_round():
    labels = drifting_organ()
    other = np.roll(drifting_organ(z_first=6, z_last=11), 10, axis=1)  # rows 17..23, reaches the last slice
    assert not ((labels > 0) & (other > 0)).any()
    decoders = [GroundTruthDecoder(labels), GroundTruthDecoder(other)]
    seeds = [(4, Prompt(box=bound_box(labels[4] == LIVER))), (9, Prompt(box=bound_box(other[9] == LIVER)))]
    rounds = []

    def decode_batch(requests):
        rounds.append(len(requests))
        # Both organs' fronts are mixed in one round; tell them apart by which ground truth the box touches.
        out = []
        for z, prompt, _ in requests:
            answers = [d(z, prompt) for d in decoders]
            out.append(Answer(max(answers, key=lambda a: (a > 0).sum())))
        return out

    batched = propagate_batch(12, seeds, decode_batch, "bound_box")
    single = [propagate(12, z, p, GroundTruthDecoder(l), "bound_box") for (z, p), l in zip(seeds, (labels, other))]
    for b, s in zip(batched, single):
        assert b.z_range == s.z_range and b.stops == s.stops and b.stopped_at == s.stopped_at
        assert np.array_equal(b.stack(), s.stack())
    assert batched[1].z_range == (6, 11) and batched[1].stops["increasing"] == STOP_VOLUME_END
    assert rounds[0] == 2 and max(rounds) <= 4 and sum(rounds) == sum(s.n_decoded for s in single)


def test_key_slice_largest_area_ties_to_the_middle():
    labels = np.zeros((9, 6, 6), np.uint8)
    labels[1:8, 1:5, 1:5] = 3  # equal areas on 1..7: the middle is 4
    assert key_slice(labels, 3) == 4
    labels[2, :, :] = 3  # now slice 2 is largest
    assert key_slice(labels, 3) == 2
    with pytest.raises(ValueError, match="no slice"):
        key_slice(labels, 7)


def test_bad_arguments_are_refused():
    box = Prompt(box=np.array([0, 0, 1, 1], np.float32))
    decode = lambda z, p: np.zeros((4, 4))
    with pytest.raises(ValueError, match="outside"):
        propagate(5, 5, box, decode, "bound_box")
    with pytest.raises(ValueError, match="min_area_px"):
        propagate(5, 1, box, decode, "bound_box", min_area_px=0)
    with pytest.raises(ValueError, match="unknown prompt type"):
        propagate(5, 1, box, decode, "scribble")
    with pytest.raises(ValueError, match=r"expected \(H, W\)"):
        propagate(5, 1, box, lambda z, p: np.ones((1, 4, 4)), "bound_box")


def test_grow_box_by_hand_and_clipped_to_the_slice():
    from utils.inference.prompts import grow_box

    assert grow_box(np.array([5.0, 4.0, 9.0, 8.0]), (2.0, 1.5), (20, 30)).tolist() == [3.0, 2.5, 11.0, 9.5]
    assert grow_box(np.array([1.0, 0.0, 27.0, 18.0]), (3.0, 3.0), (20, 28)).tolist() == [0.0, 0.0, 27.0, 19.0]
    mask = np.zeros((20, 30), bool)
    mask[4:9, 5:10] = True
    assert next_prompt(mask, "bound_box", (2.0, 1.5)).box.tolist() == [3.0, 2.5, 11.0, 9.5]
    point = next_prompt(mask, "one_central_point", (2.0, 1.5))
    assert point.box is None and point.points.tolist() == [[7.0, 6.0]]  # point prompts ignore the margin
    with pytest.raises(ValueError, match="box_margin_px"):
        propagate(12, 5, Prompt(box=np.array([1.0, 1.0, 5.0, 5.0])), lambda z, p: np.zeros((20, 30)), "bound_box",
                  box_margin_px=(-1.0, 0.0))


class InsideTheBoxDecoder:
    """A model whose mask sits strictly inside its box: the organ on slice z within the box shrunk by 1 px
    each side. The failure the margin is for: with tight boxes the masks shrink slice by slice."""

    def __init__(self, labels, organ=LIVER):
        self.masks = labels == organ

    def __call__(self, z, prompt):
        x0, y0, x1, y1 = np.round(prompt.box).astype(int)
        inside = np.zeros_like(self.masks[z])
        inside[y0 + 1 : y1, x0 + 1 : x1] = True
        return np.where(self.masks[z] & inside, 8.0, -8.0).astype(np.float32)


def test_a_box_margin_holds_an_organ_that_tight_boxes_let_shrink_away():
    labels = np.zeros((16, 30, 30), np.uint8)
    labels[1:15, 6:20, 8:22] = LIVER  # a 14 x 14 px organ on slices 1..14
    key = 7
    start = Prompt(box=bound_box(labels[key] == LIVER))
    tight = propagate(16, key, start, InsideTheBoxDecoder(labels), "bound_box", min_area_px=4)
    held = propagate(16, key, start, InsideTheBoxDecoder(labels), "bound_box", min_area_px=4, box_margin_px=(1, 1))
    areas = [int((tight.logits[z] > 0).sum()) for z in range(key, tight.z_range[1] + 1)]
    assert areas == sorted(areas, reverse=True) and areas[-1] < areas[0]  # shrinking, 2 px per side per slice
    assert tight.z_range[0] > 1 and tight.z_range[1] < 14  # died before the organ ends
    assert len(tight.logits) == 1 + 2 * 5  # 12 px wide at the key slice, then 10, 8, 6, 4, 2 each way, then empty
    assert held.z_range == (1, 14) and held.stops == {"decreasing": STOP_EMPTY, "increasing": STOP_EMPTY}
    assert all(int((held.logits[z] > 0).sum()) == 12 * 12 for z in range(1, 15))


class SequenceDecoder:
    """Answers slice z with a hand-made mask sequence (+8 / -8 logits), whatever the prompt: to drive the
    stop rules by the masks alone."""

    def __init__(self, masks):
        self.masks, self.calls = masks, []

    def __call__(self, z, prompt):
        self.calls.append(z)
        return np.where(self.masks[z], 8.0, -8.0).astype(np.float32)


def square(size, top, left, side):
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_low_overlap_rule_rejects_a_mask_that_jumps_onto_a_neighbour():
    from utils.inference.propagation import STOP_LOW_OVERLAP, StopRules

    # slices 0..5: a 6 x 6 square moving 1 px per slice (IoU 30/42 = 0.71 with the slice before), except
    # slice 4, which jumps 8 px right (IoU 0 with slice 3): drift onto a neighbour.
    masks = [square(24, 4, 4 + z, 6) for z in range(6)]
    masks[4] = square(24, 4, 15, 6)
    box = Prompt(box=bound_box(masks[1]))
    loose = propagate(6, 1, box, SequenceDecoder(masks), "bound_box")
    assert loose.z_range == (0, 5)  # without the rule the jump is accepted and the walk goes on
    strict = propagate(6, 1, box, SequenceDecoder(masks), "bound_box", rules=StopRules(min_iou_previous=0.5))
    assert strict.z_range == (0, 3) and strict.stops["increasing"] == STOP_LOW_OVERLAP
    assert strict.stopped_at["increasing"] == 4 and strict.rejected == {4: STOP_LOW_OVERLAP}
    too_strict = propagate(6, 1, box, SequenceDecoder(masks), "bound_box", rules=StopRules(min_iou_previous=0.75))
    assert too_strict.z_range == (1, 1)  # 0.71 < 0.75: both neighbours are rejected, only the key is kept


def test_inside_a_known_range_only_the_minimum_area_judges_unless_rules_in_range():
    """The 3-D box (a first..last range): the overlap rule is not applied there by default (the range already
    says where the organ ends), and is with ``rules_in_range``; outside a range it always is."""
    from utils.inference.propagation import STOP_LOW_OVERLAP
    from utils.inference.propagation import PropagationSettings
    from utils.inference.segment3d import propagate_organs

    masks = [square(24, 4, 4 + z, 6) for z in range(6)]
    masks[4] = square(24, 4, 15, 6)  # the jump of the test above
    decode = SequenceDecoder(masks)
    seeds = {1: (1, Prompt(box=bound_box(masks[1])))}

    def run(settings, limits):
        batch = lambda requests: [Answer(decode(r.z, r.prompt)) for r in requests]  # noqa: E731
        return propagate_organs(6, seeds, batch, "bound_box", (1.0, 1.0), settings, limits)[1]

    rule = dict(min_area_mm2=1.0, min_iou_previous=0.5, hold_prompt="last")
    assert PropagationSettings(**rule, rules_in_range=False).in_pixels((1.0, 1.0), True)[0].min_iou_previous == 0.0
    ranged = run(PropagationSettings(**rule, rules_in_range=False), {1: (0, 5)})
    assert set(ranged.logits) == set(range(6)) and not ranged.rejected  # the jump is kept: only the area judges
    judged = run(PropagationSettings(**rule, rules_in_range=True), {1: (0, 5)})
    assert judged.rejected == {4: STOP_LOW_OVERLAP} and set(judged.logits) == {0, 1, 2, 3, 5}  # held through
    unbounded = run(PropagationSettings(**rule, rules_in_range=False), None)
    assert unbounded.rejected == {4: STOP_LOW_OVERLAP} and unbounded.z_range == (0, 3)


def test_mask_carry_passes_the_previous_accepted_slices_low_res_logits_as_mask_input():
    """A +mask carry mode: the key slice is decoded without a mask input; every other slice gets the low-res logits
    of the slice that prompted it (its direction's last accepted one, also across a rejected slice held
    through inside a range)."""
    from utils.inference.propagation import STOP_LOW_OVERLAP, StopRules, propagate_batch

    masks = [square(24, 4, 4 + z, 6) for z in range(6)]
    masks[4] = square(24, 4, 15, 6)  # rejected by the overlap rule
    asked = []

    def decode_batch(requests):
        answers = []
        for z, prompt, mask_input in requests:
            asked.append((z, None if mask_input is None else int(mask_input[0, 0, 0])))
            low_res = np.full((1, 4, 4), z, np.float32)  # tagged with the slice it came from
            answers.append(Answer(np.where(masks[z], 8.0, -8.0).astype(np.float32), None, low_res))
        return answers

    rules = StopRules(min_iou_previous=0.5, hold_through_rejects=True)
    result = propagate_batch(6, [(1, Prompt(box=bound_box(masks[1])))], decode_batch, "bound_box", rules=rules,
                             z_limits=[(0, 5)], carry="as_prompt+mask")[0]
    assert result.rejected == {4: STOP_LOW_OVERLAP}
    assert sorted(asked) == [(0, 1), (1, None), (2, 1), (3, 2), (4, 3), (5, 3)]  # 5: slice 3's, past the reject
    asked.clear()
    plain = propagate_batch(6, [(1, Prompt(box=bound_box(masks[1])))], decode_batch, "bound_box", rules=rules,
                            z_limits=[(0, 5)])[0]
    assert set(plain.logits) == set(result.logits)  # the same walk; without +mask no mask input is given
    assert all(tag is None for _, tag in asked)
    with pytest.raises(ValueError, match="low-res"):
        propagate_batch(6, [(1, Prompt(box=bound_box(masks[1])))], lambda r: [Answer(np.where(masks[q.z], 8.0, -8.0))
                        for q in r], "bound_box", carry="box+mask")


def test_area_jump_rule_rejects_a_sudden_growth_or_shrinkage():
    from utils.inference.propagation import STOP_AREA_JUMP, StopRules

    sides = [6, 6, 6, 13, 6, 6]  # 36 px, then 169 on slice 3 (x 4.7), back to 36
    masks = [square(24, 2, 2, side) for side in sides]
    box = Prompt(box=bound_box(masks[1]))
    result = propagate(6, 1, box, SequenceDecoder(masks), "bound_box", rules=StopRules(max_area_factor=4.0))
    assert result.z_range == (0, 2) and result.stops["increasing"] == STOP_AREA_JUMP
    assert propagate(6, 1, box, SequenceDecoder(masks), "bound_box",
                     rules=StopRules(max_area_factor=5.0)).z_range == (0, 5)  # 4.7 < 5: accepted
    shrinking = [square(24, 2, 2, side) for side in (13, 13, 6, 13)]  # 169 -> 36: x 1 / 4.7
    result = propagate(4, 0, Prompt(box=bound_box(shrinking[0])), SequenceDecoder(shrinking), "bound_box",
                       rules=StopRules(max_area_factor=4.0))
    assert result.z_range == (0, 1) and result.rejected == {2: STOP_AREA_JUMP}


def test_predicted_iou_rule_rejects_a_slice_the_model_doubts():
    from utils.inference.propagation import STOP_LOW_PREDICTED_IOU, StopRules, propagate_batch

    masks = [square(24, 4, 4, 6) for _ in range(6)]  # the same mask everywhere: only the predicted IoU differs
    predicted = [0.9, 0.9, 0.9, 0.8, 0.3, 0.9]  # slice 4: the model doubts its own mask

    def decode_batch(requests):
        return [Answer(np.where(masks[r.z], 8.0, -8.0).astype(np.float32), predicted[r.z]) for r in requests]

    box = Prompt(box=bound_box(masks[1]))
    result = propagate_batch(6, [(1, box)], decode_batch, "bound_box", rules=StopRules(min_predicted_iou=0.5))[0]
    assert result.z_range == (0, 3) and result.stops["increasing"] == STOP_LOW_PREDICTED_IOU
    assert result.rejected == {4: STOP_LOW_PREDICTED_IOU}
    assert propagate_batch(6, [(1, box)], decode_batch, "bound_box",
                           rules=StopRules(min_predicted_iou=0.85))[0].z_range == (0, 2)  # 0.8 < 0.85 on slice 3
    assert propagate_batch(6, [(1, box)], decode_batch, "bound_box")[0].z_range == (0, 5)  # rule off: IoU unused
    doubted_key = [0.1] + predicted[1:]  # the key slice is the person's prompt: never judged by the rule
    held = propagate_batch(6, [(0, box)], lambda r: [Answer(np.where(masks[q.z], 8.0, -8.0).astype(np.float32),
                                                            doubted_key[q.z]) for q in r], "bound_box",
                           rules=StopRules(min_predicted_iou=0.5))[0]
    assert held.z_range == (0, 3)
    with pytest.raises(ValueError, match="predicted IoU"):  # the rule on, but the decoder gives no IoU
        propagate(6, 1, box, SequenceDecoder(masks), "bound_box", rules=StopRules(min_predicted_iou=0.5))


def test_stop_rules_refuse_meaningless_settings():
    from utils.inference.propagation import StopRules

    for bad in (dict(min_area_px=0), dict(min_iou_previous=1.5), dict(max_area_factor=0.5), dict(max_area_factor=1.0),
                dict(min_predicted_iou=-0.1), dict(min_predicted_iou=1.2)):
        with pytest.raises(ValueError):
            StopRules(**bad)


def test_a_bounded_range_is_never_left_and_rejects_inside_it_are_held_through():
    from utils.inference.propagation import STOP_RANGE_END, StopRules

    # The organ is on 1..8, empty on slice 6 (a gap a real model can leave); the range is 2..7.
    masks = [square(24, 4, 4, 6) if 1 <= z <= 8 and z != 6 else np.zeros((24, 24), bool) for z in range(10)]
    decoder = SequenceDecoder(masks)
    held = propagate(10, 4, Prompt(box=bound_box(masks[4])), decoder, "bound_box",
                     rules=StopRules(hold_through_rejects=True), z_limits=(2, 7))
    assert sorted(decoder.calls) == [2, 3, 4, 5, 6, 7]  # nothing outside 2..7 is ever decoded
    assert sorted(held.logits) == [2, 3, 4, 5, 7]  # the empty slice 6 keeps nothing, the walk goes on to 7
    assert held.stops == {"decreasing": STOP_RANGE_END, "increasing": STOP_RANGE_END}
    assert held.rejected == {6: STOP_EMPTY}
    assert held.prompts[7].box.tolist() == held.prompts[6].box.tolist()  # 7 prompted with the last accepted box
    stopped = propagate(10, 4, Prompt(box=bound_box(masks[4])), SequenceDecoder(masks), "bound_box", z_limits=(2, 7))
    assert sorted(stopped.logits) == [2, 3, 4, 5] and stopped.stops["increasing"] == STOP_EMPTY
    whole = propagate(10, 4, Prompt(box=bound_box(masks[4])), SequenceDecoder(masks), "bound_box",
                      z_limits=(0, 9), rules=StopRules(hold_through_rejects=True))
    assert whole.stops == {"decreasing": STOP_VOLUME_END, "increasing": STOP_VOLUME_END}
    with pytest.raises(ValueError, match="hold key slice"):
        propagate(10, 4, Prompt(box=bound_box(masks[4])), decoder, "bound_box", z_limits=(5, 7))


def test_largest_component_keeps_the_biggest_26_connected_piece():
    from utils.inference.segment3d import largest_component_3d

    logits = {z: np.full((8, 8), -1.0, np.float32) for z in range(5)}
    for z in (0, 1, 2):
        logits[z][1:4, 1:4] = 2.0  # 27 voxels
    logits[3][4, 4] = 2.0  # touches (2, 3, 3) only at a corner: 26-connected, so part of the big piece
    logits[4][6:8, 6:8] = 2.0  # 4 voxels, apart
    kept = largest_component_3d(logits)
    assert sorted(kept) == [0, 1, 2, 3]  # slice 4 held only the small piece: dropped
    assert sum(int((v > 0).sum()) for v in kept.values()) == 28
    assert kept[3][4, 4] == 2.0 and np.isneginf(kept[3][0, 0])
    assert largest_component_3d({}) == {}


def shifting_tube(n_slices=10, shift=3, half=2, size=48):
    """(Z, H, W) labels: a (2 * half + 1) px square tube whose centre moves ``shift`` px right per slice."""
    labels = np.zeros((n_slices, size, size), np.uint8)
    for z in range(n_slices):
        c = 6 + shift * z
        labels[z, 20 - half : 20 + half + 1, c - half : c + half + 1] = LIVER
    return labels


@pytest.mark.parametrize("carry, kept", [("box", True), ("point", False), ("as_prompt", True)])
def test_carry_modes_on_a_tube_that_shifts_by_more_than_its_half_width(carry, kept):
    """A 5 px tube moving 3 px per slice: the previous mask's box still overlaps the next cross-section, so a box
    carry keeps the whole tube; its centre point lies outside the next cross-section (3 px > 2 px half width), so
    a point carry loses it on the first step (the ground-truth stand-in answers only a prompt that touches)."""
    labels = shifting_tube()
    start = Prompt(box=bound_box(labels[4] == LIVER))
    result = propagate(len(labels), 4, start, GroundTruthDecoder(labels), "bound_box", carry=carry)
    if kept:
        assert result.z_range == (0, 9) and np.array_equal(result.stack() > 0, labels == LIVER)
    else:
        assert result.z_range == (4, 4) and result.stops == {"decreasing": STOP_EMPTY, "increasing": STOP_EMPTY}


def test_a_point_carry_keeps_a_tube_that_moves_less_than_its_half_width_and_carries_the_centre():
    labels = shifting_tube(shift=1)
    decoder = GroundTruthDecoder(labels)
    result = propagate(len(labels), 4, Prompt(box=bound_box(labels[4] == LIVER)), decoder, "bound_box", carry="point")
    assert result.z_range == (0, 9)
    for z, prompt in decoder.calls[1:]:  # every carried prompt is one positive point at the previous mask's centre
        previous = labels[z - 1 if z > 4 else z + 1] == LIVER
        assert prompt.box is None and np.array_equal(prompt.points, central_point(previous))


def test_propagated_box_training_prompts_are_the_boxes_propagation_carries(monkeypatch):
    """One function builds both: on a hand-made volume, the propagated_box prompt of a slice's mask (jitter 0) is
    exactly the box propagation hands the next slice from that mask, and with the training jitter each side
    stays within it."""
    import utils.inference.prompts as prompts

    labels = drifting_organ(radii=[2, 3, 4, 4, 3, 2])
    spacing = (2.4, 2.4)
    margin = prompts.margin_px(prompts.CARRY_MARGIN_MM, spacing)
    decoder = GroundTruthDecoder(labels)
    propagate(len(labels), key_slice(labels, LIVER), Prompt(box=bound_box(labels[5] == LIVER)), decoder,
              "bound_box", box_margin_px=margin)
    carried = {z: p.box for z, p in decoder.calls[1:]}
    for z, box in carried.items():
        previous = labels[z - 1 if z > 5 else z + 1] == LIVER
        if not previous.any():
            continue
        jittered = [make_prompt(previous, "propagated_box", np.random.default_rng(s), spacing=spacing).box
                    for s in range(20)]
        assert all(np.all(np.abs(j - box) <= prompts.CARRY_TRAIN_JITTER_PX + 1e-4) for j in jittered)
        monkeypatch.setattr(prompts, "CARRY_TRAIN_JITTER_PX", 0)
        assert np.array_equal(make_prompt(previous, "propagated_box", np.random.default_rng(0), spacing=spacing).box,
                              box)
        monkeypatch.undo()


def test_key_slice_middle_rule_takes_the_middle_of_the_extent_or_the_nearest_slice_the_organ_is_on():
    labels = drifting_organ(radii=[1, 1, 1, 1, 4, 1])  # slices 3..8, largest on slice 7
    assert key_slice(labels, LIVER) == 7 and key_slice(labels, LIVER, "middle") == 5  # (3 + 8) / 2 = 5.5 -> 5
    labels[5] = 0  # a gap at the middle (5.5): the nearest slice the organ is on is 6 (0.5 away; 4 is 1.5)
    assert key_slice(labels, LIVER, "middle") == 6
    with pytest.raises(ValueError, match="key slice rule"):
        key_slice(labels, LIVER, "first")


def test_hold_prompt_key_falls_back_to_the_key_slices_prompt_after_a_reject_inside_a_range():
    """Inside a range a rejected slice is held through: the next slice is prompted with the last accepted prompt
    ("last"), or with the key slice's prompt ("key", LiteMedSAM's fallback)."""
    from utils.inference.propagation import StopRules

    masks = [square(24, 4, 4 + z, 6) for z in range(6)]
    masks[3] = np.zeros((24, 24), bool)  # slice 3 comes back empty
    key_box = Prompt(box=np.array([2.0, 2.0, 12.0, 12.0], np.float32))
    rules = StopRules(hold_through_rejects=True)
    for hold, expected in (("last", bound_box(masks[2])), ("key", key_box.box)):
        calls = []

        def decode(z, prompt, decoder=SequenceDecoder(masks)):
            calls.append((z, prompt))
            return decoder(z, prompt)

        result = propagate_batch(6, [(1, key_box)], lambda r: [Answer(decode(q.z, q.prompt)) for q in r],
                                 "bound_box", rules=rules, z_limits=[(0, 5)], hold_prompt=hold)[0]
        assert result.rejected == {3: STOP_EMPTY} and set(result.logits) == {0, 1, 2, 4, 5}
        asked_on_4 = next(p for z, p in calls if z == 4)
        assert np.array_equal(asked_on_4.box, expected), hold


class TwoTubesDecoder:
    """Two 5 px tubes side by side through 10 slices: A (label 1) at columns 6..10, B (label 2) at columns 13..17.
    Answers B's cross-section when the box reaches B's columns on slices z >= 6 (B is 'brighter': a walk that
    comes near it from slice 6 on slides onto it) or when the box is centred on B; else A's when the box
    touches A."""

    def __init__(self):
        self.labels = np.zeros((10, 24, 24), np.uint8)
        self.labels[:, 10:15, 6:11] = 1
        self.labels[:, 10:15, 13:18] = 2

    def __call__(self, requests):
        out = []
        for r in requests:
            x0, _, x1, _ = r.prompt.box
            centre = (x0 + x1) / 2
            if centre >= 13 or (x1 >= 13 and r.z >= 6):
                organ = 2
            elif x0 <= 10:
                organ = 1
            else:
                organ = 0
            out.append(Answer(np.where(self.labels[r.z] == organ, 8.0, -8.0).astype(np.float32) if organ
                              else np.full((24, 24), -8.0, np.float32)))
        return out


@pytest.mark.parametrize("keys", [(2, 8), (4, 0)], ids=["owner first", "drifter first"])
def test_two_adjacent_tubes_keep_both_under_the_overlap_rule(keys):
    """Tube A's walk (margin 3 px) reaches B's columns and slides onto B from slice 6 on. Without the rule A takes
    B's cross-sections there; with it (exclusive 0.5) A's slices on B are rejected whichever walk got there first
    (a claim B's own previous slice covered beats one A's did not), A keeps its own slices 0..5 and B all ten."""
    from utils.inference.propagation import STOP_ANOTHER_ORGAN, StopRules

    decoder = TwoTubesDecoder()
    seeds = [(keys[0], Prompt(box=bound_box(decoder.labels[keys[0]] == 1))),
             (keys[1], Prompt(box=bound_box(decoder.labels[keys[1]] == 2)))]
    rules = StopRules(hold_through_rejects=True)

    def run(exclusive):
        return propagate_batch(10, seeds, decoder, "bound_box", rules=rules, box_margin_px=(3.0, 0.0),
                               z_limits=[(0, 9), (0, 9)], exclusive=exclusive)

    stolen, tube_b = run(0.0)
    assert all(np.array_equal(stolen.logits[z] > 0, decoder.labels[z] == 2) for z in range(6, 10))  # A took B there
    a, b = run(0.5)
    assert set(a.logits) == set(range(6)) and all(a.rejected[z] == STOP_ANOTHER_ORGAN for z in range(6, 10))
    assert all(np.array_equal(a.logits[z] > 0, decoder.labels[z] == 1) for z in range(6))
    assert set(b.logits) == set(range(10)) and not b.rejected
    assert all(np.array_equal(b.logits[z] > 0, decoder.labels[z] == 2) for z in range(10))


def test_an_overlap_both_walks_led_to_keeps_both_masks():
    """A large organ whose mask covers a small neighbour on every slice (a steady leak, not a drift): both own
    previous slices covered the overlap, so the rule rejects neither and the merge decides, as without it."""
    big, small = square(24, 2, 2, 14), square(24, 6, 6, 4)

    def decode(requests):
        return [Answer(np.where(big if r.prompt.box[2] - r.prompt.box[0] > 8 else small, 8.0, -8.0).astype(np.float32))
                for r in requests]

    seeds = [(3, Prompt(box=bound_box(big))), (5, Prompt(box=bound_box(small)))]
    results = propagate_batch(8, seeds, decode, "bound_box", exclusive=0.5)
    assert all(set(r.logits) == set(range(8)) and not r.rejected for r in results)
