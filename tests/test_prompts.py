import cv2
import numpy as np
import pytest

from utils.prompts import (
    PROMPT_TYPES, bound_box, central_point, larger_box, make_prompt, parse_prompt_types, random_points,
)
from utils.seeding import child_rng


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
    for name in PROMPT_TYPES:
        prompt = make_prompt(mask, name, child_rng(0, 3))
        if prompt.points is not None:
            assert prompt.labels.tolist() == [1] * len(prompt.points)
            assert all(mask[int(y), int(x)] for x, y in prompt.points)
        else:
            assert prompt.box.shape == (4,)


def test_parse_prompt_types():
    assert parse_prompt_types(None) == list(PROMPT_TYPES)
    assert parse_prompt_types("bound_box,one_central_point") == ["bound_box", "one_central_point"]
    with pytest.raises(ValueError, match="unknown prompt"):
        parse_prompt_types("two_points")
