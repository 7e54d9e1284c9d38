"""Mask-decoder throughput: prompts/s at inference (batched prompts, each paired with its own cached
embedding) and samples/s in Task 2 training (forward + Dice loss + backward + SGD step), fp32 and fast.
SAM's mask decoder is the same module for lite_medsam and vit_b/l/h."""
from __future__ import annotations

import time

import torch

from benchmarks.common import BENCH_DATA, fast_precisions, sync, task1_store, timed

TRAIN_BATCH = 16  # samples per timed training step (two steps per timed call)


def inference_rate(cache, samples: list[tuple[int, int]], precision: str, device: torch.device) -> tuple[int, float]:
    """(decode batch, prompts/s) of bound-box decoding of ``samples`` through Task 1's scoring path."""
    from utils.core.device import auto_batch
    from utils.eval.segmentation import evaluate_prompt

    batch = auto_batch(device, "decode")
    evaluate_prompt(cache, samples[:batch], "bound_box", batch_size=batch, precision=precision)  # warm-up
    sync(device)
    start = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        evaluate_prompt(cache, samples, "bound_box", batch_size=batch, precision=precision)
    sync(device)
    return batch, repeats * len(samples) / (time.perf_counter() - start)


def training_rate(cache, samples: list[tuple[int, int]], precision: str, device: torch.device) -> float:
    """Samples/s of Task 2's training step (utils.train.decoder_step) with SGD at batch TRAIN_BATCH."""
    from utils.train.decoder_step import make_step, trainable_decoder

    for p in cache.model.sam.parameters():
        p.requires_grad_(False)
    trainable = trainable_decoder(cache.model)
    optimizer = torch.optim.SGD(trainable.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    step = make_step([cache], "bound_box", 0, trainable, precision)
    pool = [(0, r, o) for r, o in samples] * (1 + 2 * TRAIN_BATCH // len(samples))
    batches = [pool[:TRAIN_BATCH], pool[TRAIN_BATCH : 2 * TRAIN_BATCH]]

    def train_step():
        for b in batches:
            optimizer.zero_grad(set_to_none=True)
            step(b, 0).loss.backward()
            optimizer.step()

    return 2 * TRAIN_BATCH / timed(train_step, device, 1, 2)


def measure(device: torch.device) -> list[dict]:
    """One row per precision: inference prompts/s and training samples/s of LiteMedSAM's decoder on Task 1's store."""
    from utils.embeddings.cache import EmbeddingCache
    from utils.models.sam import load_model

    model = load_model("lite_medsam", device=device)
    store = task1_store(device)
    rows = []
    for precision in ["fp32", *fast_precisions(device)]:
        cache = EmbeddingCache(model, store, root=BENCH_DATA / "cache")
        cache.ensure(progress=False)
        samples = cache.index.samples(range(len(cache)))
        batch, inference = inference_rate(cache, samples, precision, device)
        training = training_rate(cache, samples, precision, device)
        rows.append({"precision": precision, "inference_batch": batch, "inference_prompts_per_s": round(inference, 2),
                     "train_batch": TRAIN_BATCH, "train_samples_per_s": round(training, 2)})
        print(f"  decoder {precision}: {inference:8.1f} prompts/s inference, {training:6.1f} samples/s training",
              flush=True)
    return rows


def markdown(rows: list[dict]) -> list[str]:
    """bench.md's lines for this section."""
    from utils.report.markdown import markdown_table

    return ["## Mask decoder", "", markdown_table(
        ["precision", "inference batch", "prompts/s (inference)", "train batch", "samples/s (training)"],
        [[r["precision"], r["inference_batch"], f"{r['inference_prompts_per_s']:.1f}", r["train_batch"],
          f"{r['train_samples_per_s']:.1f}"] for r in rows])]
