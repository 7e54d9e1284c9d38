"""The 3-D click rule on hand-made volumes (largest 26-connected error component, its distance-transform
maximum in mm, the sign) and the click session with stand-in decoders (which slices a click changes)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from utils.inference.clicks3d import Click3D, ClickSession, next_click_3d, with_clicks
from utils.inference.prompts import Prompt, bound_box
from utils.inference.propagation import StopRules, propagate


def test_no_error_no_click():
    truth = np.zeros((3, 5, 5), bool)
    truth[1, 1:4, 1:4] = True
    assert next_click_3d(truth, truth) is None


def test_positive_click_at_the_centre_of_the_largest_missed_component():
    truth = np.zeros((7, 12, 12), bool)
    truth[1:6, 2:9, 2:9] = True  # a 5 x 7 x 7 block
    pred = truth.copy()
    pred[1:6, 2:9, 2:9] = False  # all of it missed ...
    pred[3, 5, 5] = True  # ... but its very centre, which makes the centre a boundary
    leak = np.zeros_like(truth)
    leak[0, 10:12, 10:12] = True  # a small leak elsewhere: 4 voxels
    click = next_click_3d(pred | leak, truth)
    assert click.label == 1
    # The oracle: the same component's EDT (padded), computed here by hand with scipy, and its first maximum.
    component = truth & ~pred
    distance = ndimage.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1, 1:-1]
    assert distance[click.z, click.y, click.x] == distance.max()
    assert (click.z, click.y, click.x) != (3, 5, 5) and component[click.z, click.y, click.x]


def test_negative_click_when_the_largest_component_is_mostly_leak():
    truth = np.zeros((5, 10, 10), bool)
    truth[2, 4:6, 4:6] = True
    pred = truth.copy()
    pred[1:4, 0:3, 0:3] = True  # a 27-voxel leak
    click = next_click_3d(pred, truth)
    assert click == Click3D(z=2, x=1, y=1, label=0)  # the leak cube's centre


def test_components_are_26_connected_so_a_diagonal_chain_is_one_error():
    truth = np.zeros((6, 8, 8), bool)
    pred = np.zeros_like(truth)
    for i in range(5):  # five leaked voxels touching only at corners: one 26-connected component
        pred[i, i, i] = True
    pred[0, 6:8, 6:8] = True  # four voxels face-connected: the largest under 6-connectivity, not under 26
    click = next_click_3d(pred, truth)
    assert click.label == 0 and click.z == click.x == click.y  # on the diagonal chain


def test_the_distance_transform_is_in_millimetres():
    truth = np.zeros((9, 9, 9), bool)
    truth[1:8, 1:8, 1:8] = True
    pred = np.zeros_like(truth)
    pred[4, 4, :] = True  # splits the cube's centre row: the distance maximum moves off it
    iso = next_click_3d(pred, truth, (1.0, 1.0, 1.0))
    thick = next_click_3d(pred, truth, (5.0, 1.0, 1.0))  # slices 5 mm apart: z distances count five times
    for click, spacing in ((iso, (1, 1, 1)), (thick, (5, 1, 1))):
        distance = ndimage.distance_transform_edt(np.pad(truth & ~pred, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        assert distance[click.z, click.y, click.x] == pytest.approx(distance.max())
    assert iso != thick


def test_with_clicks_appends_points_to_a_box():
    box = Prompt(box=np.array([1, 2, 8, 9], np.float32))
    prompt = with_clicks(box, [Click3D(3, 4, 5, 1), Click3D(3, 6, 7, 0)])
    assert prompt.box.tolist() == [1, 2, 8, 9]
    assert prompt.points.tolist() == [[4, 5], [6, 7]] and prompt.labels.tolist() == [1, 0]
    assert with_clicks(box, []) is box


class ClickAwareDecoder:
    """A stand-in SAM: inside its box it returns the organ, but never its left column block (x < 6); a
    positive click in that block makes it answer the slice's whole organ. It records each (z, prompt, has
    mask input)."""

    def __init__(self, truth):
        self.truth, self.calls = truth, []

    def __call__(self, requests):
        out = []
        for z, prompt, mask_input in requests:
            self.calls.append((z, prompt, mask_input is not None))
            x0, y0, x1, y1 = np.round(prompt.box).astype(int)
            answer = np.zeros_like(self.truth[z])
            answer[y0 : y1 + 1, x0 : x1 + 1] = self.truth[z, y0 : y1 + 1, x0 : x1 + 1]
            clicked_left = prompt.points is not None and any(
                label == 1 and x < 6 for (x, _), label in zip(prompt.points, prompt.labels))
            if clicked_left:
                answer = self.truth[z].copy()
            else:
                answer[:, :6] = False
            out.append((np.where(answer, 8.0, -8.0).astype(np.float32), torch.zeros(1, 256, 256)))
        return out


def organ_block(n_slices=9):
    truth = np.zeros((n_slices, 16, 16), bool)
    truth[1:8, 3:12, 3:12] = True  # slices 1..7
    return truth


def start_session(truth, repropagation, key=4):
    decoder = ClickAwareDecoder(truth)
    rules = StopRules(hold_through_rejects=True)
    start = propagate(len(truth), key, Prompt(box=bound_box(truth[key])),
                      lambda z, p: decoder([(z, p, None)])[0][0], "bound_box", rules=rules, z_limits=(1, 7))
    session = ClickSession(len(truth), {6: start}, {6: (1, 7)}, decoder, "bound_box", rules, (0.0, 0.0),
                           repropagation)
    return session, decoder


def test_a_click_re_decodes_its_slice_with_the_box_its_clicks_and_the_mask_input():
    truth = organ_block()
    session, decoder = start_session(truth, "none")
    before = session.organs[6].mask(truth.shape)
    assert not before[:, :, 3:6].any() and (before == (truth & (np.arange(16) >= 6))).all()
    decoder.calls.clear()
    placed = session.click_round({6: truth}, truth.shape, (1.0, 1.0, 1.0))
    click = placed[6]
    assert click.label == 1 and click.x < 6 and 1 <= click.z <= 7
    # one decode of the box alone (the slice's low-res logits), then box + click + mask input
    assert [(z, p.points is not None, m) for z, p, m in decoder.calls] == [(click.z, False, False), (click.z, True, True)]
    after = session.organs[6].mask(truth.shape)
    assert (after[click.z] == truth[click.z]).all()  # the clicked slice is now right ...
    unchanged = [z for z in range(9) if z != click.z]
    assert (after[unchanged] == before[unchanged]).all()  # ... and with "none" nothing else changed


@pytest.mark.parametrize("repropagation, expect", [("downstream", "away"), ("both", "all")])
def test_re_propagation_rewrites_downstream_slices_and_stops_before_clicked_ones(repropagation, expect):
    truth = organ_block()
    session, decoder = start_session(truth, repropagation)
    state = session.organs[6]
    state.clicks[7] = [Click3D(7, 8, 8, 1)]  # a slice the person already clicked: walks stop before it
    decoder.calls.clear()
    # force the next click onto slice 5: every other slice right, slice 5 all missed
    for z in state.logits:
        state.logits[z] = np.where(truth[z], 8.0, -8.0).astype(np.float32)
    state.logits[5] = np.full((16, 16), -8.0, np.float32)
    click = session.click_round({6: truth}, truth.shape, (1.0, 1.0, 1.0))[6]
    assert click.z == 5
    walked = sorted({z for z, p, m in decoder.calls if p.points is None and z != 5})
    if expect == "away":  # 5 > key 4: only towards 7, and 7 is clicked, so 6 alone
        assert walked == [6]
    else:  # both ways from 5: 6 (stopping before 7), and 4, 3, 2, 1
        assert walked == [1, 2, 3, 4, 6]
    assert 7 not in {z for z, _, _ in decoder.calls}


def test_unknown_repropagation_is_refused():
    with pytest.raises(ValueError, match="repropagation"):
        start_session(organ_block(), "sideways")


def test_without_mask_input_the_clicked_slice_is_decoded_from_its_box_and_clicks_alone():
    truth = organ_block()
    session, decoder = start_session(truth, "none")
    session.mask_input = False
    decoder.calls.clear()
    click = session.click_round({6: truth}, truth.shape, (1.0, 1.0, 1.0))[6]
    assert [(z, p.points is not None, m) for z, p, m in decoder.calls] == [(click.z, True, False)]


def test_the_dice_scatter_takes_modes_run_for_box_prompts_only(tmp_path):
    """box3d / clicks3d run for box prompt types only: the figure must not expect every prompt in every mode
    (make reproduce once failed here with a KeyError)."""
    from utils.report.plots import save_dice_scatter

    organ = {"liver": {"dice": 0.8, "slice_dice": 0.7}}
    modes = {"per_slice": {"bound_box": {"organs": organ}, "one_central_point": {"organs": organ}},
             "box3d": {"bound_box": {"organs": organ}}}
    path = save_dice_scatter(modes, tmp_path / "scatter.png", "test")
    assert path.stat().st_size > 0


class LeakyClickDecoder(ClickAwareDecoder):
    """ClickAwareDecoder whose answer to a click also leaks a far corner (rows 0-1, columns 13-15)."""

    def __call__(self, requests):
        out = super().__call__(requests)
        for (_, prompt, _), (logits, _) in zip(requests, out):
            if prompt.points is not None:
                logits[0:2, 13:16] = 8.0
        return out


@pytest.mark.parametrize("mode", ["global", "local"])
def test_local_refinement_keeps_the_clicked_change_and_refuses_the_far_leak(mode):
    from utils.inference.clicks import Refinement

    truth = organ_block()
    decoder = LeakyClickDecoder(truth)
    rules = StopRules(hold_through_rejects=True)
    start = propagate(len(truth), 4, Prompt(box=bound_box(truth[4])), lambda z, p: decoder([(z, p, None)])[0][0],
                      "bound_box", rules=rules, z_limits=(1, 7))
    session = ClickSession(len(truth), {6: start}, {6: (1, 7)}, decoder, "bound_box", rules, (0.0, 0.0), "none",
                           refinement=Refinement(mode))
    click = session.click_round({6: truth}, truth.shape, (1.0, 1.0, 1.0))[6]
    after = session.organs[6].mask(truth.shape)[click.z]
    assert after[3:12, 3:6].all()  # the missed block the click was about: added either way
    assert after[0:2, 13:16].all() == (mode == "global")  # the far leak: only a global refinement takes it
    if mode == "local":
        assert (after == truth[click.z]).all()
