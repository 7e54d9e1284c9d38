"""What ``segment_volume.py`` opens for a CT without labels, where there is no slice store to build a session
on: the model on its device, a decoder from a run path (``--finetuned``), the record of a run checkpoint it
used, one CT's slice embeddings, optionally read from a store's cache (``--embeddings-from``), and what the
label map's sidecar says of the run. Every failure is the suite's one error line.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from utils.embeddings.on_demand import VolumeEmbeddings
from utils.models.sam import SamModel
from utils.scaffold.session import fail, open_model_on


def open_model(args: argparse.Namespace) -> tuple[SamModel, "object"]:
    """(model, device) for --model / --checkpoint / --device (the session's loader, without a store)."""
    from utils.core.device import pick_device

    try:
        device = pick_device(args.device)
    except (RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from exc
    return open_model_on(args, device), device


DECODER_NAMES = ("none", "auto", "interactive", "propagation")


def resolve_decoder(finetuned: str, model_name: str, prompt_types: set, root: Path, flag: str = "--finetuned") -> str:
    """``--finetuned none|auto|interactive|propagation|PATH`` as the other scripts name decoders, resolved to
    ``none`` or a path BEFORE any model is loaded; CheckpointError naming what to run or pass otherwise.

    auto: Task 2's run for the prompt type every entry uses (``root``/finetuned/<model>/<type>/latest); interactive:
    ``root``/interactive/<model>/interactive/latest; propagation: Task 2's propagated_box run. A PATH must exist;
    a folder must hold best.pt or be a run's parent with a ``latest`` file."""
    from utils.core.errors import CheckpointError

    if finetuned == "none":
        return "none"
    if finetuned == "auto":
        if len(prompt_types) != 1:
            raise CheckpointError(f"{flag} auto: the prompt file mixes prompt types ({', '.join(sorted(prompt_types))}) "
                                  "and Task 2 trains one decoder per type; pass --finetuned interactive (one decoder "
                                  "for every prompt) or a run folder")
        (kind,) = prompt_types
        path, make = root / "finetuned" / model_name / kind / "latest", f"finetune_task2.py --prompts {kind}"
    elif finetuned == "interactive":
        path, make = root / "interactive" / model_name / "interactive" / "latest", "finetune_interactive.py"
    elif finetuned == "propagation":
        path, make = root / "finetuned" / model_name / "propagated_box" / "latest", \
            "finetune_task2.py --prompts propagated_box"
    else:
        path, make = Path(finetuned), None
    if make is not None:
        if not path.is_file():
            raise CheckpointError(f"{flag} {finetuned}: no run at {path.parent} for --model {model_name}; run "
                                  f"python {make} (same --model) first, or pass a run folder")
        return str(path)
    if not path.exists():
        raise CheckpointError(f"{flag} {path}: no such file or folder; pass none, auto, interactive, propagation, a "
                              "run folder (run-<key>), its best.pt, or the latest file beside the run folders")
    if path.is_dir() and not (path / "best.pt").is_file():
        if (path / "latest").is_file():
            return str(path / "latest")
        raise CheckpointError(f"{flag} {path}: this folder holds no best.pt and no latest file; pass a run folder "
                              f"(run-<key>) or its parent with a latest file, e.g. {path / 'latest'}")
    return str(path)


def open_run_decoder(finetuned: str, model: SamModel, flag: str = "--finetuned") -> tuple:
    """(prompt encoder, mask decoder, record) for ``none`` (the model's own: (None, None, record)) or a Task 2 /
    interactive run folder, its ``latest`` file or a checkpoint; the checkpoint's kind is checked before any
    weights are loaded."""
    from utils.core.checkpoints import INTERACTIVE, KINDS, TASK2, checkpoint_kind, load_checkpoint
    from utils.core.errors import CheckpointError
    from utils.models.sam import decoder_from_state
    from utils.scaffold.runs import run_checkpoint

    if finetuned == "none":
        return None, None, {"source": "the model's own prompt encoder + mask decoder (zero-shot)"}
    checkpoint = run_checkpoint(finetuned)
    state = load_checkpoint(checkpoint)
    kind = checkpoint_kind(state)
    if kind not in (TASK2, INTERACTIVE):
        what = KINDS.get(kind, "not a checkpoint the suite recognises")
        raise CheckpointError(f"{checkpoint} (given as {flag}): this is {what}; pass a Task 2 or interactive "
                              f"run folder or its best.pt, or {flag} none")
    prompt_encoder, mask_decoder = decoder_from_state(model, state, checkpoint, kind)
    return prompt_encoder, mask_decoder, {"source": f"{KINDS[kind]}: {checkpoint}", "kind": kind,
                                          **run_record(checkpoint, state)}


def run_record(checkpoint: Path, state: dict) -> dict:
    """What a results file says of a run's checkpoint it used: path, digest, run key, epoch (1-based), and the
    prompt type and slice store the run was trained for (None where the checkpoint does not say)."""
    from utils.core.hashing import file_sha256

    run = state.get("run", {})
    identity = run.get("identity", {})
    return {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint), "run_key": run.get("key"),
            "epoch": int(state["epoch"]) + 1 if "epoch" in state else None,
            "trained_for_prompt": identity.get("prompt"), "trained_on_store": identity.get("store_key")}


def ct_embeddings(model: SamModel, images: np.ndarray, args: argparse.Namespace) -> VolumeEmbeddings:
    """The CT's display slices ``images``, encoded on first use; with ``args.embeddings_from`` (a slice store
    cut from this CT) the slices its cache for this model and encoder precision holds are read instead."""
    embeddings = VolumeEmbeddings(model, images, args.encoder_precision, args.encode_batch)
    if args.embeddings_from is None:
        return embeddings
    from utils.data.dataset import DataError
    from utils.data.slice_store import SliceStore
    from utils.embeddings.cache import EmbeddingCache

    try:
        store = SliceStore(Path(args.embeddings_from))
    except DataError as exc:
        raise fail(f"--embeddings-from: {exc}") from exc
    cache = EmbeddingCache(model, store, root=args.cache_dir, encoder_precision=args.encoder_precision)
    found = embeddings.reuse(cache)
    print(f"--embeddings-from {args.embeddings_from}: {found} of {len(images)} slices read from {cache.path}")
    return embeddings


def sidecar_record(args: argparse.Namespace, model: SamModel, device, decoder_record: dict, prompt_spec: dict,
                   settings: dict, naming: dict | None, traces: dict) -> dict:
    """The label map's sidecar JSON, but its timing and scores: the CT and its digest, the model, decoder,
    precisions and device, the prompts as given, the propagation settings, the naming, per organ its trace."""
    from utils.core.device import describe
    from utils.core.hashing import file_sha256

    return {"image": str(args.image), "image_sha256": file_sha256(args.image),
            "labels_used": "none: every prompt came from the prompt file",
            "model": model.name, "checkpoint": model.checkpoint, "checkpoint_sha256": model.checkpoint_sha256,
            "decoder": decoder_record, "precision": args.precision, "encoder_precision": args.encoder_precision,
            "device": describe(device), "prompt_file": str(args.prompts), "prompts_given": prompt_spec,
            "settings": settings, "naming": naming,
            "coordinates_decoded": "display stack: z inferior -> superior, row 0 anterior, column 0 the patient's "
                                   "right",
            "organs": traces, "embeddings_from": None if args.embeddings_from is None else str(args.embeddings_from)}
