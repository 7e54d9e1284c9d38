"""Task 2's training step: SAM's prompt encoder + mask decoder on cached embeddings, Dice loss.

One step serves both paths of :mod:`utils.train.fastpath`: the exact path hands it a batch of
(cache id, row, organ) samples and it prepares them itself; the fast path hands it what
:func:`make_prepare` made of the batch ahead (in a background thread). Either way the samples are
grouped by slice (each slice's label and embedding read once), and the loss is the mean over samples,
so grouping changes no number.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from utils.core.precision import autocast
from utils.eval.dice import batch_dice
from utils.inference.batches import build_batch, gather_embeddings
from utils.inference.decoding import decode_inputs, predict_masks_paired, prompt_inputs
from utils.inference.prompts import DEFAULT_BOX_JITTER_PX
from utils.train.fastpath import cuda_step_fits, largest_batch, slice_grouped
from utils.train.loop import StepResult


def trainable_decoder(model, start: dict | None = None) -> torch.nn.ModuleDict:
    """Fresh trainable copies of ``model``'s prompt encoder and mask decoder, as one module
    ({"prompt_encoder", "mask_decoder"}: what a Task 2 checkpoint holds); the model's own stay as they are.
    ``start``: a Task 2 checkpoint's "model" state dict to start from instead of the model's own weights."""
    module = torch.nn.ModuleDict({"prompt_encoder": copy.deepcopy(model.sam.prompt_encoder),
                                  "mask_decoder": copy.deepcopy(model.sam.mask_decoder)})
    if start is not None:
        module.load_state_dict(start)
    return module.requires_grad_(True)


@dataclass
class PreparedGroup:
    """One slice size's share of a batch, ready for the decoder: what the fast path makes ahead."""

    cache_id: int
    samples: list  # (row, organ), grouped by row
    targets: torch.Tensor  # bool (n, H, W) masks on the model's device
    points: object  # prompt-encoder inputs from utils.inference.decoding.prompt_inputs
    boxes: object
    embeddings: torch.Tensor  # float32 (n, 256, 64, 64) on the model's device
    size: tuple  # (H, W) of the group's slices


def make_prepare(caches: Sequence, prompt_type: str, seed: int, resident: dict | None = None,
                 box_jitter: int = DEFAULT_BOX_JITTER_PX) -> Callable[[list, int], list[PreparedGroup]]:
    """prepare(batch, epoch) -> [PreparedGroup]: labels, prompts and embeddings of a batch of
    (cache id, row, organ) samples, grouped by slice (each slice's label and embedding read once).
    No autograd: safe to run in a background thread. ``caches``: embedding caches indexed by cache id;
    ``resident``: {cache id: ResidentEmbeddings} to gather from instead of the caches."""
    def prepare(batch, epoch):
        groups: dict = {}
        for cache_id, row, organ in slice_grouped(batch):
            groups.setdefault((cache_id, caches[cache_id].index.shape(row)), []).append((row, organ))
        out = []
        for (cache_id, size), samples in groups.items():
            cache = caches[cache_id]
            masks, prompts, sizes = build_batch(cache, samples, prompt_type, seed, epoch, box_jitter)
            points, boxes = prompt_inputs(cache.model, prompts, sizes)
            embeddings = (resident[cache_id].gather([r for r, _ in samples]) if resident
                          else gather_embeddings(cache, samples))
            out.append(PreparedGroup(cache_id, samples, masks.to(embeddings.device), points, boxes, embeddings, size))
        return out

    return prepare


def make_step(caches: Sequence, prompt_type: str, seed: int, trainable: torch.nn.ModuleDict, precision: str,
              paired: Callable | None = None, resident: dict | None = None,
              box_jitter: int = DEFAULT_BOX_JITTER_PX) -> Callable[[list, int], StepResult]:
    """step(batch, epoch) -> StepResult: forward + Dice loss for a batch of (cache id, row, organ) samples,
    or for what ``step.prepare`` (:func:`make_prepare`) made of one ahead.

    ``trainable``: :func:`trainable_decoder`'s module; ``precision``: the training forward's autocast
    (``--train-precision``); ``paired``: a compiled :func:`utils.inference.decoding.predict_masks_paired`.
    The loss is MONAI's DiceLoss (sigmoid) at the slice's resolution, averaged over the batch's samples
    (a group of each slice size weighs by its sample count); the metric is the summed training Dice."""
    from monai.losses import DiceLoss  # here, not at the top: importing MONAI costs every user of utils.train

    loss_fn = DiceLoss(sigmoid=True)
    prepare = make_prepare(caches, prompt_type, seed, resident, box_jitter)
    paired = paired or predict_masks_paired

    def step(batch, epoch):
        groups = batch if batch and isinstance(batch[0], PreparedGroup) else prepare(batch, epoch)
        n = sum(len(g.samples) for g in groups)
        loss = 0.0
        dice_sum = 0.0
        for g in groups:
            model = caches[g.cache_id].model
            with autocast(model.device, precision):
                low_res, _ = decode_inputs(g.embeddings, g.points, g.boxes, False, trainable["prompt_encoder"],
                                           trainable["mask_decoder"], paired=paired)
            logits = model.postprocess(low_res.float(), g.size)[:, 0].flatten(1)
            targets = g.targets.flatten(1).float()
            loss = loss + loss_fn(logits[:, None], targets[:, None]) * (len(g.samples) / n)
            dice_sum += float(batch_dice(logits.detach() > 0, targets > 0.5).sum())
        return StepResult(loss=loss, metric_sum=dice_sum, count=n)

    step.prepare = prepare
    return step


def largest_decoder_batch(caches: Sequence, samples: Sequence[tuple], prompt_type: str, seed: int, precision: str,
                          batch_size: int, resident: dict | None = None) -> int:
    """The largest batch in batch_size, 2*batch_size ... <= 1024 whose Task 2 step (forward + backward, on a
    throwaway copy of the decoder) fits in GPU memory (:func:`utils.train.fastpath.largest_batch`).
    ``samples``: (cache id, row, organ), repeated as needed to fill a batch; CUDA only."""
    probe = trainable_decoder(caches[0].model)
    step = make_step(caches, prompt_type, seed, probe, precision, resident=resident)

    def one_step(batch: int) -> None:
        pool = (list(samples) * (1 + batch // max(len(samples), 1)))[:batch]
        step(pool, 0).loss.backward()
        probe.zero_grad(set_to_none=True)

    return largest_batch(cuda_step_fits(one_step), batch_size)
