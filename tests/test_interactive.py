"""Correction clicks, the rounds protocol and NoC (hand-made oracles), and one interactive round
through the suite's decode path against segment-anything's own SamPredictor (random-weight vit_b)."""
import cv2
import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from synthetic import write_rawdata

from utils.core.seeding import child_rng
from utils.eval.dice import dice_score
from utils.eval.noc import mean_noc, noc, summarise_rounds
from utils.inference.clicks import Click, next_click, with_click
from utils.inference.decoder import CacheDecoder
from utils.inference.prompts import Prompt, grown_box, make_prompt
from utils.inference.rounds import run_rounds
from utils.models.sam import load_model, to_uint8

H = W = 64


def square(mask, row0, col0, side_rows, side_cols=None):
    mask[row0 : row0 + side_rows, col0 : col0 + (side_cols or side_rows)] = True
    return mask


def empty():
    return np.zeros((H, W), bool)


# ---- the click rule on hand-made masks -------------------------------------------------------------

def test_center_click_on_a_missed_blob_is_positive_at_its_centre():
    truth = square(empty(), 10, 10, 20)
    pred = truth.copy()
    pred[12:21, 14:23] = False  # a 9 x 9 hole: rows 12..20, cols 14..22, centre (x=18, y=16)
    assert next_click(pred, truth) == Click(18, 16, 1)


def test_center_click_on_a_leak_is_negative_at_its_centre():
    truth = square(empty(), 10, 10, 20)
    pred = square(truth.copy(), 40, 44, 9)  # a 9 x 9 leak: rows 40..48, cols 44..52, centre (48, 44)
    assert next_click(pred, truth) == Click(48, 44, 0)


def test_center_click_larger_error_wins():
    truth = square(empty(), 10, 10, 20)
    pred = truth.copy()
    pred[12:21, 14:23] = False  # missed: 81 px, centre (18, 16)
    leak = square(pred.copy(), 40, 40, 11)  # leak: 121 px, rows/cols 40..50, centre (45, 45)
    assert next_click(leak, truth) == Click(45, 45, 0)
    small_leak = square(pred.copy(), 40, 40, 7)  # leak: 49 px < 81 px
    assert next_click(small_leak, truth) == Click(18, 16, 1)


def test_center_click_labels_touching_missed_and_leaked_parts_separately():
    # rows 10..20; truth cols 10..20, pred cols 21..29: the XOR is ONE connected band (cols 10..29),
    # but it is 121 px of missed organ beside 99 px of leak: the missed part wins, clicked at ITS
    # centre (x=15, y=15), not at the band's centre by the seam (x=19 or 20).
    truth = square(empty(), 10, 10, 11, 11)
    pred = square(empty(), 10, 21, 11, 9)
    assert next_click(pred, truth) == Click(15, 15, 1)


def test_center_click_uses_4_connectivity():
    # two 5 x 5 missed squares touching only at a corner, and a 6 x 6 leak: with 4-connectivity the
    # missed squares are two 25 px regions and the 36 px leak wins (8-connectivity would give 50 px).
    truth = square(square(empty(), 10, 10, 5), 15, 15, 5)
    pred = square(empty(), 40, 40, 6)
    click = next_click(pred, truth)
    assert click.label == 0 and pred[click.y, click.x]


def test_center_click_at_the_border_is_inside():
    truth = empty()
    pred = square(empty(), 0, 0, 7, 64)  # a leak along the top edge: padding keeps the click off row 0
    click = next_click(pred, truth)
    assert click.label == 0 and click.y == 3


def test_no_click_when_perfect():
    truth = square(empty(), 10, 10, 20)
    assert next_click(truth.copy(), truth) is None
    assert next_click(empty(), empty(), "random", child_rng(0)) is None


def test_random_click_is_seeded_and_in_the_error_region():
    truth = square(empty(), 10, 10, 20)
    pred = truth.copy()
    pred[12:21, 14:23] = False
    pred = square(pred, 40, 40, 11)
    missed, leak = truth & ~pred, pred & ~truth
    clicks = [next_click(pred, truth, "random", child_rng(seed, 4)) for seed in range(200)]
    assert clicks[0] == next_click(pred, truth, "random", child_rng(0, 4))
    for c in clicks:
        assert (missed if c.label == 1 else leak)[c.y, c.x]
    assert {c.label for c in clicks} == {0, 1}
    assert len(set(clicks)) > 50
    with pytest.raises(ValueError, match="rng"):
        next_click(pred, truth, "random")
    with pytest.raises(ValueError, match="click rule"):
        next_click(pred, truth, "nearest")


def test_with_click_appends_and_keeps_the_box():
    box = Prompt(box=np.array([1, 2, 30, 40], np.float32))
    one = with_click(box, Click(5, 6, 0))
    assert one.box.tolist() == [1, 2, 30, 40] and one.points.tolist() == [[5, 6]] and one.labels.tolist() == [0]
    two = with_click(one, Click(7, 8, 1))
    assert two.points.tolist() == [[5, 6], [7, 8]] and two.labels.tolist() == [0, 1]
    assert two.points.dtype == np.float32 and two.labels.dtype == np.int64


# ---- NoC -----------------------------------------------------------------------------------------------

def test_noc_hand_counts():
    curve = [0.50, 0.70, 0.86, 0.91, 0.95]
    assert noc(curve, 0.85) == 2 and noc(curve, 0.90) == 3
    assert noc([0.90, 0.2, 0.95], 0.90) == 0  # the start prompt already reaches it
    never = [0.2, 0.5, 0.8, 0.84]
    assert noc(never, 0.85) == 3  # never reached: N = 3 click rounds
    assert mean_noc([curve, [0.9, 0.9, 0.9, 0.9, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5]], 0.85) == pytest.approx(
        (2 + 0 + 4) / 3)


def test_summarise_rounds_means():
    dice = np.array([[0.5, 0.9, 0.9], [0.7, 0.8, 0.95], [0.2, 0.4, 0.6]])
    out = summarise_rounds([1, 1, 6], dice)
    spleen, liver = out["organs"]["spleen"], out["organs"]["liver"]
    assert spleen["dice_per_click"] == pytest.approx([0.6, 0.85, 0.925]) and spleen["n"] == 2
    assert spleen["noc"] == {"85": 1.5, "90": 1.5}
    assert liver["noc"] == {"85": 2.0, "90": 2.0}
    assert out["dice_per_click"] == pytest.approx([0.4, 0.625, 0.7625])  # mean over organs
    assert out["noc"]["85"] == pytest.approx((1.5 + 2) / 2)  # mean over organs, like mDice
    balanced = summarise_rounds([1, 1, 6, 6], np.vstack([dice, dice[2:]]))  # two samples per organ:
    assert balanced["noc"]["85"] == pytest.approx(mean_noc(np.vstack([dice, dice[2:]]), 0.85))  # = per sample


# ---- the rounds protocol with a stand-in decoder ------------------------------------------------------

class Painter:
    """Stand-in for SAM: fills the box, then in click order paints (label 1) or erases (label 0) a disk
    of ``radius`` at each point. Its low-res output is a tag (100 * sample + points seen) so the mask
    input each round receives can be checked."""

    def __init__(self, radius=2):
        self.radius = radius
        self.calls = []

    def __call__(self, indices, prompts, mask_input):
        self.calls.append((np.asarray(indices).copy(), None if mask_input is None else mask_input.clone()))
        logits = torch.empty(len(prompts), H, W)
        low = torch.empty(len(prompts), 1, 256, 256)
        for k, p in enumerate(prompts):
            canvas = np.zeros((H, W), np.uint8)
            if p.box is not None:
                x0, y0, x1, y1 = (int(v) for v in p.box)
                canvas[y0 : y1 + 1, x0 : x1 + 1] = 1
            points = [] if p.points is None else p.points
            for (x, y), label in zip(points, [] if p.labels is None else p.labels):
                cv2.circle(canvas, (int(x), int(y)), self.radius, int(label), -1)
            logits[k] = torch.from_numpy(np.where(canvas > 0, 4.0, -4.0))
            low[k] = 100.0 * int(indices[k]) + len(points)
        return logits, low


def organ():
    truth = empty()
    cv2.ellipse(truth.view(np.uint8), (30, 32), (20, 12), 15, 0, 360, 1, -1)
    return truth


def test_painter_dice_rises_round_by_round():
    truth = organ()
    box = grown_box(truth, 6)  # a box too large: leaks to erase
    starts = [make_prompt(truth, "one_central_point", child_rng(0)), Prompt(box=box)]
    truths = np.stack([truth, truth])
    painter = Painter(radius=3)
    rounds = run_rounds(truths, starts, painter, n_clicks=8, keep_masks=True)
    assert rounds.dice.shape == (2, 9)
    assert np.all(np.diff(rounds.dice, axis=1) >= 0)
    assert np.all(rounds.dice[:, -1] > rounds.dice[:, 0] + 0.04)
    assert len(painter.calls) == 9  # one decode call per round for the whole batch
    assert [c.label for c in rounds.clicks[0]] == [1] * 8  # the point start misses organ: positives
    assert [c.label for c in rounds.clicks[1]] == [0] * 8  # the box start leaks: negatives
    assert rounds.prompts[1].box.tolist() == box.tolist() and len(rounds.prompts[1].points) == 8
    for i in range(2):  # Dice is that of the kept masks
        for r in range(9):
            assert rounds.dice[i, r] == pytest.approx(dice_score(rounds.masks[i, r], truth))


def test_random_rule_rounds_are_seeded_per_sample():
    truth = organ()
    start = make_prompt(truth, "one_central_point", child_rng(0))

    def run(rngs):
        return run_rounds(np.stack([truth, truth]), [start, start], Painter(), n_clicks=6, rule="random", rngs=rngs)

    a = run([child_rng(1, 0), child_rng(1, 1)])
    b = run([child_rng(1, 0), child_rng(1, 1)])
    assert a.clicks == b.clicks and np.array_equal(a.dice, b.dice)
    assert a.clicks[0] != a.clicks[1]  # each sample draws from its own generator
    c = run_rounds(truth[None], [start], Painter(), n_clicks=6, rule="random", rngs=[child_rng(1, 1)])
    assert c.clicks[0] == a.clicks[1]  # ... so its clicks do not depend on the batch
    assert np.all(a.dice[:, -1] > a.dice[:, 0])
    with pytest.raises(ValueError, match="rng"):
        run_rounds(truth[None], [start], Painter(), n_clicks=1, rule="random")


def test_mask_input_is_the_previous_rounds_low_res_of_the_same_sample():
    truth = organ()
    starts = [make_prompt(truth, "one_central_point", child_rng(0))] * 3
    painter = Painter()
    run_rounds(np.stack([truth] * 3), starts, painter, n_clicks=3)
    assert painter.calls[0][1] is None
    for r, (indices, mask_input) in enumerate(painter.calls[1:], start=1):
        assert mask_input.shape == (len(indices), 1, 256, 256)
        for k, i in enumerate(indices):  # previous round: start point + r - 1 clicks
            assert torch.all(mask_input[k] == 100.0 * i + r)
    off = Painter()
    run_rounds(np.stack([truth] * 3), starts, off, n_clicks=3, mask_input=False)
    assert all(m is None for _, m in off.calls)


def test_a_perfect_sample_gets_no_more_clicks():
    truth = organ()
    dot = empty()
    cv2.circle(dot.view(np.uint8), (20, 20), 2, 1, -1)  # exactly what the painter paints at (20, 20)
    starts = [Prompt(points=np.array([[20, 20]], np.float32), labels=np.array([1])),
              make_prompt(truth, "one_central_point", child_rng(0))]
    painter = Painter()
    rounds = run_rounds(np.stack([dot, truth]), starts, painter, n_clicks=4)
    assert rounds.dice[0].tolist() == [1.0] * 5 and rounds.clicks[0] == []
    assert len(rounds.clicks[1]) == 4
    assert [c[0].tolist() for c in painter.calls] == [[0, 1], [1], [1], [1], [1]]


# ---- one interactive round through the suite's decode path vs SamPredictor ---------------------------

@pytest.fixture(scope="module")
def vit_b_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interactive_parity")
    # A non-square slice (72 x 96) so the resize, padding and crop-back are all exercised.
    root = write_rawdata(tmp / "btcv", case_ids=(1,), shape=(96, 72, 3))
    from utils.data.slice_store import SliceStore, build_store
    from utils.embeddings.cache import EmbeddingCache

    store = SliceStore(build_store(root, tmp / "slices", progress=False)[0])
    torch.manual_seed(0)
    model = load_model("vit_b", random_init=True)
    cache = EmbeddingCache(model, store, root=tmp / "cache")
    cache.ensure([0], progress=False)
    image, _ = store.load(0)
    predictor = SamPredictor(model.sam)
    predictor.set_image(np.repeat(to_uint8(image)[:, :, None], 3, axis=2))
    samples = cache.index.samples([0])[:3]  # three organs are enough, and keep this CPU test short
    truths = np.stack([cache.label(row) == organ for row, organ in samples])
    return model, cache, predictor, samples, truths


def predict(predictor, prompt, mask_input=None):
    """SamPredictor's (logits (H, W), low-res (256, 256)) for one prompt, single-mask output."""
    masks, _, low = predictor.predict(point_coords=prompt.points, point_labels=prompt.labels, box=prompt.box,
                                      mask_input=mask_input, multimask_output=False, return_logits=True)
    return masks[0], low


@pytest.mark.parametrize("start", ["one_central_point", "bound_box", "center_and_negatives"])
def test_one_round_with_clicks_and_mask_input_equals_sam_predictor(vit_b_setup, start):
    _, cache, predictor, samples, truths = vit_b_setup
    assert len(samples) >= 3
    size = truths.shape[1:]
    prompts, lows, expected = [], [], []
    for i, truth in enumerate(truths):
        prompt = make_prompt(truth, start, child_rng(0, i))
        logits0, low0 = predict(predictor, prompt)
        click = next_click(logits0 > 0, truth)
        assert click is not None  # random weights: there is always something to correct
        prompt = with_click(prompt, click)
        assert (prompt.box is not None) == (start == "bound_box")  # box + points for the box start
        prompts.append(prompt)
        lows.append(low0)
        expected.append(predict(predictor, prompt, mask_input=low0))
    mask_input = torch.from_numpy(np.stack(lows))  # (N, 1, 256, 256)
    indices = np.arange(len(samples))
    decoder = CacheDecoder(cache)
    # 1) on the predictor's own fp32 features: equal to float precision
    logits, low = decoder.round_decoder(predictor.features, size)(indices, prompts, mask_input)
    # 2) the suite path: fp16 cache, each sample's embedding gathered from the cache
    cached_logits, _ = decoder.cache_rounds([r for r, _ in samples], size)(indices, prompts, mask_input)
    for i, (expected_logits, expected_low) in enumerate(expected):
        assert torch.allclose(low[i], torch.from_numpy(expected_low), atol=1e-4, rtol=1e-4)
        assert np.allclose(logits[i].numpy(), expected_logits, atol=1e-3, rtol=1e-4)
        ours = cached_logits[i].numpy()
        assert np.abs(ours - expected_logits).max() < 0.05 * max(1.0, np.abs(expected_logits).max())
        clear = np.abs(expected_logits) > 0.05
        assert np.array_equal((ours > 0)[clear], (expected_logits > 0)[clear])
    # the mask input matters: without it the same prompts decode differently
    no_mask, _ = decoder.round_decoder(predictor.features, size)(indices, prompts, None)
    assert not torch.allclose(no_mask, logits, atol=1e-3)


def test_run_rounds_equals_a_sam_predictor_loop(vit_b_setup):
    _, cache, predictor, samples, truths = vit_b_setup
    starts = [make_prompt(t, "bound_box", child_rng(0, i)) for i, t in enumerate(truths)]
    rounds = run_rounds(truths, starts, CacheDecoder(cache).round_decoder(predictor.features, truths.shape[1:]),
                        n_clicks=2)
    for i, truth in enumerate(truths):
        prompt, low, curve, clicks = starts[i], None, [], []
        for r in range(3):
            logits, new_low = predict(predictor, prompt, low)
            curve.append(dice_score(logits > 0, truth))
            click = next_click(logits > 0, truth)
            if r == 2 or click is None:
                break
            clicks.append(click)
            prompt, low = with_click(prompt, click), new_low
        curve += [curve[-1]] * (3 - len(curve))
        assert rounds.clicks[i] == clicks
        assert rounds.dice[i] == pytest.approx(curve, abs=1e-3)


def test_decode_refuses_mixed_prompts_and_a_misshapen_mask_input(vit_b_setup):
    from utils.inference.decoding import decode

    model, _, predictor, _, truths = vit_b_setup
    point = make_prompt(truths[0], "one_central_point", child_rng(0))
    box = make_prompt(truths[0], "bound_box", child_rng(0))
    size = truths.shape[1:]
    with torch.no_grad():
        with pytest.raises(ValueError, match="one kind"):
            decode(model, predictor.features, [point, box], [size, size])
        with pytest.raises(ValueError, match="one kind"):
            decode(model, predictor.features, [box, with_click(box, Click(3, 4, 1))], [size, size])
        with pytest.raises(ValueError, match="mask_input"):
            decode(model, predictor.features, [point], [size], mask_input=torch.zeros(1, 256, 256))
