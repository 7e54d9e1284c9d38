import cv2
import numpy as np
import pytest

from utils.core.seeding import child_rng
from utils.inference.prompts import (
    ALL_PROMPT_TYPES,
    DEFAULT_BOX_JITTER_PX,
    DEFAULT_NEGATIVE_MARGIN_PX,
    PROMPT_TITLES,
    PROMPT_REGISTRY,
    STUDY_PROMPTS,
    bound_box,
    central_point,
    is_box_prompt,
    jittered_box,
    larger_box,
    make_prompt,
    parse_prompt_types,
    prompt_type_id,
    random_points,
)


def blob(h=40, w=50):
    mask = np.zeros((h, w), bool)
    cv2.ellipse(mask.view(np.uint8), (20, 18), (12, 7), 20, 0, 360, 1, -1)
    return mask


def test_central_point_is_argmax_of_distance_transform_on_padded_mask():
    mask = blob()
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_5)
    r, c = np.unravel_index(np.argmax(dist), dist.shape)
    assert central_point(mask).tolist() == [[c - 1, r - 1]]


def test_central_point_of_organ_touching_the_edge_is_interior():
    mask = np.zeros((30, 30), bool)
    mask[0:10, 0:30] = True  # a band along the top edge: without padding the max sits on row 0
    (x, y), = central_point(mask)
    assert mask[int(y), int(x)]
    assert 3 <= y <= 6


def test_random_points_inside_distinct_and_seeded():
    mask = blob()
    a = random_points(mask, 3, child_rng(0, 1, 2))
    b = random_points(mask, 3, child_rng(0, 1, 2))
    c = random_points(mask, 3, child_rng(1, 1, 2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(p) for p in a.tolist()}) == 3
    assert all(mask[int(y), int(x)] for x, y in a)


def test_boxes_hand_computed():
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:16] = True  # rows 5..8, cols 10..15
    mask[12, 2] = True  # a second piece: one target, the box bounds both
    assert bound_box(mask).tolist() == [2, 5, 15, 12]
    assert larger_box(mask).tolist() == [0, 2.5, 17.5, 14.5]  # grown 5 px each way, clipped at x=0
    big = np.ones((20, 30), bool)
    assert larger_box(big).tolist() == [0, 0, 29, 19]


def test_every_prompt_type_points_inside_organ():
    mask = blob()
    for name in STUDY_PROMPTS:
        prompt = make_prompt(mask, name, child_rng(0, 3))
        if prompt.points is not None:
            assert prompt.labels.tolist() == [1] * len(prompt.points)
            assert all(mask[int(y), int(x)] for x, y in prompt.points)
        else:
            assert prompt.box.shape == (4,)


def test_parse_prompt_types():
    assert parse_prompt_types(None) == list(STUDY_PROMPTS)
    assert parse_prompt_types("bound_box,one_central_point") == ["bound_box", "one_central_point"]
    with pytest.raises(ValueError, match="unknown prompt"):
        parse_prompt_types("two_points")


def test_parse_prompt_types_extras_by_name_only():
    assert parse_prompt_types("all") == list(STUDY_PROMPTS)
    assert STUDY_PROMPTS == ("one_central_point", "one_random_point", "three_random_points", "bound_box", "larger_box")
    assert parse_prompt_types("jittered_box,center_and_negatives,bound_box") == [
        "jittered_box", "center_and_negatives", "bound_box"]
    assert all(t in PROMPT_TITLES for t in ALL_PROMPT_TYPES)
    # the five keep their seeding ids
    assert [prompt_type_id(t) for t in STUDY_PROMPTS] == [0, 1, 2, 3, 4]
    assert is_box_prompt("jittered_box") and not is_box_prompt("center_and_negatives")


def check_jittered(mask, box, jitter):
    h, w = mask.shape
    tight = np.array([np.nonzero(mask.any(0))[0].min(), np.nonzero(mask.any(1))[0].min(),
                      np.nonzero(mask.any(0))[0].max(), np.nonzero(mask.any(1))[0].max()], float)
    x0, y0, x1, y1 = box
    assert x1 > x0 and y1 > y0
    assert 0 <= x0 and x1 <= w - 1 and 0 <= y0 and y1 <= h - 1
    assert np.all(np.abs(box - tight) <= jitter)
    assert np.array_equal(box, np.round(box))  # whole-pixel shifts


@pytest.mark.parametrize("case", ["blob", "one_pixel", "corner", "right_edge"])
def test_jittered_box_seeded_within_jitter_inside_never_empty(case):
    mask = np.zeros((30, 40), bool)
    if case == "blob":
        mask = blob()
    elif case == "one_pixel":
        mask[12, 17] = True
    elif case == "corner":
        mask[0:4, 0:3] = True
    else:
        mask[10:20, 39] = True  # a one-pixel-wide organ on the last column
    for jitter in (1, 3, DEFAULT_BOX_JITTER_PX, 20):
        boxes = [jittered_box(mask, child_rng(seed, 7), jitter) for seed in range(40)]
        for box in boxes:
            check_jittered(mask, box, jitter)
        assert np.array_equal(boxes[0], jittered_box(mask, child_rng(0, 7), jitter))
        assert len({tuple(b) for b in boxes}) > 1  # it does move
    assert np.array_equal(make_prompt(mask, "jittered_box", child_rng(3)).box,
                          jittered_box(mask, child_rng(3), DEFAULT_BOX_JITTER_PX))
    assert make_prompt(mask, "jittered_box", child_rng(3), box_jitter=0).box.tolist() == \
        jittered_box(mask, child_rng(3), 0).tolist()


def test_jittered_box_zero_jitter_is_tight_box_or_one_pixel_wider():
    mask = blob()
    assert jittered_box(mask, child_rng(0), 0).tolist() == bound_box(mask).tolist()
    dot = np.zeros((10, 10), bool)
    dot[9, 9] = True  # nowhere to grow but inwards
    assert jittered_box(dot, child_rng(0), 0).tolist() == [8, 8, 9, 9]
    dot = np.zeros((10, 10), bool)
    dot[4, 2] = True
    assert jittered_box(dot, child_rng(0), 0).tolist() == [2, 4, 3, 5]
    with pytest.raises(ValueError, match="whole number"):
        jittered_box(mask, child_rng(0), -1)


def test_jittered_box_sides_cover_the_whole_range():
    mask = np.zeros((60, 60), bool)
    mask[20:40, 15:45] = True
    boxes = np.array([jittered_box(mask, child_rng(s), 2) for s in range(300)])
    shifts = boxes - np.array([15, 20, 44, 39])
    for side in range(4):
        assert set(shifts[:, side].tolist()) == {-2, -1, 0, 1, 2}


@pytest.mark.parametrize("where", ["middle", "corner"])
def test_center_and_negatives(where):
    mask = np.zeros((50, 60), bool)
    if where == "middle":
        mask = np.zeros((50, 60), bool)
        cv2.circle(mask.view(np.uint8), (30, 25), 8, 1, -1)
    else:
        mask[0:12, 0:15] = True  # fills its own tight box: negatives must come from the margin
    x0, y0, x1, y1 = bound_box(mask)
    m = DEFAULT_NEGATIVE_MARGIN_PX
    for seed in range(20):
        prompt = make_prompt(mask, "center_and_negatives", child_rng(seed, 1))
        assert prompt.box is None and prompt.points.shape == (3, 2) and prompt.points.dtype == np.float32
        assert prompt.labels.tolist() == [1, 0, 0]
        assert prompt.points[0].tolist() == central_point(mask)[0].tolist()
        (cx, cy), *negatives = prompt.points
        assert mask[int(cy), int(cx)]
        assert negatives[0].tolist() != negatives[1].tolist()
        for x, y in negatives:
            assert not mask[int(y), int(x)]
            assert max(x0 - m, 0) <= x <= min(x1 + m, 59) and max(y0 - m, 0) <= y <= min(y1 + m, 49)
    a = make_prompt(mask, "center_and_negatives", child_rng(5))
    b = make_prompt(mask, "center_and_negatives", child_rng(5))
    assert np.array_equal(a.points, b.points)
    # the margin is a keyword: margin 1 around the corner block keeps negatives on its rim
    rim = make_prompt(mask, "center_and_negatives", child_rng(5), negative_margin=1)
    for x, y in rim.points[1:]:
        assert x <= x1 + 1 and y <= y1 + 1


def test_registry_seed_ids_are_fixed_and_distinct():
    # the ids are the child_rng keys of each type's draws: they never move when a type is added
    ids = {name: t.seed_id for name, t in PROMPT_REGISTRY.items()}
    assert ids == {"one_central_point": 0, "one_random_point": 1, "three_random_points": 2, "bound_box": 3,
                   "larger_box": 4, "jittered_box": 5, "center_and_negatives": 6, "propagated_box": 7}
    # boxes carry boxes (the larger box its larger box), points carry points
    assert all(t.carried_as in (("box", "larger_box") if t.is_box else ("point",)) for t in PROMPT_REGISTRY.values())
    assert PROMPT_REGISTRY["larger_box"].carried_as == "larger_box"


def test_carried_box_by_hand_and_its_training_jitter():
    from utils.inference.prompts import CARRY_MARGIN_MM, CARRY_TRAIN_JITTER_PX, carried_box, margin_px

    mask = np.zeros((30, 40), bool)
    mask[10:15, 8:20] = True  # rows 10..14, cols 8..19
    assert margin_px(4.0, (2.0, 1.0)) == (4.0, 2.0)  # (x, y) px from (row, column) mm
    assert carried_box(mask, (0, 0)).tolist() == [8, 10, 19, 14]
    assert carried_box(mask, (2.0, 1.0)).tolist() == [6, 9, 21, 15]
    assert carried_box(mask, (10.0, 12.0)).tolist() == [0, 0, 29, 26]  # clipped to the slice
    grown = carried_box(mask, (2.0, 1.0))
    seen = set()
    for seed in range(60):
        box = carried_box(mask, (2.0, 1.0), np.random.default_rng(seed), 3)
        assert np.all(np.abs(box - grown) <= 3 + 1e-4) and box[2] > box[0] and box[3] > box[1]
        seen.add(tuple(box.tolist()))
    assert len(seen) > 30  # really jittered
    # propagated_box = carried_box with the margin in mm at the slice's spacing and the training jitter
    spacing = (2.4, 2.4)
    built = make_prompt(mask, "propagated_box", np.random.default_rng(5), spacing=spacing)
    expected = carried_box(mask, margin_px(CARRY_MARGIN_MM, spacing), np.random.default_rng(5), CARRY_TRAIN_JITTER_PX)
    assert np.array_equal(built.box, expected) and built.points is None
    with pytest.raises(ValueError, match="spacing"):
        make_prompt(mask, "propagated_box", np.random.default_rng(5))
