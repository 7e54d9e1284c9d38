"""Task 1 end to end (all five prompts) on a fixed phantom store, by the suite (embedding cache + batched
decoding) against the naive study: SamPredictor.set_image + predict once per (slice, organ, prompt). Both
run in this process on the same store; their Dice must agree, and the speed ratio is reported."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import BENCH_DATA, sync, task1_store


def task1_variants(device: torch.device) -> list[tuple[str, str]]:
    """(--precision, --encoder-precision) pairs: fp32, then the fast paths worth having on ``device``."""
    if device.type == "cuda":
        return [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")]
    return [("fp32", "fp32"), ("bf16", "fp32"), ("bf16", "bf16")]


def naive_task1(model, store, prompt_types, seed: int = 0, progress: bool = True) -> tuple[float, dict]:
    """The study as a first version writes it: SamPredictor.set_image + predict per (slice, organ, prompt)."""
    from segment_anything import SamPredictor
    from tqdm import tqdm

    from utils.eval.dice import dice_score
    from utils.inference.batches import prompt_for
    from utils.models.sam import to_uint8

    predictor = SamPredictor(model.sam)
    dice = {}
    work = [(i, o, p) for i in range(len(store)) for o in sorted(store.records[i].organs) for p in prompt_types]
    start = time.perf_counter()
    for index, organ, prompt_type in tqdm(work, desc="naive SamPredictor loop", unit="prompt", disable=not progress):
        image, label = store.load(index)
        mask = label == organ
        if model.name == "lite_medsam":  # LiteMedSAM's own preprocessing, handed over already transformed
            h, w = model.resized_size(image.shape)
            predictor.set_torch_image(model.prepare_image(image)[None, :, :h, :w].to(model.device), image.shape)
        else:
            predictor.set_image(np.repeat(to_uint8(image)[:, :, None], 3, axis=2))
        prompt = prompt_for(mask, prompt_type, seed, index, organ)  # the very prompt the suite draws
        if prompt.box is not None:
            masks, _, _ = predictor.predict(box=prompt.box, multimask_output=False)
        else:
            masks, _, _ = predictor.predict(point_coords=prompt.points, point_labels=prompt.labels,
                                            multimask_output=False)
        dice[(index, organ, prompt_type)] = dice_score(masks[0], mask)
    sync(model.device)
    return time.perf_counter() - start, dice


def suite_task1(model, store, prompt_types, precision: str, encoder_precision: str, cache_root: Path,
                seed: int = 0) -> tuple[float, float, dict]:
    """(seconds with a cold cache, seconds of decoding alone, Dice per sample) by the suite's own path."""
    from utils.core.device import auto_batch
    from utils.embeddings.cache import EmbeddingCache
    from utils.eval.segmentation import evaluate_prompt

    shutil.rmtree(cache_root, ignore_errors=True)
    start = time.perf_counter()
    cache = EmbeddingCache(model, store, root=cache_root, encoder_precision=encoder_precision)
    cache.ensure(batch_size=auto_batch(model.device, "encode"), progress=False)
    decode_start = time.perf_counter()
    dice = {}
    for prompt_type in prompt_types:
        _, records = evaluate_prompt(cache, cache.index.samples(range(len(cache))), prompt_type, seed=seed,
                                     batch_size=auto_batch(model.device, "decode"), precision=precision)
        dice.update({(r["row"], r["organ"], prompt_type): r["dice"] for r in records})
    sync(model.device)
    end = time.perf_counter()
    shutil.rmtree(cache_root, ignore_errors=True)
    return end - start, end - decode_start, dice


def measure(device: torch.device, progress: bool) -> dict:
    """The suite at each of task1_variants against the naive loop: seconds, speed-up, mDice per prompt."""
    from utils.eval.dice import summarise_dice
    from utils.inference.prompts import STUDY_PROMPTS
    from utils.models.sam import load_model

    model = load_model("lite_medsam", device=device)
    store = task1_store(device)
    prompts = list(STUDY_PROMPTS)
    n_prompts = sum(len(r.organs) for r in store.records) * len(prompts)
    suite = {}
    for precision, encoder_precision in task1_variants(device):
        name = f"decoder {precision}, encoder {encoder_precision}"
        seconds, decode_seconds, dice = suite_task1(model, store, prompts, precision, encoder_precision,
                                                    BENCH_DATA / "task1-cache")
        suite[name] = {"seconds": round(seconds, 2), "decode_seconds": round(decode_seconds, 2), "dice": dice,
                       "flags": f"--precision {precision} --encoder-precision {encoder_precision}"}
        print(f"  task1 suite, {name}: {seconds:.1f} s ({decode_seconds:.1f} s decoding)", flush=True)
    naive_seconds, naive_dice = naive_task1(model, store, prompts, progress=progress)
    print(f"  task1 naive SamPredictor loop: {naive_seconds:.1f} s", flush=True)

    def mdice(dice, prompt_type):  # the suite's own summary: mean over organs of the mean over slices
        return summarise_dice((organ, d) for (_, organ, p), d in dice.items() if p == prompt_type)["mDice"]

    reference = suite["decoder fp32, encoder fp32"]
    result = {
        "store": store.description, "slices": len(store), "prompts_decoded": n_prompts, "model": model.name,
        "naive_seconds": round(naive_seconds, 2),
        "naive_vs_suite_fp32_max_dice_difference": round(
            max(abs(naive_dice[k] - reference["dice"][k]) for k in naive_dice), 6),
        "mDice": {"naive (fp32)": {p: round(mdice(naive_dice, p), 4) for p in prompts}},
        "suite": {},
    }
    for name, r in suite.items():
        result["suite"][name] = {"flags": r["flags"], "seconds": r["seconds"], "decode_seconds": r["decode_seconds"],
                                 "speedup": round(naive_seconds / r["seconds"], 2)}
        result["mDice"][f"suite, {name}"] = {p: round(mdice(r["dice"], p), 4) for p in prompts}
    result["speedup_fp32"] = result["suite"]["decoder fp32, encoder fp32"]["speedup"]
    result["target_5x_met"] = result["speedup_fp32"] >= 5
    return result


def markdown(t: dict) -> list[str]:
    """bench.md's lines for this section."""
    from utils.report.markdown import markdown_table

    rows = [["naive: SamPredictor.set_image + predict per (slice, organ, prompt), fp32",
             f"{t['naive_seconds']:.1f}", "-", "1.0x"]]
    rows += [[f"suite: embedding cache + batched decoding, {name} (`{r['flags']}`)", f"{r['seconds']:.1f}",
              f"{r['decode_seconds']:.1f}", f"{r['speedup']:.1f}x"] for name, r in t["suite"].items()]
    return [f"## Task 1 end to end ({t['store']}: {t['slices']} slices, {t['prompts_decoded']} prompts, "
            f"{t['model']})", "", markdown_table(["path", "seconds", "decoding s", "speed-up"], rows),
            f"Largest per-sample Dice difference, naive vs suite fp32: "
            f"{t['naive_vs_suite_fp32_max_dice_difference']}.", "",
            markdown_table(["path", *next(iter(t["mDice"].values())).keys()],
                           [[k, *v.values()] for k, v in t["mDice"].items()])]
