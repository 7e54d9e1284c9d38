"""What every training script does around the suite's loop: the fast path its device can take, the keyed
run folder it trains in, and the loop run in it, timed.

The four training scripts (``finetune_task2.py``, ``classify_train_task3.py``, ``finetune_interactive.py``,
``train_baseline.py``) differ in what they train and score, not in this: each resolves its fast-path flags
(:func:`fast_path`), opens its run folder with a checked resume (:func:`open_training_run`), and runs
:func:`utils.train.loop.run_training` in it (:func:`train_in_run`), which says which run a divergence or a
mismatched resume belongs to. The errors stay :class:`~utils.core.errors.SuiteError`: the scripts' boundary
prints them as one line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from utils.core import distributed
from utils.core.errors import SuiteError
from utils.scaffold.runs import Run, RunMismatch, open_run

if TYPE_CHECKING:  # utils.train imports utils.scaffold.runs: imported where used, not at import time
    from utils.train.fastpath import FastPath
    from utils.train.loop import LoopConfig, StepResult


@dataclass(frozen=True)
class TrainedRun:
    """What :func:`train_in_run` returns: the run's history and what this call cost."""

    history: dict
    epochs: int  # epochs trained by this call (0 when a resumed run had them all)
    seconds: float
    cpu_seconds: float

    @property
    def seconds_per_epoch(self) -> float | None:
        return round(self.seconds / self.epochs, 2) if self.epochs else None


def fast_path(device: torch.device, precision: str, train_precision: str = "same", compile: str = "off",
              prefetch: str = "off", resident: str = "off", cache_bytes: int = 0) -> "FastPath":
    """:func:`utils.train.fastpath.resolve`, where a value this device cannot take (fp16 on a CPU) is a user
    error (exit 1 through the boundary), not a traceback."""
    from utils.train.fastpath import resolve

    try:
        return resolve(device, precision, train_precision, compile, prefetch, resident, cache_bytes)
    except ValueError as exc:
        raise SuiteError(str(exc)) from exc


def open_training_run(parent: Path, identity: dict, resume: bool, shared: bool = False) -> Run:
    """The run folder for ``identity`` under ``parent`` (:func:`utils.scaffold.runs.open_run`), its note printed.
    ``shared``: under torchrun rank 0 opens it and every rank gets the same folder."""
    if shared:
        run, note = distributed.main_then_share(open_run, parent, identity, resume)
    else:
        run, note = open_run(parent, identity, resume)
    print(note)
    return run


def train_in_run(label: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer, samples: Sequence,
                 step: Callable[[Sequence, int], "StepResult"], validate: Callable[[int], dict], loop: "LoopConfig",
                 resume: bool) -> TrainedRun:
    """:func:`utils.train.loop.run_training` in ``loop.run``, timed (wall and CPU seconds); a divergence or a
    resume that does not fit says ``label`` (which prompt type, which network) first."""
    from utils.train.loop import TrainingDiverged, run_training

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        history, epochs = run_training(module, optimizer, samples, step, validate, loop, resume=resume)
    except (TrainingDiverged, RunMismatch) as exc:
        raise type(exc)(f"{label}: {exc}") from exc
    return TrainedRun(history, epochs, time.perf_counter() - started, time.process_time() - cpu_started)
