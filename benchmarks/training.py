"""Task 2 and Task 3 training steps, exact path vs fast path (utils.train.fastpath) interleaved in this process,
wall and CPU (user+sys) time: LiteMedSAM on the phantom (160x160) and a ViT-B-shaped model (random weights) on
512x512 phantom slices with random embeddings, at batch 16 and 64; torch.compile's first-call cost and steady
rate; and the paper preset's estimated wall time on BTCV from the measured rate (TRAINING_ESTIMATE)."""
from __future__ import annotations

import copy
import os
import time

import numpy as np
import torch

from benchmarks.common import BENCH_DATA, phantom_store, sync, task1_store
from utils.embeddings.cache import EmbeddingReader

# The paper preset on real BTCV, for the estimate: BTCV's 30 labelled CTs hold 3,779 axial slices; the
# training split (80 %) has ~2,400 organ-bearing slices with ~4.2 of the 13 organs each, ~10,000
# (slice, organ) samples; Task 2 adds 2 augmented views per slice (30,000 samples per epoch) and trains
# 5 prompt types for 50 epochs (7.5M sample-steps); Task 3 trains one prompt type on the 10,000 unaugmented
# samples for 50 epochs (0.5M). Validation and encoding are not included.
TRAINING_ESTIMATE = {"task2_sample_steps": 30_000 * 50 * 5, "task3_sample_steps": 10_000 * 50}
# (steps per timed round, rounds) on a CPU / GPU; exact and fast alternate round by round.
TRAINING_PLAN = {"cpu": (1, 3), "cuda": (10, 5)}


class RandomEmbeddings(EmbeddingReader):
    """An embedding cache stand-in for speed: a real store's labels, seeded random embeddings (float16
    as stored), so a ViT-B-shaped run needs no ViT-B encoder pass (11.6 s per slice on this CPU)."""

    def __init__(self, model, store):
        from utils.data.samples import SampleIndex

        self.model = model
        self.index = SampleIndex(store)
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(len(self.index), 256, 64, 64, generator=g).half()

    def embeddings(self, rows, device="cpu") -> torch.Tensor:
        """float32 (len(rows), 256, 64, 64) of the random table's ``rows`` on ``device``."""
        out = self.table[torch.as_tensor(np.asarray(rows))]
        if torch.device(device).type == "cuda":
            out = out.pin_memory()
        return out.to(device, non_blocking=True).float()


def cpu_seconds() -> float:
    """This process's user + system CPU seconds so far."""
    t = os.times()
    return t.user + t.system


def training_variants(device: torch.device) -> dict:
    """name -> resolved fast path (utils.train.fastpath.FastPath): the exact path and the device's fast paths."""
    from utils.train.fastpath import resolve

    variants = {"exact": resolve(device, "fp32"),
                "fast": resolve(device, "fp32", "auto", "off", "auto", "auto", cache_bytes=0),
                "fast+compile": resolve(device, "fp32", "auto", "on", "auto", "auto", cache_bytes=0)}
    if device.type == "cpu" and variants["fast"].train_precision != "bf16":
        # auto keeps fp32 on a CPU without AMX; bf16 is still measured, to show why
        variants["bf16"] = resolve(device, "fp32", "bf16")
    return variants


def training_configs(device: torch.device) -> list[tuple[str, EmbeddingReader]]:
    """(label, cache) of the two models measured: LiteMedSAM's real cache of Task 1's store, and a
    ViT-B-shaped model (random weights) with random embeddings of 512x512 phantom slices."""
    from utils.data.slice_store import SliceStore
    from utils.embeddings.cache import EmbeddingCache
    from utils.models.sam import load_model

    lite_cache = EmbeddingCache(load_model("lite_medsam", device=device), task1_store(device),
                                root=BENCH_DATA / "cache")
    lite_cache.ensure(progress=False)
    torch.manual_seed(0)
    vit_b = load_model("vit_b", device=device, random_init=True)
    store512 = SliceStore(phantom_store("train512", volumes=1, slices=2, size=512))
    return [("lite_medsam, phantom 160x160 (real weights)", lite_cache),
            ("vit_b-shaped (random weights), 512x512 slices", RandomEmbeddings(vit_b, store512))]


def make_runner(task: str, cache: EmbeddingReader, fast, device: torch.device, pool: list, batch_size: int) -> dict:
    """{"run": one round of training steps over ``pool`` ((cache id, row, organ) samples), "note": how the
    decoder ran (asked after the first round: a failed compile falls back then)} for Task 2 (SGD on a copy
    of the decoder) or Task 3 (Adam on the classifier's parts)."""
    from modified_classifier import ClassifyingMaskDecoder
    from utils.inference.decoding import predict_masks_paired
    from utils.train.classifier_step import make_class_step
    from utils.train.decoder_step import make_step, trainable_decoder
    from utils.train.fastpath import CompiledOrEager, ResidentEmbeddings, batches, grad_scaler
    from utils.train.loop import backward_step

    model = cache.model
    torch.manual_seed(0)
    resident = ResidentEmbeddings(cache, device) if fast.resident else None
    if task == "task2":
        module = trainable_decoder(model)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        paired = CompiledOrEager(predict_masks_paired, fast.compile)
        step = make_step([cache], "bound_box", 0, module, fast.train_precision, paired,
                         {0: resident} if resident else None)
        note = lambda: paired.note  # noqa: E731
    else:
        classifier = ClassifyingMaskDecoder(copy.deepcopy(model.sam.mask_decoder)).to(device)
        classifier.freeze_for_task3()
        optimizer = torch.optim.Adam(classifier.trainable_parameters(), lr=1e-4)
        step = make_class_step(cache, classifier, model.sam.prompt_encoder, "one_central_point", 0,
                               fast.train_precision, resident)
        pool, note = [(r, o) for _, r, o in pool], lambda: "eager"
    scaler = grad_scaler(fast, device)
    order = np.arange(len(pool))

    def run_round():
        for inputs in batches(pool, order, batch_size, 0, step.prepare, fast.prefetch):
            optimizer.zero_grad(set_to_none=True)
            backward_step(step(inputs, 0).loss, optimizer, scaler)

    return {"run": run_round, "note": note}


def time_interleaved(runners: dict, rounds: int, device: torch.device) -> None:
    """Each runner's first round (warm-up; with compile, its compile time), then ``rounds`` timed rounds,
    interleaved (exact, fast, exact, fast ...) so drifting machine load hits every path alike; adds
    first_round_s, wall and cpu (seconds) to each runner."""
    for r in runners.values():
        sync(device)
        t0 = time.perf_counter()
        r["run"]()
        sync(device)
        r.update(first_round_s=time.perf_counter() - t0, wall=0.0, cpu=0.0)
    for _ in range(rounds):
        for r in runners.values():
            sync(device)
            w, c = time.perf_counter(), cpu_seconds()
            r["run"]()
            sync(device)
            r["wall"] += time.perf_counter() - w
            r["cpu"] += cpu_seconds() - c


def measure(device: torch.device, compile_on_cpu: bool = False) -> dict:
    """Task 2 / Task 3 training steps, exact vs fast path, interleaved; samples/s wall and per CPU second."""
    per_round, rounds = TRAINING_PLAN[device.type]
    variants = training_variants(device)
    if device.type == "cpu" and not compile_on_cpu:
        variants.pop("fast+compile")
    rows = []
    for label, cache in training_configs(device):
        for p in cache.model.sam.parameters():
            p.requires_grad_(False)
        samples = [(0, r, o) for r, o in cache.index.samples(range(len(cache)))]
        for batch_size in (16, 64):
            pool = (samples * (1 + (per_round * batch_size) // len(samples)))[: per_round * batch_size]
            for task in ("task2", "task3"):
                runners = {name: make_runner(task, cache, fast, device, pool, batch_size)
                           for name, fast in variants.items()}
                time_interleaved(runners, rounds, device)
                n = rounds * len(pool)
                base = n / runners["exact"]["wall"]
                for name, r in runners.items():
                    row = {"config": label, "task": task, "batch": batch_size, "path": name,
                           "flags": variants[name].record(), "samples": n,
                           "samples_per_s": round(n / r["wall"], 2),
                           "samples_per_cpu_s": round(n / max(r["cpu"], 1e-9), 2),
                           "speedup": round(n / r["wall"] / base, 2), "first_round_s": round(r["first_round_s"], 1),
                           "compile": r["note"]()}
                    rows.append(row)
                    print(f"  training {task} {label} batch {batch_size} {name}: {row['samples_per_s']:.1f} samples/s "
                          f"({row['samples_per_cpu_s']:.1f} per CPU s), {row['speedup']:.2f}x", flush=True)
    return {"rows": rows, "estimate": paper_estimate(rows, device)}


def paper_estimate(rows: list[dict], device: torch.device) -> dict:
    """Hours of training for the paper preset on BTCV (TRAINING_ESTIMATE) at the measured ViT-B-shaped rates."""
    out = {"assumed": TRAINING_ESTIMATE, "device": device.type}
    for path in sorted({r["path"] for r in rows}):
        rate = {t: max((r["samples_per_s"] for r in rows if r["path"] == path and r["task"] == t
                        and r["config"].startswith("vit_b")), default=None) for t in ("task2", "task3")}
        if None in rate.values():
            continue
        hours = (TRAINING_ESTIMATE["task2_sample_steps"] / rate["task2"]
                 + TRAINING_ESTIMATE["task3_sample_steps"] / rate["task3"]) / 3600
        out[path] = {"task2_samples_per_s": rate["task2"], "task3_samples_per_s": rate["task3"],
                     "hours": round(hours, 1)}
    return out


def markdown(result: dict) -> list[str]:
    """bench.md's lines for this section."""
    from utils.report.markdown import markdown_table

    lines = ["## Training steps: exact path vs fast path (interleaved in one process)", "", markdown_table(
        ["model, slices", "task", "batch", "path", "samples/s", "samples per CPU s", "speed-up", "first round s",
         "decoder"],
        [[r["config"], r["task"], r["batch"], r["path"], f"{r['samples_per_s']:.1f}", f"{r['samples_per_cpu_s']:.1f}",
          f"{r['speedup']:.2f}x", f"{r['first_round_s']:.1f}", r["compile"]] for r in result["rows"]]), ""]
    est = result["estimate"]
    a = est["assumed"]
    return lines + [
        f"Paper preset on BTCV, training only, at the ViT-B-shaped rate (best batch) on this {est['device']}: "
        f"{a['task2_sample_steps']:,} Task 2 sample-steps (30,000 (slice, organ, view) samples x 50 epochs x "
        f"5 prompts) + {a['task3_sample_steps']:,} Task 3 sample-steps: "
        + "; ".join(f"{k} {v['hours']} h" for k, v in est.items() if isinstance(v, dict) and "hours" in v)
        + ".", ""]
