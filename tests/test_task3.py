"""Task 3: the class-token decoder, its training and its accuracy table."""
import json

import numpy as np
import pytest
import torch
from conftest import QUICK_TRAIN_PRECISION, script_args

import classify_train_task3
import classify_val_task3
from modified_classifier import ClassifyingMaskDecoder
from utils.core.organs import NUM_ORGANS
from utils.data.samples import SampleIndex
from utils.embeddings.cache import EmbeddingCache
from utils.eval.accuracy import accuracy_summary
from utils.inference.batches import build_batch
from utils.inference.classify import class_logits
from utils.inference.decoding import decode
from utils.models.sam import load_model
from utils.report.tables import training_precision_note


@pytest.fixture(scope="module")
def cache(tiny_study):
    return EmbeddingCache(load_model("lite_medsam"), tiny_study["store"], root=tiny_study["cache"])


def test_class_logits_shape_and_masks_equal_plain_decoder(cache):
    model = cache.model
    samples = cache.index.split_samples("val")[:5]
    _, prompts, sizes = build_batch(cache, samples, "one_central_point", seed=0)
    classifier = ClassifyingMaskDecoder(model.sam.mask_decoder)
    with torch.inference_mode():
        logits, targets = class_logits(cache, classifier, samples, "one_central_point", seed=0)
        plain_low, plain_iou = decode(model, cache.embeddings([samples[0][0]]), prompts[:1], sizes[:1])
        from utils.inference.decoding import prompt_inputs

        points, boxes = prompt_inputs(model, prompts[:1], sizes[:1])
        sparse, dense = model.sam.prompt_encoder(points=points, boxes=boxes, masks=None)
        masks, iou, one_logits = classifier(cache.embeddings([samples[0][0]]), model.sam.prompt_encoder.get_dense_pe(),
                                            sparse, dense)
        upstream_masks, upstream_iou = model.sam.mask_decoder(
            image_embeddings=cache.embeddings([samples[0][0]]), image_pe=model.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    assert logits.shape == (5, NUM_ORGANS)
    assert one_logits.shape == (1, NUM_ORGANS)
    assert targets.tolist() == [o - 1 for _, o in samples]
    # masks and IoU are the wrapped decoder's (upstream forward, to float rounding: the suite's transformer
    # computes the same sums in another order) and exactly the suite's batched path
    assert torch.allclose(masks, upstream_masks, atol=1e-4) and torch.allclose(iou, upstream_iou, atol=1e-5)
    assert torch.allclose(masks, plain_low, atol=1e-5) and torch.allclose(iou[:, 0], plain_iou, atol=1e-6)


def test_weighted_average_equals_hand_computation():
    truth = [6, 6, 6, 6, 8, 8, 12]
    predicted = [6, 6, 6, 8, 8, 6, 13]
    summary = accuracy_summary(truth, predicted, train_truth=[8, 8, 6])
    assert summary["organs"]["liver"] == {"accuracy": 0.75, "n": 4, "share": 4 / 7}
    assert summary["organs"]["aorta"]["accuracy"] == 0.5
    assert summary["organs"]["right_adrenal_gland"]["accuracy"] == 0.0
    assert summary["weighted_average"] == pytest.approx((0.75 * 4 + 0.5 * 2 + 0.0 * 1) / 7)
    assert summary["weighted_average"] == pytest.approx(4 / 7)  # = overall accuracy
    assert summary["mean"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert summary["majority_organ"] == "aorta"  # most frequent in training
    assert summary["majority_baseline"] == pytest.approx(2 / 7)


@pytest.fixture(scope="module")
def trained(tiny_study):
    results = tiny_study["base"] / "t3_results"
    ckpt = tiny_study["base"] / "t3_ckpt"
    args = script_args(tiny_study, results, "--preset", "quick", "--epochs", "4", "--learning-rate", "1e-3",
                       "--samples-per-epoch", "0", "--batch-size", "8", "--checkpoint-dir", ckpt,
                       "--finetuned-dir", tiny_study["base"] / "no_task2")
    assert classify_train_task3.main(args) == 0
    best = json.loads((results / "task3" / "train_metrics.json").read_text())["checkpoint"]
    return results, best


def test_frozen_parts_unchanged_and_transformer_trained(trained, tiny_study):
    _, best = trained
    state = torch.load(best, weights_only=True)["model"]
    fresh = load_model("lite_medsam").sam
    for name, value in fresh.prompt_encoder.state_dict().items():
        assert torch.equal(state[f"prompt_encoder.{name}"], value), name
    changed = []
    for name, value in fresh.mask_decoder.state_dict().items():
        same = torch.equal(state[f"classifier.decoder.{name}"], value)
        if name.startswith("transformer."):
            changed.append(not same)
        else:
            assert same, f"{name} should stay frozen"
    assert any(changed)


def test_short_run_beats_majority_baseline_on_held_out_slices(trained, tiny_study):
    results, best = trained
    assert classify_val_task3.main(script_args(tiny_study, results, "--classifier", best)) == 0
    metrics = json.loads((results / "task3" / "metrics.json").read_text())
    assert metrics["split"] == "val"
    assert metrics["weighted_average"] > metrics["majority_baseline"]
    assert sum(v["n"] for v in metrics["organs"].values()) == len(
        SampleIndex(tiny_study["store"]).split_samples("val"))
    assert np.isclose(sum(v["share"] for v in metrics["organs"].values()), 1.0)
    for name in ("table4.md", "confusion.png", "examples.png"):
        assert (results / "task3" / name).stat().st_size > 0
    train_metrics = json.loads((results / "task3" / "train_metrics.json").read_text())
    assert "val_mDice_before" in train_metrics and "val_mDice_after" in train_metrics
    # the fixture's typed --learning-rate 1e-3 beats the preset; the quick preset's head rate stays
    assert train_metrics["settings"] == {"epochs": 4, "learning_rate": 1e-3, "head_learning_rate": 3e-3,
                                         "batch_size": 8, "samples_per_epoch": 0}
    from utils.report.tables import task3_settings_note
    assert task3_settings_note(train_metrics) == (
        "Preset `quick`: 4 epochs, Adam lr 0.001 on the two-way transformer and 0.003 on the class token and "
        f"head, batch 8, all samples/epoch{training_precision_note({'train_precision': QUICK_TRAIN_PRECISION})}.")


def test_validation_records_give_the_reported_accuracy(trained, tiny_study):
    """classify_val_task3 writes per-sample correctness (issue 14); it gives back the table's averages."""
    results, best = trained
    metrics_path = results / "task3" / "metrics.json"
    if not metrics_path.is_file():
        assert classify_val_task3.main(script_args(tiny_study, results, "--classifier", best)) == 0
    metrics = json.loads(metrics_path.read_text())
    correct = metrics["records"]["correct"]
    assert len(correct) == metrics["n"] == len(SampleIndex(tiny_study["store"]).split_samples("val"))
    assert np.mean([v for _, _, v in correct]) == pytest.approx(metrics["weighted_average"])
    per_organ = {}
    for _, organ, v in correct:
        per_organ.setdefault(organ, []).append(v)
    assert np.mean([np.mean(v) for v in per_organ.values()]) == pytest.approx(metrics["mean"])


def test_head_learning_rate_moves_only_the_new_parts_at_their_own_rate():
    """Adam's first step moves each parameter by ~lr (sign of its gradient): the transformer by
    LEARNING_RATE, the class token and head by HEAD_LEARNING_RATE; 0 means one rate for all."""
    torch.manual_seed(0)
    classifier = ClassifyingMaskDecoder(load_model("lite_medsam").sam.mask_decoder)
    classifier.freeze_for_task3()
    groups = classifier.parameter_groups(1e-5, 0.0)
    assert [g["lr"] for g in groups] == [1e-5, 1e-5]
    grouped = [p for g in groups for p in g["params"]]
    assert {id(p) for p in grouped} == {id(p) for p in classifier.trainable_parameters()}
    assert len(grouped) == len(classifier.trainable_parameters())

    groups = classifier.parameter_groups(1e-5, 1e-3)
    before = [[p.detach().clone() for p in g["params"]] for g in groups]
    for g in groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    torch.optim.Adam(groups).step()
    moved = [max(float((p.detach() - b).abs().max()) for p, b in zip(g["params"], old))
             for g, old in zip(groups, before)]
    assert moved[0] == pytest.approx(1e-5, rel=1e-2)
    assert moved[1] == pytest.approx(1e-3, rel=1e-2)


def test_mdice_before_is_task2s_own_score_of_the_same_decoder(tiny_study, tmp_path):
    """Task 3 reads the starting decoder's mDice from Task 2's results only when Task 2 scored exactly that
    run and epoch the same way; the number equals scoring the checkpoint again. Another seed scores anew."""
    import finetune_task2
    from utils.eval.segmentation import evaluate_prompt
    from utils.scaffold.runs import load_checkpoint

    results, ckpt = tmp_path / "results", tmp_path / "t2"
    assert finetune_task2.main(script_args(tiny_study, results, "--preset", "quick", "--prompts", "one_central_point",
                                           "--epochs", "1", "--samples-per-epoch", "8", "--batch-size", "4",
                                           "--checkpoint-dir", ckpt)) == 0
    common = ["--preset", "quick", "--epochs", "1", "--samples-per-epoch", "8", "--finetuned-dir", ckpt]
    assert classify_train_task3.main(script_args(tiny_study, results, *common,
                                                 "--checkpoint-dir", tmp_path / "c0")) == 0
    metrics = json.loads((results / "task3" / "train_metrics.json").read_text())
    assert metrics["val_mDice_before_source"] == f"read from {results / 'task2' / 'metrics.json'}"
    task2 = json.loads((results / "task2" / "metrics.json").read_text())["prompts"]["one_central_point"]
    state = load_checkpoint(task2["checkpoint"])["model"]
    model = load_model("lite_medsam")
    model.sam.prompt_encoder.load_state_dict({k[len("prompt_encoder."):]: v for k, v in state.items()
                                              if k.startswith("prompt_encoder.")})
    model.sam.mask_decoder.load_state_dict({k[len("mask_decoder."):]: v for k, v in state.items()
                                            if k.startswith("mask_decoder.")})
    cache = EmbeddingCache(model, tiny_study["store"], root=tiny_study["cache"])
    rescored, _ = evaluate_prompt(cache, cache.index.split_samples("val"), "one_central_point", seed=0)
    assert metrics["val_mDice_before"]["mDice"] == pytest.approx(rescored["mDice"], abs=1e-5)

    assert classify_train_task3.main(script_args(tiny_study, results, *common, "--seed", "1",
                                                 "--checkpoint-dir", tmp_path / "c1")) == 0
    assert json.loads((results / "task3" / "train_metrics.json").read_text())["val_mDice_before_source"] == "scored here"
