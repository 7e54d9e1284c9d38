"""The suite's cached + batched path against segment-anything's own SamPredictor (the oracle)."""
import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from synthetic import write_rawdata

from utils.data.slice_store import SliceStore, build_store
from utils.embeddings.cache import EmbeddingCache
from utils.inference.batches import build_batch
from utils.inference.decoder import CacheDecoder
from utils.inference.decoding import decode
from utils.inference.prompts import STUDY_PROMPTS
from utils.inference.propagation import Request
from utils.models.sam import load_model, to_uint8


@pytest.fixture(scope="module")
def vit_b_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    # A non-square slice (72 x 96) so the resize, padding and crop-back are all exercised.
    root = write_rawdata(tmp / "btcv", case_ids=(1,), shape=(96, 72, 3))
    store = SliceStore(build_store(root, tmp / "slices", progress=False)[0])
    torch.manual_seed(0)
    model = load_model("vit_b", random_init=True)
    cache = EmbeddingCache(model, store, root=tmp / "cache")
    cache.ensure([0], progress=False)
    image, _ = store.load(0)
    predictor = SamPredictor(model.sam)
    predictor.set_image(np.repeat(to_uint8(image)[:, :, None], 3, axis=2))
    return model, cache, predictor


def oracle(predictor, prompt, multimask=False):
    if prompt.box is not None:
        masks, iou, low = predictor.predict(box=prompt.box, multimask_output=multimask, return_logits=True)
    else:
        masks, iou, low = predictor.predict(point_coords=prompt.points, point_labels=prompt.labels,
                                            multimask_output=multimask, return_logits=True)
    if multimask:
        best = int(np.argmax(iou))
        return masks[best], low[best]
    return masks[0], low[0]


@pytest.mark.parametrize("prompt_type", STUDY_PROMPTS)
def test_batched_decoding_equals_sam_predictor(vit_b_setup, prompt_type):
    model, cache, predictor = vit_b_setup
    samples = cache.index.samples([0])
    assert len(samples) >= 3
    masks, prompts, sizes = build_batch(cache, samples, prompt_type, seed=0)
    with torch.inference_mode():
        # 1) the batched decoder on the predictor's own fp32 features: equal to float precision
        low, _ = decode(model, predictor.features, prompts, sizes)
        # 2) the full suite path (CacheDecoder): fp16 cache, embeddings gathered per prompt, post-processed
        logits, cached_low = CacheDecoder(cache).predict([r for r, _ in samples], prompts, sizes)
    assert logits.dtype == cached_low.dtype == torch.float32
    assert tuple(logits.shape) == (len(samples), *sizes[0]) and tuple(cached_low.shape) == (len(samples), 1, 256, 256)
    for i, prompt in enumerate(prompts):
        expected_logits, expected_low = oracle(predictor, prompt)
        assert torch.allclose(low[i, 0], torch.from_numpy(expected_low), atol=1e-4, rtol=1e-4)
        ours = logits[i].numpy()
        # the cache stores float16, so compare within its rounding, and masks where the sign is clear
        assert np.abs(ours - expected_logits).max() < 0.05 * max(1.0, np.abs(expected_logits).max())
        clear = np.abs(expected_logits) > 0.05
        assert np.array_equal((ours > 0)[clear], (expected_logits > 0)[clear])


def test_multimask_picks_best_iou_like_predictor(vit_b_setup):
    model, cache, predictor = vit_b_setup
    samples = cache.index.samples([0])
    _, prompts, sizes = build_batch(cache, samples, "bound_box", seed=0)
    with torch.inference_mode():
        low, _ = decode(model, predictor.features, prompts, sizes, multimask_output=True)
    for i, prompt in enumerate(prompts):
        _, expected_low = oracle(predictor, prompt, multimask=True)
        assert torch.allclose(low[i, 0], torch.from_numpy(expected_low), atol=1e-4, rtol=1e-4)


def test_cache_decoder_multimask_and_logits_equal_sam_predictor(vit_b_setup):
    """CacheDecoder.decode on the predictor's own features: SamPredictor's best-IoU mask of three, and its
    slice logits (post-processed back to the 72 x 96 slice)."""
    model, cache, predictor = vit_b_setup
    samples = cache.index.samples([0])
    _, prompts, sizes = build_batch(cache, samples, "bound_box", seed=0)
    logits, low = CacheDecoder(cache, multimask_output=True).decode(predictor.features, prompts, sizes)
    for i, prompt in enumerate(prompts):
        expected_logits, expected_low = oracle(predictor, prompt, multimask=True)
        assert torch.allclose(low[i, 0], torch.from_numpy(expected_low), atol=1e-4, rtol=1e-4)
        assert np.allclose(logits[i].numpy(), expected_logits, atol=1e-3, rtol=1e-4)


def test_predict_rows_is_predict_in_chunks_and_counts_prompts(vit_b_setup):
    """The 3-D protocols' entry: (row, prompt) requests decoded 2 at a time give the logits of one call,
    in request order; n_decoded counts every prompt decoded."""
    _, cache, _ = vit_b_setup
    samples = cache.index.samples([0])
    _, prompts, sizes = build_batch(cache, samples, "one_central_point", seed=0)
    decoder = CacheDecoder(cache)
    whole, _ = decoder.predict([r for r, _ in samples], prompts, sizes)
    chunked = decoder.predict_rows([(r, p) for (r, _), p in zip(samples, prompts)], batch_size=2)
    assert len(chunked) == len(samples) and all(c.shape == sizes[0] for c in chunked)
    for one, ref in zip(chunked, whole.numpy()):
        assert np.allclose(one, ref, atol=1e-4)
    assert decoder.n_decoded == 2 * len(samples)
    assert decoder.predict_rows([], batch_size=2) == [] and decoder.n_decoded == 2 * len(samples)


def test_pairs_from_different_images_are_not_crossed(vit_b_setup):
    model, cache, predictor = vit_b_setup
    _, prompts, sizes = build_batch(cache, cache.index.samples([0])[:2], "bound_box", seed=0)
    features = predictor.features
    other = torch.randn_like(features)
    with torch.inference_mode():
        paired, _ = decode(model, torch.cat([features, other]), prompts, sizes)
        alone0, _ = decode(model, features, prompts[:1], sizes[:1])
        alone1, _ = decode(model, other, prompts[1:], sizes[1:])
    assert torch.allclose(paired[0], alone0[0], atol=1e-5)
    assert torch.allclose(paired[1], alone1[0], atol=1e-5)


def test_predicted_iou_of_predict_rows_is_sam_predictors(vit_b_setup):
    """predict_rows(with_iou=True) (what the predicted-IoU stop rule judges) gives SamPredictor's IoU estimate
    of the single-mask output, beside the same logits as without it."""
    model, cache, predictor = vit_b_setup
    samples = cache.index.samples([0])
    _, prompts, _ = build_batch(cache, samples, "bound_box", seed=0)
    requests = [(row, prompt) for (row, _), prompt in zip(samples, prompts)]
    decoder = CacheDecoder(cache)
    with torch.inference_mode():
        plain = decoder.predict_rows(requests, batch_size=2)
        with_iou = decoder.predict_rows(requests, batch_size=2, with_iou=True)
    assert len(with_iou) == len(plain) == len(prompts)
    for (logits, iou), alone, prompt in zip(with_iou, plain, prompts):
        assert isinstance(iou, float) and np.array_equal(logits, alone)
        _, expected, _ = predictor.predict(box=prompt.box, multimask_output=False)
        assert iou == pytest.approx(float(expected[0]), abs=0.02)  # the cache stores float16 embeddings


def test_mask_input_requests_of_predict_rows_are_sam_predictors_with_mask_input(vit_b_setup):
    """Propagation with a +mask carry asks its decoder Request(row, prompt, mask input or None): it answers
    Answer(logits, IoU, low-res logits), none from the kept answers; with the first answer's low-res logits fed back, the logits
    are SamPredictor.predict(mask_input=...)'s."""
    model, cache, predictor = vit_b_setup
    samples = cache.index.samples([0])[:1]
    _, prompts, _ = build_batch(cache, samples, "bound_box", seed=0)
    row, prompt = samples[0][0], prompts[0]
    decoder = CacheDecoder(cache)
    decoder.remember()
    with torch.inference_mode():
        fed_decoder = decoder.propagation_decoder(batch_size=2, feed_logits=True)
        first, = fed_decoder([Request(row, prompt, None)])
        logits, iou, low = first.logits, first.iou, first.low_res
        second, = fed_decoder([Request(row, prompt, low)])
        fed, fed_iou = second.logits, second.iou
        (plain, plain_iou), = decoder.predict_rows([(row, prompt)], batch_size=2, with_iou=True)
    assert np.array_equal(logits, plain) and iou == plain_iou and tuple(low.shape) == (1, 256, 256)
    assert decoder.n_reused == 0  # the first plain request was not answered from the mask-input path's decode
    masks, expected_iou, _ = predictor.predict(box=prompt.box, mask_input=low.numpy(), multimask_output=False,
                                               return_logits=True)
    # the cache stores float16 embeddings: logits agree to a small tolerance, the masks nearly everywhere
    assert np.mean((fed > 0) == (masks[0] > 0)) > 0.99 and fed_iou == pytest.approx(float(expected_iou[0]), abs=0.02)
    assert not np.allclose(fed, logits)  # the mask input changed the answer


def test_remembered_answers_are_the_decoded_ones_and_only_repeats_are_reused(vit_b_setup):
    """CacheDecoder.remember (the 3-D stage's sharing between protocols): a repeated (row, prompt) gets the
    answer a fresh decoder gives it, decoded once; a new prompt on the same row is decoded; forget() and
    the byte cap drop kept answers; a kept answer cannot be changed by a caller."""
    _, cache, _ = vit_b_setup
    samples = cache.index.samples([0])
    _, boxes, _ = build_batch(cache, samples, "bound_box", seed=0)
    _, points, _ = build_batch(cache, samples, "one_central_point", seed=0)
    box_requests = [(row, p) for (row, _), p in zip(samples, boxes)]
    point_requests = [(row, p) for (row, _), p in zip(samples, points)]
    fresh = CacheDecoder(cache).predict_rows(box_requests + point_requests, batch_size=2, with_iou=True)
    decoder = CacheDecoder(cache)
    decoder.remember()
    first = decoder.predict_rows(box_requests, batch_size=2, with_iou=True)
    assert decoder.n_decoded == len(samples) and decoder.n_reused == 0
    again = decoder.predict_rows(box_requests[::-1] + point_requests, batch_size=2, with_iou=True)
    assert decoder.n_decoded == 2 * len(samples) and decoder.n_reused == len(samples)
    for (logits, iou), (expected, expected_iou) in zip(first + again[len(samples):], fresh):
        assert np.allclose(logits, expected, atol=1e-4) and abs(iou - expected_iou) < 1e-4
    for (logits, _), (kept, _) in zip(again[: len(samples)], first[::-1]):
        assert logits is kept
    with pytest.raises(ValueError):
        first[0][0][0, 0] = 1.0
    within = decoder.predict_rows(point_requests[:1] * 3, batch_size=2)  # repeats inside one call: one decode
    assert decoder.n_decoded == 2 * len(samples) and len(within) == 3
    decoder.forget()
    decoder.predict_rows(box_requests[:1], batch_size=2)
    assert decoder.n_decoded == 2 * len(samples) + 1
    tiny = CacheDecoder(cache)
    tiny.remember(memo_mb=1.5 * first[0][0].nbytes / 2**20)  # room for one answer
    tiny.predict_rows(box_requests[:2], batch_size=2)
    tiny.predict_rows(box_requests[1:2] + box_requests[:1], batch_size=2)
    assert tiny.n_decoded == 3 and tiny.n_reused == 1
    plain = CacheDecoder(cache)  # not remembering: every request decoded, repeats too
    plain.predict_rows(box_requests[:1] * 2, batch_size=2)
    assert plain.n_decoded == 2 and plain.n_reused == 0
