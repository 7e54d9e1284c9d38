"""The interactive training step (utils.train.interactive), exact path (fp32) against the fast path (bf16
autocast; fp16 too on a GPU), interleaved step by step in this process so that both see the same load:
samples/s wall and per CPU second, per correction-round count, LiteMedSAM's real weights on Task 1's fixed
phantom store (160x160) with its cached embeddings. One optimiser step is every round's forward (the clicks
drawn under no_grad, the mask fed back), the loss over rounds, backward and an SGD step, so a sample costs
about (rounds + 1) decoder forward + backward passes (finetune_interactive.py sizes its quick preset on it).

    python benchmarks/run.py --sections interactive
"""
from __future__ import annotations

import time

import torch

from benchmarks.common import BENCH_DATA, fast_precisions, sync, task1_store

ROUND_COUNTS = (1, 4, 8)
BATCH = 8
# (untimed warm-up steps, timed steps) per precision and round count, on a CPU / GPU
STEPS = {"cpu": (1, 3), "cuda": (3, 10)}


def step_rates(model, cache, rounds: int, precisions: list[str], warmup: int, steps: int) -> dict:
    """{precision: (samples/s wall, samples per CPU second)} at ``rounds``, the precisions interleaved."""
    from utils.train.decoder_step import trainable_decoder
    from utils.train.interactive import InteractiveSettings, make_interactive_step

    samples = [(0, r, o) for r, o in cache.index.samples(range(len(cache)))]
    settings = InteractiveSettings(rounds=rounds)
    variants = {}
    for precision in precisions:
        trainable = trainable_decoder(model)  # the copies finetune_interactive.py trains
        optimizer = torch.optim.SGD(trainable.parameters(), lr=1e-3, momentum=0.9)
        variants[precision] = (make_interactive_step([cache], settings, 0, trainable, precision), optimizer)
    wall = dict.fromkeys(variants, 0.0)
    cpu = dict.fromkeys(variants, 0.0)
    for i in range(warmup + steps):
        chosen = [samples[(i * BATCH + k) % len(samples)] for k in range(BATCH)]
        for precision, (step, optimizer) in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            result = step(chosen, i)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            optimizer.step()
            sync(model.device)
            if i >= warmup:
                wall[precision] += time.perf_counter() - start
                cpu[precision] += time.process_time() - start_cpu
    n = steps * BATCH
    return {p: (round(n / wall[p], 2), round(n / cpu[p], 2)) for p in variants}


def measure(device: torch.device) -> list[dict]:
    """One row per (round count, precision): samples/s of the interactive step, wall and per CPU second."""
    from utils.embeddings.cache import EmbeddingCache
    from utils.models.sam import load_model

    model = load_model("lite_medsam", device=device)
    for p in model.sam.parameters():
        p.requires_grad_(False)
    cache = EmbeddingCache(model, task1_store(device), root=BENCH_DATA / "cache")
    cache.ensure(progress=False)
    warmup, steps = STEPS[device.type]
    precisions = ["fp32", *fast_precisions(device)]
    rows = []
    for rounds in ROUND_COUNTS:
        rates = step_rates(model, cache, rounds, precisions, warmup, steps)
        for precision, (wall, per_cpu) in rates.items():
            rows.append({"rounds": rounds, "precision": precision, "batch": BATCH, "samples_per_s": wall,
                         "samples_per_cpu_s": per_cpu, "passes_per_s": round(wall * (rounds + 1), 1)})
        print("  interactive step, " + f"{rounds} round(s): " + ", ".join(
            f"{p} {w} samples/s" for p, (w, _) in rates.items()), flush=True)
    return rows


def markdown(rows: list[dict]) -> list[str]:
    """bench.md's lines for this section."""
    from utils.report.markdown import markdown_table

    return ["## Interactive training step", "", f"LiteMedSAM decoder, batch {BATCH}; fp32 is the exact path. "
            "A pass is one decoder forward + backward (a sample costs rounds + 1).", "", markdown_table(
                ["rounds", "precision", "samples/s", "samples per CPU s", "passes/s"],
                [[r["rounds"], r["precision"], f"{r['samples_per_s']:.2f}", f"{r['samples_per_cpu_s']:.2f}",
                  f"{r['passes_per_s']:.1f}"] for r in rows]), ""]
