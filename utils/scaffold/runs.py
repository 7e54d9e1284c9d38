"""Run folders keyed like the caches, checked resume, and checked hand-offs between tasks.

A training run (a Task 2 decoder for one prompt type, a Task 3 classifier, ...) lives in

    <runs root>/<model>/<prompt>/run-<key>/
        run.json      {"key", "identity", "started"}: what makes this run this run
        last.pt       the last epoch's checkpoint  (model, optimizer, epoch, history, config, run)
        best.pt       the best epoch's checkpoint
        history.json  the curves, written at the end of every call
    <runs root>/<model>/<prompt>/latest   the name of the newest run folder

The key is a hash of the run's *identity*: every setting that changes what the run computes (model and
checkpoint digest, slice-store key, prompt type, the resolved hyperparameters, seed, precision, starting
weights). So two runs with different settings never share a folder, ``--resume`` continues only the run
with today's identity (and names the fields that differ from the newest run when there is none), and a
later task picks up a run only when it was trained for the same model and data.

The number of epochs is not part of the identity: no schedule depends on it, so the first 3 epochs of
a 50-epoch run are a 3-epoch run, and ``--resume --epochs 50`` extends a 3-epoch run.
"""
from __future__ import annotations

import datetime as _dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.core.checkpoints import (
    KINDS,
    TASK2,
    check_kind,
    load_checkpoint,  # noqa: F401 (its home was here: imported from here too)
)
from utils.core.errors import SuiteError
from utils.core.hashing import json_key
from utils.core.io import read_json, write_json, write_text

RUN_KEY_LENGTH = 12  # hex digits of the run-<key> folder name
# Identity fields a later task needs to match to reuse a run's weights (the rest may differ).
DATA_FIELDS = ("model", "checkpoint_sha256", "store_key")


class RunMismatch(SuiteError, ValueError):
    """A resume or hand-off that would mix runs made with other settings; the message names the fields."""


def run_key(identity: dict) -> str:
    """12 hex digits naming a run's folder (run-<key>), from its identity (see :func:`utils.core.hashing.json_key`)."""
    return json_key(identity, RUN_KEY_LENGTH)


def differences(old: dict, new: dict, fields: tuple[str, ...] | None = None) -> list[str]:
    """'name: OLD (that run) vs NEW (now)' for every field whose values differ."""
    names = fields or tuple(sorted(set(old) | set(new)))
    return [f"{name}: {old.get(name)!r} (that run) vs {new.get(name)!r} (now)" for name in names
            if old.get(name) != new.get(name)]


@dataclass(frozen=True)
class Run:
    path: Path
    key: str
    identity: dict

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def record(self) -> dict:
        """What results files say about the run: its key and folder."""
        return {"key": self.key, "folder": str(self.path)}


def _read_run(folder: Path) -> Run | None:
    try:
        info = read_json(folder / "run.json")
        return Run(folder, info["key"], info["identity"])
    except (OSError, ValueError, KeyError):
        return None


def runs_in(parent: Path) -> list[Run]:
    """Every readable run under ``parent`` (one model and prompt), newest first."""
    if not parent.is_dir():
        return []
    folders = sorted(parent.glob("run-*/run.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [run for run in (_read_run(p.parent) for p in folders) if run is not None]


def open_run(parent: Path, identity: dict, resume: bool) -> tuple[Run, str]:
    """The run folder for ``identity`` under ``parent``, ready to train into; returns (run, what happened).

    resume=True: the run with this identity continues from its ``last.pt``; when there is none but
    other runs exist, :class:`RunMismatch` names how the newest one differs. resume=False: a run with this
    identity is started over (its old checkpoints are removed, so none of them can be reported as this run's).
    """
    key = run_key(identity)
    run = Run(parent / f"run-{key}", key, identity)
    if resume:
        if run.last.is_file():
            stored = _read_run(run.path)
            if stored is None or stored.identity != identity:
                found = stored.identity if stored else {}
                raise RunMismatch(f"{run.path / 'run.json'}: does not describe this run ("
                                  f"{'; '.join(differences(found, identity)) or 'unreadable'}); delete the folder")
            return run, f"resuming {run.path}"
        others = [r for r in runs_in(parent) if r.key != key]
        if others:
            newest = others[0]
            raise RunMismatch(
                f"--resume: no run with today's settings in {parent}. The newest run there ({newest.path.name}) "
                f"differs in: {'; '.join(differences(newest.identity, identity))}. Rerun with that run's settings "
                "to continue it, or without --resume to start a new run with today's.")
        note = f"--resume: no earlier run with these settings in {parent}; starting a new one in {run.path}"
    else:
        note = f"new run in {run.path}"
        if run.path.exists():
            shutil.rmtree(run.path)
            note = f"starting over in {run.path} (an earlier run with the same settings was there; --resume continues one)"
    run.path.mkdir(parents=True, exist_ok=True)
    write_json(run.path / "run.json", {"key": key, "identity": identity,
                                       "started": _dt.datetime.now().isoformat(timespec="seconds")})
    write_text(parent / "latest", run.path.name + "\n")
    return run, note


@dataclass(frozen=True)
class Handoff:
    """Weights another task's run produced, as a later task uses them."""

    checkpoint: Path
    run_key: str
    identity: dict
    epoch: int
    other_data: bool
    state: dict | None = field(default=None, repr=False, compare=False)  # the checkpoint, read and kind-checked

    @property
    def record(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "run_key": self.run_key, "epoch": self.epoch,
                "prompt": self.identity.get("prompt"), "other_data": self.other_data}

    def describe(self) -> str:
        other = " (trained on OTHER data or weights: --allow-other-data)" if self.other_data else ""
        task = {"task2": "Task 2", "task3": "Task 3", "interactive": "interactive"}.get(self.identity.get("task"), str(self.identity.get("task")))
        return f"{task} run {self.run_key} ({self.checkpoint}, epoch {self.epoch}){other}"


def run_checkpoint(path: str | Path) -> Path:
    """The checkpoint a user's PATH names: a run folder -> its best.pt; a ``latest`` file (the name of the newest
    run folder beside it) -> that run's best.pt; any other path as given (load_checkpoint names it if absent)."""
    path = Path(path)
    if path.name == "latest" and path.is_file():
        path = path.parent / path.read_text().strip()
    return path / "best.pt" if path.is_dir() else path


def find_handoff(choice: str, runs_root: Path, prompt: str, wanted: dict, allow_other_data: bool = False,
                 kind: str = TASK2, flag: str = "--finetuned", search_store_key: str | None = None
                 ) -> tuple[Handoff | None, str]:
    """Resolve ``--finetuned auto|none|PATH`` (``flag``) for ``prompt``: the one place a task picks up an
    earlier run's weights. Returns (handoff or None, a sentence saying why); the handoff holds the checkpoint,
    read once and checked to be of ``kind`` (a key of :data:`utils.core.checkpoints.KINDS`).

    ``wanted`` holds today's DATA_FIELDS. ``auto``: the newest complete run under
    ``runs_root/<model>/<prompt>`` with the same model, checkpoint and store (``search_store_key``: made on
    that store instead, recorded as other data), else none. ``PATH``: that run folder or checkpoint;
    refused (RunMismatch naming the fields) when its data differ, unless ``allow_other_data``, which the
    handoff then records. A checkpoint of another kind (a Task 3 classifier or a baseline given as a Task 2
    decoder, ...) is refused with CheckpointError saying what it is and what was expected.
    """
    if choice == "none":
        return None, "pre-trained decoder (--finetuned none)"
    if choice == "auto":
        parent = Path(runs_root) / wanted["model"] / prompt
        search = dict(wanted, store_key=search_store_key) if search_store_key else wanted
        complete = [r for r in runs_in(parent) if r.best.is_file()]
        matching = [r for r in complete if not differences(r.identity, search, DATA_FIELDS)]
        if not matching:
            skipped = f" ({len(complete)} run(s) there were made for other data or weights)" if complete else ""
            return None, f"pre-trained decoder: no run for this model and store in {parent}{skipped}"
        run = matching[0]
        state = load_checkpoint(run.best)
        check_kind(state, run.best, kind, f"{flag} auto, found under {runs_root}")
        other = bool(differences(run.identity, wanted, DATA_FIELDS))
        handoff = Handoff(run.best, run.key, run.identity, int(state["epoch"]) + 1, other, state)
        return handoff, handoff.describe()
    checkpoint = run_checkpoint(choice)
    state = load_checkpoint(checkpoint)
    check_kind(state, checkpoint, kind, flag)
    run_info = state.get("run") or {}
    identity = run_info.get("identity", {})
    if "epoch" not in state or not identity:
        raise RunMismatch(f"{checkpoint} (given as {flag}): not a training run's checkpoint (it records no run); "
                          f"pass {KINDS[kind]}")
    if identity.get("model") != wanted["model"]:
        raise RunMismatch(f"{checkpoint}: fine-tuned from --model {identity.get('model')}, not --model {wanted['model']}")
    differing = differences(identity, wanted, DATA_FIELDS)
    if differing and not allow_other_data:
        raise RunMismatch(f"{checkpoint}: trained for other data or weights ({'; '.join(differing)}). Use a run "
                          "made on this slice store, or pass --allow-other-data to use it anyway (recorded).")
    handoff = Handoff(checkpoint, run_info.get("key", "?"), identity, int(state["epoch"]) + 1, bool(differing), state)
    return handoff, handoff.describe()


def identity_of(task: str, exp: Any, prompt: str, seed: int, precision: str, encoder_precision: str,
                **settings: Any) -> dict:
    """A run's identity: the data, model and weights, the prompt, the seed and precision, and ``settings``."""
    return {"task": task, "model": exp.model.name, "checkpoint_sha256": exp.model.checkpoint_sha256,
            "store_key": exp.store.key, "prompt": prompt, "seed": seed, "precision": precision,
            "encoder_precision": encoder_precision, **settings}
