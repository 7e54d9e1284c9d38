"""Image-encoder throughput: slices/s of lite_medsam (its real weights) and vit_b / vit_h with random weights
(speed does not depend on the values; no SAM checkpoint is needed), fp32 and the device's fast precisions."""
from __future__ import annotations

import torch

from benchmarks.common import fast_precisions, timed

# (batch, warm-up calls, timed calls) per model: a CPU gets one vit_h image (about a minute each).
ENCODER_PLAN = {
    "cpu": {"lite_medsam": (4, 1, 3), "vit_b": (1, 0, 1), "vit_h": (1, 0, 1)},
    "cuda": {"lite_medsam": (32, 2, 10), "vit_b": (8, 2, 5), "vit_h": (4, 2, 5)},
}


def model_rows(name: str, device: torch.device) -> list[dict]:
    """One row per precision for model ``name``: slices/s and s/slice of its image encoder on random input."""
    from utils.core.precision import autocast
    from utils.models.sam import load_model

    batch, warmup, repeats = ENCODER_PLAN[device.type][name]
    torch.manual_seed(0)
    model = load_model(name, device=device, random_init=name != "lite_medsam")
    x = torch.rand(batch, 3, model.input_size, model.input_size, device=device)
    rows = []
    for precision in ["fp32", *fast_precisions(device)]:
        with torch.inference_mode(), autocast(device, precision):
            seconds = timed(lambda: model.sam.image_encoder(x), device, warmup, repeats)
        rows.append({"model": name, "weights": "real" if name == "lite_medsam" else "random (timing only)",
                     "precision": precision, "batch": batch, "input": model.input_size,
                     "slices_per_s": round(batch / seconds, 3), "s_per_slice": round(seconds / batch, 4)})
        print(f"  encoder {name:<12} {precision}: {batch / seconds:8.2f} slices/s", flush=True)
    return rows


def measure(names: list[str], device: torch.device) -> list[dict]:
    """The rows of every model in ``names``, one model in memory at a time."""
    rows = []
    for name in names:
        rows += model_rows(name, device)  # its model and input are freed on return
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def markdown(rows: list[dict]) -> list[str]:
    """bench.md's lines for this section."""
    from utils.report.markdown import markdown_table

    return ["## Image encoder", "", markdown_table(
        ["model", "weights", "precision", "batch", "slices/s", "s/slice"],
        [[r["model"], r["weights"], r["precision"], r["batch"], f"{r['slices_per_s']:.2f}", f"{r['s_per_slice']:.3f}"]
         for r in rows])]
