"""utils.models.unet on a hand-written 32 x 32 slice store: shapes, learning, box restriction, evaluation."""
import json

import numpy as np
import pytest
import torch

from utils.data.augmentation import AugmentSpec, augment_view
from utils.data.samples import SampleIndex
from utils.data.slice_store import SliceStore
from utils.eval.baseline import evaluate_baseline, evaluate_baseline_rows
from utils.eval.dice import summarise_dice
from utils.inference.prompts import bound_box
from utils.models.unet import (
    ARCHS,
    NUM_CLASSES,
    build_baseline,
    forward_logits,
    organ_masks_from_prediction,
    predict_label_maps,
    restrict_to_box,
)
from utils.scaffold.runs import Run
from utils.train.baseline import SliceLoader, SliceRef, default_loss, make_baseline_step, training_slices
from utils.train.loop import LoopConfig, run_training

TINY = (4, 8, 16)  # channel widths: 2 poolings, multiple 4


def square(label, organ, r0, c0, size):
    label[r0 : r0 + size, c0 : c0 + size] = organ


def write_store(root, slices):
    """A real SliceStore folder from [(case, z, split, image float (H, W), label uint8 (H, W))]."""
    (root / "slices").mkdir(parents=True)
    rows = []
    for case, z, split, image, label in slices:
        name = f"{case}_{z:03d}.npz"
        np.savez_compressed(root / "slices" / name, image=image.astype(np.float16), label=label.astype(np.uint8))
        present, counts = np.unique(label[label > 0], return_counts=True)
        rows.append({"file": name, "case": case, "z": z, "split": split,
                     "organs": {str(int(o)): int(n) for o, n in zip(present, counts)}, "spacing": [1.0, 1.0]})
    (root / "index.json").write_text(json.dumps({"slices": rows}))
    (root / "manifest.json").write_text(json.dumps({"key": "tiny", "data": "hand-made test slices"}))
    return SliceStore(root)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Six 32 x 32 slices, two organs (spleen 1, liver 6) as bright squares; cases a, b train, c val."""
    rng = np.random.default_rng(0)
    slices = []
    for k, (case, split) in enumerate([("a", "train"), ("a", "train"), ("b", "train"), ("b", "train"),
                                       ("c", "val"), ("c", "val")]):
        label = np.zeros((32, 32), np.uint8)
        square(label, 6, 2 + k % 3, 3, 12)
        if k != 1:
            square(label, 1, 18, 16 + k % 2, 8)
        image = np.where(label == 6, 0.5, np.where(label == 1, 0.9, 0.1)) + rng.normal(0, 0.03, (32, 32))
        slices.append((case, k, split, np.clip(image, 0, 1), label))
    return write_store(tmp_path_factory.mktemp("tiny_store"), slices)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(32, 32), (30, 27)])
def test_output_has_14_channels_at_the_slice_size(arch, size):
    net = build_baseline(arch, TINY)
    assert net.num_res_units == {"unet": 0, "resunet": 2}[arch]
    images = torch.rand(2, *size)
    logits = forward_logits(net, images)
    assert logits.shape == (2, NUM_CLASSES, *size) and logits.dtype == torch.float32
    labels = predict_label_maps(net, images.numpy())
    assert labels.shape == (2, *size) and labels.dtype == torch.int64
    assert net.training  # predict_label_maps restores the mode it found
    # padding is bottom/right only: the crop keeps the top-left pixels of the padded forward pass
    padded = torch.zeros(2, -(-size[0] // 4) * 4, -(-size[1] // 4) * 4)  # up to the multiple 2**2
    padded[:, : size[0], : size[1]] = images
    assert torch.allclose(forward_logits(net, padded)[:, :, : size[0], : size[1]], logits, atol=1e-5)


def test_a_few_steps_lower_the_dice_ce_loss(store):
    torch.manual_seed(0)
    net = build_baseline("unet", TINY)
    spec = AugmentSpec(views=1, seed=0)
    refs = training_slices(store, spec)
    assert refs == [SliceRef(i) for i in range(4)] + [SliceRef(i, 1) for i in range(4)]
    loader = SliceLoader(store, spec)
    step = make_baseline_step(net, loader)
    loss = default_loss()
    images, labels = loader(refs)

    def batch_loss():
        with torch.no_grad():
            return float(loss(forward_logits(net, images), labels[:, None]))

    before = batch_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(15):
        result = step(refs, 0)
        assert result.count == len(refs) and 0.0 <= result.metric_sum <= len(refs)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
    assert batch_loss() < 0.8 * before


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_step_is_close_to_the_fp32_step(store, arch):
    """The training fast path's bf16 autocast changes the last bits of the forward pass, not the step:
    the same batch gives a Dice + CE loss within 0.02 of fp32 and gradients pointing the same way."""
    torch.manual_seed(0)
    net = build_baseline(arch, TINY)
    refs = training_slices(store)
    steps = {p: make_baseline_step(net, SliceLoader(store), precision=p) for p in ("fp32", "bf16")}
    losses, grads = {}, {}
    for precision, step in steps.items():
        net.zero_grad(set_to_none=True)
        result = step(refs, 0)
        assert result.loss.dtype == torch.float32
        result.loss.backward()
        losses[precision] = float(result.loss)
        grads[precision] = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.02)
    assert float(torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)) > 0.95


def test_step_runs_in_the_shared_loop(store, tmp_path):
    torch.manual_seed(0)
    net = build_baseline("resunet", TINY)
    refs = training_slices(store)
    step = make_baseline_step(net, SliceLoader(store))
    val = SampleIndex(store).split_samples("val")
    run = Run(tmp_path, "test", {"task": "baseline"})
    config = LoopConfig(epochs=3, batch_size=2, samples_per_epoch=0, seed=0, monitor="mDice", run=run,
                        progress=False)
    history, _ = run_training(net, torch.optim.Adam(net.parameters(), lr=0.02), refs, step,
                           lambda epoch: evaluate_baseline(net, store, val, False)[0], config)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert all(0.0 <= m <= 1.0 for m in history["train_metric"])
    assert (tmp_path / "last.pt").is_file()


def test_augmented_views_are_augment_view_materialised(store):
    spec = AugmentSpec(views=2, seed=3)
    loader = SliceLoader(store, spec)
    image, label = augment_view(*store.load(2), spec, 2, 2)
    got_image, got_label = loader.load(SliceRef(2, 2))
    np.testing.assert_array_equal(got_label, label)
    np.testing.assert_allclose(got_image, image, atol=1e-3)  # kept as float16, like the store's slices
    again = loader.load(SliceRef(2, 2))
    np.testing.assert_array_equal(again[0], got_image)
    with pytest.raises(ValueError, match="views 1..2"):
        loader.load(SliceRef(2, 3))
    with pytest.raises(ValueError, match="no AugmentSpec"):
        SliceLoader(store).load(SliceRef(0, 1))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_box_restricted_prediction_is_zero_outside_and_equal_inside(kind):
    rng = np.random.default_rng(1)
    pred = rng.random((20, 24)) > 0.5
    truth = np.zeros((20, 24), bool)
    truth[5:12, 3:17] = True
    box = bound_box(truth)  # (3, 5, 16, 11) XYXY inclusive
    mask = torch.from_numpy(pred) if kind == "torch" else pred
    out = restrict_to_box(mask, box)
    assert type(out) is type(mask)
    out = np.asarray(out)
    inside = np.zeros_like(truth)
    inside[5:12, 3:17] = True  # rows y0..y1, columns x0..x1, both inclusive
    assert not out[~inside].any()
    np.testing.assert_array_equal(out[inside], pred[inside])
    # a fractional box keeps only the pixels it fully reaches
    frac = np.asarray(restrict_to_box(np.ones((10, 10), bool), [1.5, 2.0, 4.5, 2.9]))
    assert np.argwhere(frac).tolist() == [[2, 2], [2, 3], [2, 4]]


class FixedMapNet(torch.nn.Module):
    """Stands in for a U-Net: 'predicts' the label map written in its input image as label / 13."""

    strides = (2, 2)

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        labels = (x[:, 0] * 13).round().long()
        return torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float() * 10 + self.dummy


@pytest.fixture(scope="module")
def fixed_store(tmp_path_factory):
    """Two val slices whose image encodes a hand-made prediction, plus one train slice."""
    truth = np.zeros((32, 32), np.uint8)
    square(truth, 1, 4, 4, 8)  # spleen: rows 4..11, columns 4..11 (64 px)
    square(truth, 6, 20, 20, 6)  # liver: 36 px
    pred = np.zeros((32, 32), np.uint8)
    square(pred, 1, 6, 4, 8)  # spleen shifted down 2 rows: 48 px overlap
    square(pred, 1, 25, 2, 4)  # a 16 px false spleen far outside the spleen's box
    square(pred, 6, 20, 20, 6)  # liver exact
    truth2 = np.zeros((32, 32), np.uint8)
    square(truth2, 1, 10, 10, 5)
    pred2 = np.zeros((32, 32), np.uint8)  # spleen missed entirely
    slices = [("t", 0, "train", pred / 13, truth), ("v", 3, "val", pred / 13, truth), ("v", 4, "val", pred2 / 13, truth2)]
    return write_store(tmp_path_factory.mktemp("fixed_store"), slices), pred, truth


def hand_dice(p, t):
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else 2 * (p & t).sum() / total


def test_evaluate_baseline_visits_exactly_the_given_samples_in_order(fixed_store):
    store, _, _ = fixed_store
    val = SampleIndex(store).split_samples("val")
    assert val == [(1, 1), (1, 6), (2, 1)]
    samples = [val[2], val[0], val[1], (0, 6)]  # any order, any split: exactly what the caller passes
    net = FixedMapNet()
    summary, records = evaluate_baseline(net, store, samples, restrict_to_boxes=False, batch_size=2)
    assert [(r["row"], r["organ"]) for r in records] == samples
    assert [(r["case"], r["z"]) for r in records] == [("v", 4), ("v", 3), ("v", 3), ("t", 0)]
    assert set(records[0]) == {"case", "z", "row", "organ", "dice"}
    assert summary == summarise_dice((r["organ"], r["dice"]) for r in records)
    assert net.calls == 2  # two rows per chunk: {2, 1} then {0}, each chunk predicted in one pass


def test_evaluate_baseline_dice_equals_a_hand_computation(fixed_store):
    store, pred, truth = fixed_store
    samples = SampleIndex(store).split_samples("val")
    rows = evaluate_baseline_rows(FixedMapNet(), store, samples)
    plain = [r["dice"] for r in rows["none"][1]]
    boxed = [r["dice"] for r in rows["bound_box_crop"][1]]

    spleen_p, spleen_t = pred == 1, truth == 1
    assert plain[0] == pytest.approx(hand_dice(spleen_p, spleen_t))
    assert plain[0] == pytest.approx(2 * 48 / (64 + 16 + 64))  # the false blob counts
    in_box = np.zeros_like(spleen_p)
    in_box[4:12, 4:12] = spleen_p[4:12, 4:12]
    assert boxed[0] == pytest.approx(hand_dice(in_box, spleen_t))
    assert boxed[0] == pytest.approx(2 * 48 / (48 + 64))  # the box drops the blob and the overhang
    assert plain[1] == boxed[1] == 1.0  # liver exact
    assert plain[2] == boxed[2] == 0.0  # spleen missed
    assert rows["none"][0]["mDice"] == pytest.approx(np.mean([(plain[0] + 0.0) / 2, 1.0]))
    # the single-row entry point gives the same numbers
    assert evaluate_baseline(FixedMapNet(), store, samples, True) == rows["bound_box_crop"]
    label_map = predict_label_maps(FixedMapNet(), [store.load(1)[0]])[0]
    np.testing.assert_array_equal(organ_masks_from_prediction(label_map, 1).numpy(), spleen_p)
