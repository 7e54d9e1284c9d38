"""Interactive fine-tuning (utils.train.interactive, utils.inference.training_clicks): the training click
sampler on hand-made masks, the sessions' start prompts, the run-identity part, and the step itself on
the real LiteMedSAM decoder against hand-assembled prompt_encoder + mask_decoder calls."""
import dataclasses

import numpy as np
import pytest
import torch

import utils.train.interactive as interactive
from utils.core.seeding import child_rng
from utils.inference.decoding import prompt_inputs
from utils.inference.prompts import bound_box
from utils.inference.training_clicks import draw_start_prompt, sample_training_click
from utils.scaffold.runs import run_key
from utils.train.interactive import (
    InteractiveSettings,
    encode_prompts,
    interactive_identity,
    make_interactive_step,
    run_session,
    session_loss,
)

H, W = 40, 48


def masks_with_both_errors():
    """truth: a 10x10 square; pred: the same square moved 4 px right and 2 px down (missed and leaked parts)."""
    truth = np.zeros((H, W), bool)
    pred = np.zeros((H, W), bool)
    truth[10:20, 10:20] = True
    pred[12:22, 14:24] = True
    return pred, truth


# ---- the training click sampler on hand-made masks ----------------------------------------------------

def test_click_is_always_in_the_error_region_with_the_kind_as_label():
    pred, truth = masks_with_both_errors()
    missed, leak = truth & ~pred, pred & ~truth
    labels = []
    for seed in range(400):
        click = sample_training_click(pred, truth, child_rng(seed))
        assert 0 <= click.x < W and 0 <= click.y < H
        if click.label == 1:
            assert missed[click.y, click.x], (seed, click)  # (x, y) = (column, row)
        else:
            assert click.label == 0 and leak[click.y, click.x], (seed, click)
        labels.append(click.label)
    assert 0 < np.mean(labels) < 1  # both kinds are drawn


def test_uniform_clicks_make_negatives_as_often_as_the_leak_shares_the_error():
    pred, truth = masks_with_both_errors()
    truth[25:35, 30:40] = True  # a second, wholly missed organ piece: 100 more missed pixels
    missed, leak = (truth & ~pred).sum(), (pred & ~truth).sum()
    rng = child_rng(0)
    draws = [sample_training_click(pred, truth, rng) for _ in range(3000)]
    share = np.mean([c.label == 0 for c in draws])
    assert share == pytest.approx(leak / (missed + leak), abs=0.03)
    # every pixel of the error can be drawn: about 3000 / 216 draws each, none left out
    hit = {(c.y, c.x) for c in draws}
    assert hit == set(zip(*np.nonzero(truth ^ pred)))


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_negative_share_sets_how_often_the_leak_is_clicked(share):
    pred, truth = masks_with_both_errors()
    missed, leak = truth & ~pred, pred & ~truth
    clicks = [sample_training_click(pred, truth, child_rng(s), negative_share=share) for s in range(600)]
    for c in clicks:
        assert (missed if c.label == 1 else leak)[c.y, c.x]
    assert np.mean([c.label == 0 for c in clicks]) == pytest.approx(share, abs=0.06)


def test_one_kind_of_error_gets_its_label_whatever_the_share():
    truth = np.zeros((H, W), bool)
    truth[5:15, 5:15] = True
    under = truth.copy()
    under[5:15, 5:8] = False  # missed only
    over = truth.copy()
    over[20:25, 20:25] = True  # leak only
    for seed in range(50):
        for share in (None, 1.0):
            c = sample_training_click(under, truth, child_rng(seed), negative_share=share)
            assert c.label == 1 and truth[c.y, c.x] and not under[c.y, c.x]
        for share in (None, 0.0):
            c = sample_training_click(over, truth, child_rng(seed), negative_share=share)
            assert c.label == 0 and over[c.y, c.x] and not truth[c.y, c.x]


def test_no_click_on_a_perfect_mask_seeded_draws_and_refusals():
    pred, truth = masks_with_both_errors()
    assert sample_training_click(truth, truth, child_rng(0)) is None
    assert sample_training_click(np.zeros_like(truth), np.zeros_like(truth), child_rng(0), 0.5) is None
    assert sample_training_click(pred, truth, child_rng(7)) == sample_training_click(pred, truth, child_rng(7))
    with pytest.raises(TypeError, match="bool"):
        sample_training_click(pred.astype(np.float32), truth, child_rng(0))  # logits must be thresholded
    with pytest.raises(ValueError, match="one shape"):
        sample_training_click(pred[:, :-1], truth, child_rng(0))
    with pytest.raises(ValueError, match="negative_share"):
        sample_training_click(pred, truth, child_rng(0), negative_share=1.5)


# ---- start prompts ------------------------------------------------------------------------------------

def test_start_prompts_boxes_within_the_jitter_points_inside_the_organ():
    _, truth = masks_with_both_errors()
    tight = bound_box(truth)
    kinds = []
    for seed in range(200):
        prompt = draw_start_prompt(truth, child_rng(seed), box_fraction=0.5, box_jitter=3)
        if prompt.box is not None:
            assert prompt.points is None and np.abs(prompt.box - tight).max() <= 3
        else:
            (x, y), = prompt.points
            assert truth[int(y), int(x)] and prompt.labels.tolist() == [1]
        kinds.append(prompt.box is not None)
    assert np.mean(kinds) == pytest.approx(0.5, abs=0.1)
    assert all(draw_start_prompt(truth, child_rng(s), 1.0, 0).box.tolist() == tight.tolist() for s in range(20))
    assert all(draw_start_prompt(truth, child_rng(s), 0.0).box is None for s in range(20))


# ---- settings and run identity ------------------------------------------------------------------------

CHANGED = {"rounds": 6, "box_fraction": 0.25, "box_jitter": 10, "mask_feedback": 1.0, "loss": "dice_bce",
           "negative_share": 0.5, "click_sampling": "inner_half", "truth_click_share": 0.1, "no_click_rounds": 2,
           "random_rounds": True, "round_weighting": "linear", "click_loss_weight": 1.0, "click_radius": 3}


def test_every_interactive_hyperparameter_changes_the_run_key():
    base = InteractiveSettings()
    assert set(CHANGED) == {f.name for f in dataclasses.fields(InteractiveSettings)}  # none left untested
    key = run_key({"task": "task2", **interactive_identity(base)})
    assert run_key({"task": "task2", **interactive_identity(InteractiveSettings())}) == key
    for name, value in CHANGED.items():
        other = dataclasses.replace(base, **{name: value})
        assert run_key({"task": "task2", **interactive_identity(other)}) != key, name
    # JSON-stable values: 1 and 1.0 name the same setting
    assert interactive_identity(InteractiveSettings(mask_feedback=1)) == interactive_identity(
        InteractiveSettings(mask_feedback=1.0))
    assert list(interactive_identity(base)) == ["interactive"]


@pytest.mark.parametrize("bad", [{"rounds": -1}, {"rounds": 1.5}, {"box_fraction": 1.2}, {"box_jitter": -2},
                                 {"mask_feedback": -0.1}, {"loss": "focal"}, {"negative_share": 2.0}])
def test_settings_refuse_bad_values(bad):
    with pytest.raises(ValueError):
        InteractiveSettings(**bad)


def test_dice_bce_is_dice_plus_mean_bce_per_sample():
    from monai.losses import DiceLoss

    torch.manual_seed(0)
    logits, targets = torch.randn(3, 8, 8), torch.rand(3, 8, 8) > 0.5
    dice = session_loss(logits, targets, "dice")
    for i in range(3):
        expected = DiceLoss(sigmoid=True)(logits[i].reshape(1, 1, -1), targets[i].reshape(1, 1, -1).float())
        assert dice[i] == pytest.approx(float(expected), abs=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
    assert session_loss(logits, targets, "dice_bce") == pytest.approx((dice + bce.mean((1, 2))).tolist(), abs=1e-6)


# ---- the step on the real LiteMedSAM decoder ----------------------------------------------------------

@pytest.fixture(scope="module")
def lite(tiny_study):
    """LiteMedSAM (frozen), the tiny study's cache, and 6 of its training samples (cache id 0, row, organ)."""
    from utils.embeddings.cache import EmbeddingCache
    from utils.models.sam import load_model

    torch.manual_seed(0)
    model = load_model("lite_medsam")
    for p in model.sam.parameters():
        p.requires_grad_(False)
    cache = EmbeddingCache(model, tiny_study["store"], root=tiny_study["cache"])
    samples = [(0, r, o) for r, o in cache.index.samples(cache.index.rows_for("train"))][:6]
    return model, cache, samples


def trainable_copy(model):
    import copy

    module = torch.nn.ModuleDict({"prompt_encoder": copy.deepcopy(model.sam.prompt_encoder),
                                  "mask_decoder": copy.deepcopy(model.sam.mask_decoder)})
    return module.requires_grad_(True)


@pytest.fixture(scope="module")
def watched_session(lite):
    """One session group (6 samples, 2 correction rounds) run with grad enabled, every click draw recorded:
    (grad enabled?, type and dtype of pred, pred) per call. The decoder passes are shared by the tests below."""
    model, cache, samples = lite
    trainable = trainable_copy(model)
    settings = InteractiveSettings(rounds=2, box_fraction=0.5, box_jitter=5, mask_feedback=0.5)
    seen = []
    real = interactive.draw_training_click

    def watched(pred, truth, rng, *rule):
        seen.append((torch.is_grad_enabled(), type(pred), pred.dtype, pred.copy()))
        return real(pred, truth, rng, *rule)

    group, = interactive.make_session_prepare([cache], settings, seed=0)(samples, 0)
    interactive.draw_training_click = watched
    try:
        done = run_session(model, trainable, group, settings, seed=0, epoch=0)
    finally:
        interactive.draw_training_click = real
    return model, trainable, settings, group, done, seen


def hand_low_res(model, trainable, embedding, prompt, size, mask_input):
    """Upstream PromptEncoder.forward + MaskDecoder.forward for one prompt on one image (single mask)."""
    points, boxes = prompt_inputs(model, [prompt], [size])
    encoder, decoder = trainable["prompt_encoder"], trainable["mask_decoder"]
    sparse, dense = encoder(points=points, boxes=boxes, masks=mask_input)
    low, _ = decoder(image_embeddings=embedding[None], image_pe=encoder.get_dense_pe(),
                     sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    return low[0]


def test_each_round_equals_a_hand_assembled_prompt_encoder_and_mask_decoder_call(watched_session):
    from monai.losses import DiceLoss

    model, trainable, settings, group, done, _ = watched_session
    assert {p.box is not None for p in group.starts} == {True, False}  # boxes and points: grouping by kind
    assert done.use_mask[1:].any() and not done.use_mask[1:].all()  # the mask given to some, not all
    assert not done.use_mask[0].any() and done.mask_inputs[0] is None
    with torch.no_grad():
        for r in range(settings.rounds + 1):
            for i, prompt in enumerate(done.prompts[r]):
                mask_input = done.mask_inputs[r][i : i + 1] if done.use_mask[r, i] else None
                expected = hand_low_res(model, trainable, group.embeddings[i], prompt, group.size, mask_input)
                assert torch.allclose(done.low_res[r][i], expected, atol=1e-4, rtol=1e-4), (r, i)
            if r:  # one click more than the round before (none of these is perfect), mask = last round's logits
                for before, now in zip(done.prompts[r - 1], done.prompts[r]):
                    assert len(now.points) == (0 if before.points is None else len(before.points)) + 1
                    assert np.array_equal(now.points[:-1], before.points if before.points is not None
                                          else now.points[:0])  # the earlier clicks stay, in order
                assert torch.equal(done.mask_inputs[r], done.low_res[r - 1])
        # the loss is Task 2's: MONAI DiceLoss (sigmoid) on the slice-resolution logits, a mean over samples
        logits = model.postprocess(done.low_res[0], group.size)[:, 0].flatten(1)
        task2 = DiceLoss(sigmoid=True)(logits[:, None], group.targets.flatten(1)[:, None].float())
        assert float(done.losses[0].mean()) == pytest.approx(float(task2), abs=1e-6)


def test_clicks_are_drawn_under_no_grad_from_the_thresholded_previous_round(watched_session):
    model, _, settings, group, done, seen = watched_session
    n = len(group.samples)
    assert len(seen) == settings.rounds * n
    assert all(not grad and kind is np.ndarray and dtype == bool for grad, kind, dtype, _ in seen)
    assert all(loss.requires_grad for loss in done.losses)  # while the decoding around them is differentiable
    for r in range(1, settings.rounds + 1):
        previous = (model.postprocess(done.low_res[r - 1].detach(), group.size)[:, 0] > 0).numpy()
        for i in range(n):
            assert np.array_equal(seen[(r - 1) * n + i][3], previous[i])


def decoder_grads(step, trainable, batch):
    trainable.zero_grad(set_to_none=True)
    result = step(batch, 0)
    result.loss.backward()
    return float(result.loss.detach()), {k: p.grad.clone() for k, p in trainable.named_parameters()
                                         if p.grad is not None}


def test_no_gradient_flows_through_the_fed_back_mask(lite, monkeypatch):
    model, cache, samples = lite
    trainable = trainable_copy(model)
    settings = InteractiveSettings(rounds=1, mask_feedback=1.0)  # round 1 gets round 0's logits
    step = make_interactive_step([cache], settings, seed=0, trainable=trainable)
    batch = samples[:1]
    offered = []
    real_encode = interactive.encode_prompts

    def watch(encoder, points, boxes, mask_input, use_mask):
        offered.append(mask_input)
        return real_encode(encoder, points, boxes, mask_input, use_mask)

    monkeypatch.setattr(interactive, "encode_prompts", watch)
    loss, plain = decoder_grads(step, trainable, batch)
    fed = [m for m in offered if m is not None]
    assert fed and all(not m.requires_grad and m.grad_fn is None for m in fed)

    def detach_clone(encoder, points, boxes, mask_input, use_mask):  # cut the mask from the graph ourselves
        mask_input = None if mask_input is None else mask_input.detach().clone()
        return real_encode(encoder, points, boxes, mask_input, use_mask)

    monkeypatch.setattr(interactive, "encode_prompts", detach_clone)
    loss2, cut = decoder_grads(step, trainable, batch)
    assert loss2 == loss and plain.keys() == cut.keys()
    assert all(torch.equal(plain[k], cut[k]) for k in plain)
    # the oracle can fail: were the mask not detached, gradient would reach round 0 through it
    monkeypatch.setattr(interactive, "encode_prompts", real_encode)
    monkeypatch.setattr(interactive, "feedback", lambda low: low)
    loss3, leaky = decoder_grads(step, trainable, batch)
    assert loss3 == pytest.approx(loss, abs=1e-6)
    assert not all(torch.allclose(plain[k], leaky[k], atol=1e-7) for k in plain)


def test_encode_prompts_with_some_masks_equals_separate_calls_also_in_bf16(lite):
    from utils.core.precision import autocast

    model, cache, samples = lite
    encoder = model.sam.prompt_encoder
    truths = [cache.label(r) == o for _, r, o in samples[:3]]
    size = truths[0].shape
    prompts = [draw_start_prompt(t, child_rng(0, i), 1.0) for i, t in enumerate(truths)]
    points, boxes = prompt_inputs(model, prompts, [size] * 3)
    torch.manual_seed(1)
    masks = torch.randn(3, 1, 256, 256)
    use = np.array([True, False, True])
    with torch.no_grad():
        sparse, dense = encode_prompts(encoder, points, boxes, masks, use)
        for i in range(3):
            s, d = encoder(points=None, boxes=boxes[i : i + 1], masks=masks[i : i + 1] if use[i] else None)
            assert torch.allclose(sparse[i], s[0], atol=1e-6) and torch.equal(dense[i], d[0])
        with autocast(model.device, "bf16"):  # the fast path: the mask rows come in bf16, the others fp32
            sparse16, dense16 = encode_prompts(encoder, points, boxes, masks, use)
    assert dense16.dtype == torch.float32
    assert torch.allclose(dense16, dense, atol=0.05) and torch.equal(dense16[1], dense[1])


def test_draws_depend_on_seed_epoch_and_sample_not_on_the_batch(lite):
    _, cache, samples = lite
    settings = InteractiveSettings(rounds=2, box_fraction=0.5, mask_feedback=0.5)

    def draws(batch, epoch, seed=3):
        """{sample: (start, round-1 prompt, round-1 coin)}: round 1 on an all-empty prediction (every organ
        pixel missed), so the draws are compared without decoding."""
        group, = interactive.make_session_prepare([cache], settings, seed)(batch, epoch)
        empty = np.zeros_like(group.truths)
        prompts, coins = interactive.next_round_inputs(group, group.starts, empty, settings, seed, epoch, 1)
        flat = [(p.box, p.points, p.labels) for p in (*group.starts, *prompts)]
        n = len(group.samples)
        return {(0, *s): (flat[i], flat[n + i], coins[i]) for i, s in enumerate(group.samples)}

    def same(a, b):
        return all(np.array_equal(x, y) for pa, pb in zip(a[:2], b[:2]) for x, y in zip(pa, pb)) and a[2] == b[2]

    whole = draws(samples, epoch=0)
    part = draws(samples[4:6][::-1] + samples[1:2], epoch=0)
    assert all(same(whole[s], part[s]) for s in part)
    for s, (_, clicked, _) in whole.items():
        assert clicked[2][-1] == 1  # on an empty prediction every click is positive
    assert not all(same(whole[s], v) for s, v in draws(samples, epoch=1).items())
    assert not all(same(whole[s], v) for s, v in draws(samples, epoch=0, seed=4).items())


def test_step_contract_and_a_resumed_run_gives_the_same_curves(lite, tmp_path):
    from utils.scaffold.runs import open_run
    from utils.train.loop import LoopConfig, run_training

    model, cache, samples = lite
    settings = InteractiveSettings(rounds=1, box_jitter=5)
    batch = samples[:2]
    result = make_interactive_step([cache], settings, 0, trainable_copy(model))(batch, 0)
    assert result.count == 2 and len(result.round_dice_sum) == 2 and result.loss.requires_grad
    assert result.metric_sum == pytest.approx(sum(result.round_dice_sum) / 2)  # per sample: mean over rounds

    def train(epochs, resume, folder):  # one sample per epoch, drawn by the loop's seeded order
        trainable = trainable_copy(model)
        optimizer = torch.optim.SGD(trainable.parameters(), lr=0.01, momentum=0.9)
        step = make_interactive_step([cache], settings, 0, trainable)
        run, _ = open_run(tmp_path / folder, {"task": "test", **interactive_identity(settings)}, resume)
        config = LoopConfig(epochs=epochs, batch_size=1, samples_per_epoch=1, seed=0, monitor="val", run=run,
                            progress=False, prepare=step.prepare)
        return run_training(trainable, optimizer, batch, step, lambda e: {"val": -float(e)}, config, resume)[0]

    full = train(2, False, "full")
    train(1, False, "resumed")
    resumed = train(2, True, "resumed")
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-6)
    assert resumed["train_metric"] == pytest.approx(full["train_metric"], abs=1e-6)


# ---- clicks that work (issue 34): the training click rules, the click loss, the rounds ------------------

def thin_rim_and_a_deep_leak():
    """truth: a 20x20 square; pred: the square minus a 1-px rim on its left (20 missed px, depth 1) plus a
    6x6 leak beside it (depth 3): the leak is the deeper error whatever its size."""
    truth = np.zeros((H, W), bool)
    truth[10:30, 10:30] = True
    pred = truth.copy()
    pred[10:30, 10] = False
    pred[12:18, 32:38] = True
    return pred, truth


def test_inner_half_clicks_fall_deep_inside_the_error_with_the_deeper_depth():
    from utils.inference.training_clicks import _depth, inner_half_click

    pred, truth = thin_rim_and_a_deep_leak()
    leak = pred & ~truth
    depth = _depth(leak)
    clicks = {inner_half_click(pred, truth, child_rng(s)) for s in range(300)}
    for c in clicks:
        assert c.label == 0 and leak[c.y, c.x] and depth[c.y, c.x] > depth.max() / 2, c
    # the inner half of a 6x6 square (depth 1..3, > 1.5): its central 2x2 ... 4x4 pixels, every one drawn
    assert {(c.x, c.y) for c in clicks} == {(int(x), int(y)) for y, x in zip(*np.nonzero(depth > depth.max() / 2))}
    assert inner_half_click(truth, truth, child_rng(0)) is None
    # the oracle: scipy's exact Euclidean distance transform of the padded leak
    from scipy.ndimage import distance_transform_edt
    assert np.allclose(depth, distance_transform_edt(np.pad(leak, 1))[1:-1, 1:-1], atol=1e-3)


def test_draw_training_click_rules_and_the_truth_share():
    from utils.inference.clicks import next_click
    from utils.inference.training_clicks import draw_training_click

    pred, truth = thin_rim_and_a_deep_leak()
    assert draw_training_click(pred, truth, child_rng(0), "center") == next_click(pred, truth, "center")
    assert draw_training_click(truth, truth, child_rng(0), "uniform", truth_share=1.0) is None
    from_truth = [draw_training_click(pred, truth, child_rng(s), "inner_half", truth_share=1.0) for s in range(50)]
    assert all(c.label == 1 and truth[c.y, c.x] for c in from_truth)
    mixed = [draw_training_click(pred, truth, child_rng(s), "inner_half", truth_share=0.3) for s in range(1000)]
    assert np.mean([c.label == 1 for c in mixed]) == pytest.approx(0.3, abs=0.05)  # inner-half clicks are the leak's
    with pytest.raises(ValueError, match="choose from"):
        draw_training_click(pred, truth, child_rng(0), "edge")


def test_click_loss_is_the_mean_bce_over_the_disks_and_round_weights_are_cfr_icls():
    from utils.inference.prompts import Prompt
    from utils.train.interactive import click_disks, click_loss, round_weights

    prompts = [Prompt(points=np.array([[5, 6]], np.float32), labels=np.ones(1, np.int64)),
               Prompt(box=np.array([0, 0, 9, 9], np.float32))]
    disks = click_disks(prompts, (H, W), 2)
    assert disks[0].sum() == 13 and disks[0][6, 5] and not disks[1].any()  # a radius-2 disk: 13 px
    logits = torch.randn(2, H, W)
    targets = torch.rand(2, H, W) > 0.5
    out = click_loss(logits, targets, torch.from_numpy(disks))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[0][torch.from_numpy(disks[0])],
                                                               targets[0][torch.from_numpy(disks[0])].float())
    assert out[0] == pytest.approx(float(bce), rel=1e-5) and out[1] == 0
    assert round_weights(3, "linear").tolist() == pytest.approx([0.5, 1.0, 1.5])  # 1:2:3, mean 1
    assert round_weights(4, "flat").tolist() == [1.0] * 4


def test_a_no_click_round_decodes_the_same_prompt_again_with_the_previous_logits(lite):
    model, cache, samples = lite
    settings = InteractiveSettings(rounds=1, no_click_rounds=1, mask_feedback=0.0, box_jitter=5,
                                   click_sampling="inner_half", click_loss_weight=1.0)
    group, = interactive.make_session_prepare([cache], settings, seed=0)(samples[:3], 0)
    done = run_session(model, trainable_copy(model), group, settings, seed=0, epoch=0)
    assert len(done.losses) == 3 and done.dice.shape == (3, 3)
    clicked = [p for p in done.prompts[1]]
    assert all(a is b for a, b in zip(done.prompts[2], clicked))  # round 2: the same prompts, no new click
    assert done.use_mask[2].all()  # with the mask fed back, whatever the feedback share
    assert torch.equal(done.mask_inputs[2], done.low_res[1].detach())
    for before, after in zip(group.starts, clicked):  # round 1 did add one click (where the mask was wrong)
        n_before = 0 if before.points is None else len(before.points)
        assert len(after.points) in (n_before, n_before + 1)


def test_random_rounds_are_drawn_per_batch_and_repeat_on_resume(lite):
    model, cache, samples = lite
    settings = InteractiveSettings(rounds=3, random_rounds=True, box_jitter=5)
    counts = []
    real = interactive.run_session

    def counting(*args, **kw):
        counts.append(args[-1])
        return real(*args, **kw)

    interactive.run_session = counting
    try:
        step = make_interactive_step([cache], settings, 0, trainable_copy(model))
        for epoch in range(6):
            result = step(samples[:1], epoch)
            assert len(result.round_dice_sum) == 4  # rounds not run repeat the last Dice
        step(samples[:1], 0)
    finally:
        interactive.run_session = real
    assert all(0 <= c <= 3 for c in counts) and len(set(counts[:6])) > 1
    assert counts[6] == counts[0]  # the same batch and epoch draw the same count
