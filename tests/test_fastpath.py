"""The training fast path against the exact path on a tiny store (utils.train.fastpath, Task 2's step
utils.train.decoder_step, Task 3's utils.train.classifier_step). Oracles: the evaluation path one sample at a
time, per-step prompts, the cache."""
import copy
import json

import numpy as np
import pytest
import torch
from conftest import script_args
from monai.losses import DiceLoss

import finetune_task2
from utils.embeddings.cache import EmbeddingCache
from utils.inference.batches import build_batch, sample_prompt
from utils.inference.decoder import CacheDecoder
from utils.inference.decoding import predict_masks_paired, prompt_inputs
from utils.models.sam import load_model
from utils.train import fastpath
from utils.train.decoder_step import make_prepare, make_step, trainable_decoder

PROMPT = "three_random_points"  # random draws: prompts differ per epoch and per sample


@pytest.fixture(scope="module")
def setup(tiny_study):
    model = load_model("lite_medsam")
    cache = EmbeddingCache(model, tiny_study["store"], root=tiny_study["cache"])
    samples = cache.index.split_samples("train")
    rng = np.random.default_rng(0)
    batch = [(0, *samples[i]) for i in rng.choice(len(samples), size=min(12, len(samples)), replace=False)]
    return model, cache, batch


def trainable_of(model):
    torch.manual_seed(0)
    return trainable_decoder(model)


def grads(module):
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def test_step_loss_equals_per_sample_oracle(setup):
    """Grouped by slice or not, the step's loss is the mean of per-sample Dice losses computed one sample
    at a time through the evaluation path (CacheDecoder): grouping changes no number."""
    model, cache, batch = setup
    trainable = trainable_of(model)
    step = make_step([cache], PROMPT, 0, trainable, "fp32")
    with torch.no_grad():
        loss = float(step(batch, 2).loss)
        shuffled = float(step(batch[::-1], 2).loss)
        loss_fn = DiceLoss(sigmoid=True)
        per_sample = []
        decoder = CacheDecoder(cache, trainable["prompt_encoder"], trainable["mask_decoder"])
        for _, row, organ in batch:
            masks, prompts, sizes = build_batch(cache, [(row, organ)], PROMPT, 0, 2)
            logits = decoder.predict([row], prompts, sizes)[0].flatten(1)
            per_sample.append(float(loss_fn(logits[:, None], masks.flatten(1).float()[:, None])))
    assert loss == pytest.approx(np.mean(per_sample), abs=1e-5)
    assert shuffled == pytest.approx(loss, abs=1e-6)


def test_prepared_ahead_equals_per_step_prompts(setup):
    """What prepare() makes ahead (targets, prompt tensors, embeddings) equals what each sample's own
    per-step draw gives, for every sample and epoch."""
    model, cache, batch = setup
    prepare = make_prepare([cache], PROMPT, 0)
    for epoch in (0, 3):
        groups = prepare(batch, epoch)
        assert sorted((0, r, o) for g in groups for r, o in g.samples) == sorted(batch)
        for g in groups:
            for i, (row, organ) in enumerate(g.samples):
                mask = cache.label(row) == organ
                assert torch.equal(g.targets[i], torch.from_numpy(mask))
                prompt = sample_prompt(cache, row, organ, mask, PROMPT, 0, epoch)
                points, _ = prompt_inputs(model, [prompt], [mask.shape])
                assert torch.equal(g.points[0][i], points[0][0]) and torch.equal(g.points[1][i], points[1][0])
                assert torch.equal(g.embeddings[i], cache.embeddings([row])[0])


def test_background_prefetch_yields_the_inline_batches(setup):
    _, cache, batch = setup
    prepare = make_prepare([cache], PROMPT, 0)
    order = np.arange(len(batch))
    inline = list(fastpath.batches(batch, order, 5, 1, prepare, background=False))
    ahead = list(fastpath.batches(batch, order, 5, 1, prepare, background=True))
    assert len(inline) == len(ahead) == 3
    for a, b in zip(inline, ahead):
        for ga, gb in zip(a, b):
            assert ga.samples == gb.samples and torch.equal(ga.targets, gb.targets)
            assert torch.equal(ga.points[0], gb.points[0]) and torch.equal(ga.embeddings, gb.embeddings)

    def broken(b, epoch):
        raise KeyError("bad row")

    with pytest.raises(KeyError, match="bad row"):
        list(fastpath.batches(batch, order, 5, 1, broken, background=True))


def test_bf16_training_step_close_to_exact(setup):
    """bf16 autocast: loss within 0.01 of fp32 and gradients pointing the same way (cosine > 0.98)."""
    model, cache, batch = setup
    out = {}
    for precision in ("fp32", "bf16"):
        trainable = trainable_of(model)
        step = make_step([cache], PROMPT, 0, trainable, precision)
        loss = step(batch, 0).loss
        loss.backward()
        out[precision] = (float(loss), grads(trainable))
    assert abs(out["bf16"][0] - out["fp32"][0]) < 0.01
    cosine = torch.nn.functional.cosine_similarity(out["bf16"][1], out["fp32"][1], dim=0)
    assert cosine > 0.98


def test_resident_embeddings_equal_the_cache(setup):
    _, cache, _ = setup
    resident = fastpath.ResidentEmbeddings(cache, torch.device("cpu"), chunk=3)
    rows = [4, 0, 4, len(cache) - 1]
    assert torch.equal(resident.gather(rows), cache.embeddings(rows))


def test_resident_step_equals_cache_step(setup):
    model, cache, batch = setup
    losses = []
    for resident in (None, {0: fastpath.ResidentEmbeddings(cache, torch.device("cpu"))}):
        step = make_step([cache], PROMPT, 0, trainable_of(model), "fp32", resident=resident)
        with torch.no_grad():
            losses.append(float(step(batch, 0).loss))
    assert losses[0] == losses[1]


def test_compile_falls_back_to_eager_and_says_so(setup, monkeypatch, capsys):
    model, cache, batch = setup

    def no_compiler(fn, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", no_compiler)
    paired = fastpath.CompiledOrEager(predict_masks_paired, True)
    assert "torch.compile failed" in paired.note and "no C++ compiler" in capsys.readouterr().out

    def compiles_then_fails(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("inductor error at first call")
        return run

    monkeypatch.setattr(torch, "compile", compiles_then_fails)
    paired = fastpath.CompiledOrEager(predict_masks_paired, True)
    trainable = trainable_of(model)
    with torch.no_grad():
        fallback = float(make_step([cache], PROMPT, 0, trainable, "fp32", paired)(batch, 0).loss)
        exact = float(make_step([cache], PROMPT, 0, trainable, "fp32")(batch, 0).loss)
    assert "inductor error" in paired.note and fallback == exact


def test_cpu_has_amx_reads_the_flags_line(tmp_path):
    from utils.core.precision import cpu_has_amx

    amx, avx = tmp_path / "amx", tmp_path / "avx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16 amx_tile\n")
    avx.write_text("processor\t: 0\nmodel name\t: amx_bf16 in a name is not a flag\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_has_amx(str(amx)) and not cpu_has_amx(str(avx))
    assert not cpu_has_amx(str(tmp_path / "missing"))


def test_resolve_per_device_and_refusals(monkeypatch):
    cpu = torch.device("cpu")
    assert fastpath.resolve(cpu, "fp32").exact and fastpath.resolve(cpu, "fp32").train_precision == "fp32"
    monkeypatch.setattr(fastpath, "cpu_has_amx", lambda: True)
    auto = fastpath.resolve(cpu, "fp32", "auto", "auto", "auto", "auto", cache_bytes=1)
    assert auto == fastpath.FastPath("bf16", compile=False, prefetch=False, resident=False, grad_scaler=False)
    monkeypatch.setattr(fastpath, "cpu_has_amx", lambda: False)  # bf16 is slower than fp32 without AMX
    assert fastpath.resolve(cpu, "fp32", "auto").train_precision == "fp32"
    assert fastpath.resolve(cpu, "bf16", "auto").train_precision == "bf16"
    assert fastpath.resolve(cpu, "bf16", "same").train_precision == "bf16"
    with pytest.raises(ValueError, match="GPUs"):
        fastpath.resolve(cpu, "fp32", "fp16")
    with pytest.raises(ValueError, match="--compile"):
        fastpath.resolve(cpu, "fp32", compile="yes")


def test_largest_batch_and_lr_rule():
    assert fastpath.largest_batch(lambda b: b <= 256, 16) == 256
    assert fastpath.largest_batch(lambda b: False, 64) == 64
    assert fastpath.largest_batch(lambda b: True, 64, limit=1024) == 1024
    assert fastpath.scaled_lr(0.1, 64, 256, "sgd") == pytest.approx(0.4)
    assert fastpath.scaled_lr(1e-5, 32, 128, "adam") == pytest.approx(2e-5)


def test_largest_batch_flag_scales_the_lr_with_the_batch_found_and_keeps_both_on_a_cpu(monkeypatch):
    from types import SimpleNamespace

    import utils.train.decoder_step as decoder_step
    from utils.train.task2_data import at_largest_batch

    settings = {"learning_rate": 0.1, "momentum": 0.9, "batch_size": 16}
    data = SimpleNamespace(caches=["cache"], train=[(0, 0, 1)], fast=SimpleNamespace(train_precision="fp16"),
                           resident=None)
    kept, note = at_largest_batch(settings, torch.device("cpu"), data, "bound_box", 0)
    assert kept == settings and "keeping --batch-size" in note
    asked = []
    monkeypatch.setattr(decoder_step, "largest_decoder_batch", lambda *a: asked.append(a) or 128)
    grown, note = at_largest_batch(settings, torch.device("cuda"), data, "bound_box", 3)
    assert asked == [(["cache"], [(0, 0, 1)], "bound_box", 3, "fp16", 16, None)]
    assert grown == {"learning_rate": pytest.approx(0.8), "momentum": 0.9, "batch_size": 128}  # 0.1 x 128 / 16
    assert note == "--largest-batch: batch 128, lr 0.8 (linear scaling from batch 16, lr 0.1)"
    assert settings["batch_size"] == 16  # the caller's settings untouched


def test_fast_path_is_recorded_in_run_key_and_results(tiny_study, tmp_path):
    """A Task 2 run on the fast path (bf16 + prefetch) learns, and says so in metrics and run.json;
    its run folder differs from the exact path's."""
    common = ["--preset", "quick", "--prompts", "bound_box", "--epochs", "1", "--samples-per-epoch", "8",
              "--batch-size", "4", "--checkpoint-dir", tmp_path / "ckpt"]
    assert finetune_task2.main(script_args(tiny_study, tmp_path / "fast", *common, "--train-precision", "bf16",
                                           "--prefetch", "on", "--resident", "on")) == 0
    metrics = json.loads((tmp_path / "fast" / "task2" / "metrics.json").read_text())
    record = metrics["settings"]["fast_path"]
    assert record == {"train_precision": "bf16", "compile": False, "prefetch": True, "resident": True,
                      "grad_scaler": False}
    assert metrics["provenance"]["training_fast_path"] == record
    run_json = json.loads((tmp_path / "ckpt" / "lite_medsam" / "bound_box" /
                           f"run-{metrics['prompts']['bound_box']['run']['key']}" / "run.json").read_text())
    assert run_json["identity"]["fast_path"] == record
    assert finetune_task2.main(script_args(tiny_study, tmp_path / "exact", *common, "--train-precision", "fp32")) == 0
    exact = json.loads((tmp_path / "exact" / "task2" / "metrics.json").read_text())
    assert exact["prompts"]["bound_box"]["run"]["key"] != metrics["prompts"]["bound_box"]["run"]["key"]
    assert exact["settings"]["fast_path"]["train_precision"] == "fp32"


def test_task3_prepared_bf16_step_close_to_exact(setup):
    """Task 3's step from inputs prepared ahead equals class_logits (the per-step path) in fp32, and its
    bf16 cross-entropy is within 0.02 of fp32 with the same predicted organs on >= 90 % of samples."""
    from modified_classifier import ClassifyingMaskDecoder
    from utils.inference.classify import class_forward, class_inputs, class_logits

    model, cache, batch = setup
    samples = [(r, o) for _, r, o in batch]
    torch.manual_seed(0)
    classifier = ClassifyingMaskDecoder(copy.deepcopy(model.sam.mask_decoder))
    pe = model.sam.prompt_encoder
    with torch.no_grad():
        inputs = class_inputs(cache, samples, "one_central_point", 0, 1)
        fp32, targets = class_forward(classifier, pe, inputs, "fp32")
        per_step, per_step_targets = class_logits(cache, classifier, samples, "one_central_point", 0, 1, pe)
        bf16, _ = class_forward(classifier, pe, inputs, "bf16")
    assert torch.equal(fp32, per_step) and torch.equal(targets, per_step_targets)
    ce = torch.nn.functional.cross_entropy
    assert abs(float(ce(bf16, targets)) - float(ce(fp32, targets))) < 0.02
    assert (bf16.argmax(1) == fp32.argmax(1)).float().mean() >= 0.9


def test_task3_step_prepared_or_not_equals_class_logits(setup):
    """make_class_step on a list of samples, and on what its prepare made of them ahead, gives the loss
    and correct count of class_logits (the per-step inference path) for the same samples and epoch."""
    from modified_classifier import ClassifyingMaskDecoder
    from utils.inference.classify import class_logits
    from utils.train.classifier_step import make_class_step

    model, cache, batch = setup
    samples = [(r, o) for _, r, o in batch]
    torch.manual_seed(0)
    classifier = ClassifyingMaskDecoder(copy.deepcopy(model.sam.mask_decoder))
    pe = model.sam.prompt_encoder
    step = make_class_step(cache, classifier, pe, "one_central_point", 0, "fp32")
    with torch.no_grad():
        inline = step(samples, 2)
        ahead = step(step.prepare(samples, 2), 2)
        logits, targets = class_logits(cache, classifier, samples, "one_central_point", 0, 2, pe)
    expected = float(torch.nn.functional.cross_entropy(logits, targets))
    assert float(inline.loss) == float(ahead.loss) == pytest.approx(expected, abs=1e-6)
    assert inline.count == ahead.count == len(samples)
    assert inline.metric_sum == ahead.metric_sum == float((logits.argmax(1) == targets).sum())


def test_trainable_decoder_is_a_trainable_copy(setup):
    model, _, _ = setup
    frozen = {n: p.requires_grad for n, p in model.sam.named_parameters()}
    trainable = trainable_decoder(model)
    assert set(trainable) == {"prompt_encoder", "mask_decoder"}
    assert all(p.requires_grad for p in trainable.parameters())
    for name, part in (("prompt_encoder", model.sam.prompt_encoder), ("mask_decoder", model.sam.mask_decoder)):
        for (k, mine), (_, theirs) in zip(trainable[name].state_dict().items(), part.state_dict().items()):
            assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr(), k
    assert {n: p.requires_grad for n, p in model.sam.named_parameters()} == frozen  # the model's own untouched
