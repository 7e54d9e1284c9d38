"""The one training loop of Tasks 2 and 3: epochs over (cache row, organ) samples, a validation pass
per epoch, best and last checkpoints, resume, and a stop on a non-finite or exploding loss.

A task supplies ``step(samples, epoch) -> StepResult`` (forward + loss on one batch) and
``validate(epoch) -> dict`` (its metrics). Sample order and prompts depend only on (seed, epoch), and
the decoder has no dropout, so a run resumed from its last checkpoint draws exactly what an
uninterrupted run would have drawn and gives the same curves. Checkpoints live in the run's keyed
folder (:mod:`utils.scaffold.runs`), and a resume continues only a checkpoint of that very run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from utils.core import distributed
from utils.core.checkpoints import cpu_state, load_checkpoint, save_checkpoint
from utils.core.errors import SuiteError
from utils.core.io import write_json
from utils.scaffold.runs import Run, RunMismatch
from utils.train.fastpath import batches


class TrainingDiverged(SuiteError, RuntimeError):
    """The loss became NaN/inf or exploded; the last good checkpoint is kept (the message says to lower the
    learning rate: a setting the user can change, so an error, not a bug)."""


@dataclass
class StepResult:
    loss: torch.Tensor  # scalar, requires grad
    metric_sum: float  # sum over the batch of the training metric (Dice or accuracy)
    count: int


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    samples_per_epoch: int  # 0 = every sample every epoch
    seed: int
    monitor: str  # validation key to maximise for the best checkpoint
    run: Run
    explode_factor: float = 1e3  # a batch loss this many times the first epoch's mean loss stops the run
    progress: bool = True
    extra: dict = field(default_factory=dict)  # the run's full config, saved in every checkpoint
    # Fast path (utils.train.fastpath): step receives prepare(batch, epoch) instead of the batch, made one batch
    # ahead in a background thread when prefetch; scaler: a GradScaler for fp16 training on a GPU.
    prepare: Callable[[Sequence, int], object] | None = None
    prefetch: bool = False
    scaler: object | None = None


def epoch_order(n: int, seed: int, epoch: int, samples_per_epoch: int) -> np.ndarray:
    """Which samples epoch ``epoch`` visits, in order: a seeded permutation, cut to samples_per_epoch."""
    order = np.random.default_rng([seed, 7919, epoch]).permutation(n)
    return order[:samples_per_epoch] if 0 < samples_per_epoch < n else order


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler=None) -> None:
    """loss.backward() and optimizer.step(), through ``scaler`` (fp16 on a GPU) when given."""
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def run_training(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: Sequence,
    step: Callable[[Sequence, int], StepResult],
    validate: Callable[[int], dict],
    config: LoopConfig,
    resume: bool = False,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> tuple[dict, int]:
    """Train ``module`` (whose parameters ``optimizer`` holds); return (history, epochs trained by this call).

    history: {"epoch": [...], "train_loss": [...], "train_metric": [...], "val": [per-epoch dicts],
    "best_epoch": int, "best": float}. Checkpoints ``last.pt`` and ``best.pt`` in the run folder hold
    {"model", "optimizer", "epoch", "history", "config", "run": {"key", "identity"}}.

    Under torchrun (:mod:`utils.core.distributed`) every rank calls this with the same arguments: each step
    splits the global batch ``config.batch_size`` across ranks (DDP), ``validate`` must be collective
    (e.g. :func:`utils.eval.segmentation.evaluate_prompt`), and only rank 0 writes files.
    """
    history, start = _starting_point(module, optimizer, config, resume)
    reference_loss = history["train_loss"][0] if history["train_loss"] else None
    step = distributed.data_parallel_step(module, step)  # torchrun: DDP over a global batch; one process: as is

    for epoch in range(start, config.epochs):
        module.train()
        train_loss, train_metric = _train_epoch(optimizer, samples, step, config, epoch, reference_loss)
        module.eval()
        val = validate(epoch)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(train_loss)
        history["train_metric"].append(train_metric)
        history["val"].append(val)
        if reference_loss is None:
            reference_loss = history["train_loss"][0]
        improved = val[config.monitor] > history["best"]
        if improved:
            history["best"] = float(val[config.monitor])
            history["best_epoch"] = epoch + 1
        _save_epoch(module, optimizer, epoch, history, config, improved)
        print(f"epoch {epoch + 1}/{config.epochs}: train loss {history['train_loss'][-1]:.4f}, "
              f"train metric {history['train_metric'][-1]:.4f}, "
              f"{config.monitor} {val[config.monitor]:.4f}{' (best)' if improved else ''}")
        if on_epoch_end:
            on_epoch_end(history)
    if distributed.is_main():
        write_json(config.run.path / "history.json", history)
    distributed.barrier()  # torchrun: the checkpoints are on disk before any rank reads them
    return history, config.epochs - start


def _starting_point(module: torch.nn.Module, optimizer: torch.optim.Optimizer, config: LoopConfig,
                    resume: bool) -> tuple[dict, int]:
    """(history, first epoch to train): empty and 0, or, with ``resume`` and a ``last.pt`` of this very
    run, its history and the epoch after it, with the module's and optimizer's state loaded."""
    last_path = config.run.last
    history: dict = {"epoch": [], "train_loss": [], "train_metric": [], "val": [], "best_epoch": None, "best": -math.inf}
    if not (resume and last_path.is_file()):
        return history, 0
    state = load_checkpoint(last_path)
    if state.get("run", {}).get("key") != config.run.key:
        raise RunMismatch(f"{last_path}: belongs to run {state.get('run', {}).get('key')}, not {config.run.key}; "
                          "delete the folder")
    start = state["epoch"] + 1
    if start > config.epochs:
        raise RunMismatch(f"--epochs {config.epochs}: the run in {config.run.path} already has {start} epochs; "
                          f"pass --epochs {start} or more to continue it")
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    print(f"resumed from {last_path} after epoch {start}")
    return state["history"], start


def _train_epoch(optimizer: torch.optim.Optimizer, samples: Sequence, step: Callable[[Sequence, int], StepResult],
                 config: LoopConfig, epoch: int, reference_loss: float | None) -> tuple[float, float]:
    """One epoch of steps over this epoch's sample order; returns (mean loss, mean metric) per sample.
    Raises TrainingDiverged on a non-finite loss, or one ``explode_factor`` times ``reference_loss``."""
    from tqdm import tqdm

    last_path = config.run.last
    order = epoch_order(len(samples), config.seed, epoch, config.samples_per_epoch)
    total_loss = total_metric = 0.0
    seen = 0
    bar = tqdm(total=len(order), desc=f"epoch {epoch + 1}/{config.epochs}", unit="sample", disable=not config.progress)
    # Under torchrun each rank prepares its own share of the raw global batch inside the step.
    prepare = None if distributed.is_distributed() else config.prepare
    for batch in batches(samples, order, config.batch_size, epoch, prepare, config.prefetch):
        result = step(batch, epoch)
        loss_value = float(result.loss.detach())
        if not math.isfinite(loss_value) or (
            reference_loss is not None and loss_value > config.explode_factor * max(reference_loss, 1e-8)
        ):
            raise TrainingDiverged(
                f"loss {loss_value} at epoch {epoch + 1}: training diverged. The last good checkpoint is "
                f"{last_path if last_path.exists() else '(none yet)'}; lower the learning rate and rerun."
            )
        optimizer.zero_grad(set_to_none=True)
        backward_step(result.loss, optimizer, config.scaler)
        total_loss += loss_value * result.count
        total_metric += result.metric_sum
        seen += result.count
        bar.update(result.count)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
    bar.close()
    return total_loss / max(seen, 1), total_metric / max(seen, 1)


def _save_epoch(module: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, history: dict,
                config: LoopConfig, improved: bool) -> None:
    """``last.pt`` after every epoch and ``best.pt`` when it improved, written by rank 0 only."""
    state = {"model": cpu_state(module), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "history": history, "config": config.extra, "run": {"key": config.run.key, "identity": config.run.identity}}
    if distributed.is_main():  # torchrun: rank 0 writes, every rank holds the same weights
        if improved:
            save_checkpoint(config.run.best, state)
        save_checkpoint(config.run.last, state)
