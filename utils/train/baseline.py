"""Training the supervised 2-D baselines (U-Net / ResU-Net, :mod:`utils.models.unet`) on the slice store.

Training samples are whole slices (:class:`SliceRef`), not (slice, organ) pairs: one forward pass
segments all 13 organs. :func:`make_baseline_step` is the step :func:`utils.train.loop.run_training` runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from utils.core.organs import NUM_ORGANS
from utils.data.augmentation import AugmentSpec, augment_view
from utils.data.slice_store import SliceStore
from utils.eval.dice import batch_dice
from utils.models.unet import NUM_CLASSES, forward_logits, network_device
from utils.train.loop import StepResult


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class SliceRef:
    """One training sample: store row ``index`` as stored (``view`` 0) or its augmented view ``view`` >= 1.

    The same (store index, view) pair as an augmented embedding cache's rows: view v of slice i is
    ``augment_view(image, label, spec, i, v)``, deterministic for a given :class:`AugmentSpec`.
    """

    index: int
    view: int = 0


def training_slices(store: SliceStore, augment: AugmentSpec | None = None, split: str = "train") -> list[SliceRef]:
    """Every ``split`` slice as stored, then (with ``augment``) its views 1..augment.views, in store order."""
    rows = store.indices(split)
    refs = [SliceRef(i) for i in rows]
    if augment is not None:
        refs += [SliceRef(i, v) for i in rows for v in range(1, augment.views + 1)]
    return refs


class SliceLoader:
    """Loads a batch of :class:`SliceRef` as (image float32 (N, H, W) in [0, 1], label int64 (N, H, W)).

    Augmented views are made with ``augment_view`` (MONAI: flip, rotation, intensity shift; the same
    transform as Task 2's augmented cache) and materialised on first use: kept in memory as float16
    image + uint8 label (3 bytes a pixel; 0.8 MB per 512 x 512 view) so later epochs reuse them.
    ``keep_views=False`` recomputes them each time instead (same result: a view is deterministic).

    Slices of different sizes in one batch are padded to the largest (bottom/right; image 0, label
    background); a store of one slice size, like BTCV's 512 x 512, is never padded.
    """

    def __init__(self, store: SliceStore, augment: AugmentSpec | None = None, keep_views: bool = True):
        self.store = store
        self.augment = augment
        self.keep_views = keep_views
        self._views: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def load(self, ref: SliceRef) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 (H, W) in [0, 1], label uint8 (H, W)) of one reference."""
        if ref.view == 0:
            return self.store.load(ref.index)
        if self.augment is None:
            raise ValueError(f"{ref} is an augmented view, but this loader has no AugmentSpec")
        if ref.view > self.augment.views:
            raise ValueError(f"{ref}: the AugmentSpec makes views 1..{self.augment.views}")
        key = (ref.index, ref.view)
        if key in self._views:
            image, label = self._views[key]
            return image.astype(np.float32), label
        image, label = augment_view(*self.store.load(ref.index), self.augment, ref.index, ref.view)
        if self.keep_views:
            self._views[key] = (image.astype(np.float16), label)
            image = self._views[key][0].astype(np.float32)  # what later epochs will read
        return image, label

    def __call__(self, refs: Sequence[SliceRef]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.load(r) for r in refs]
        h = max(p[0].shape[0] for p in pairs)
        w = max(p[0].shape[1] for p in pairs)
        images = np.zeros((len(pairs), h, w), np.float32)
        labels = np.zeros((len(pairs), h, w), np.int64)
        for k, (image, label) in enumerate(pairs):
            images[k, : image.shape[0], : image.shape[1]] = image
            labels[k, : label.shape[0], : label.shape[1]] = label
        return torch.from_numpy(images), torch.from_numpy(labels)


def default_loss() -> torch.nn.Module:
    """``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)``: soft Dice over all 14 channels
    (background included, per slice, MONAI's default smoothing) plus cross-entropy, weighted 1:1."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


def foreground_dice(label_map: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """float64 (N,) mean foreground Dice per slice, from int (N, H, W) predicted and true label maps.

    Per slice: the mean of ``batch_dice`` over the organs in the ground truth (the organs Task 1 would
    sample on it). A slice with no organ in its ground truth (possible for a rotated view) scores 1 if
    nothing is predicted and 0 otherwise.
    """
    organs = torch.arange(1, NUM_CLASSES, device=target.device)
    pred = label_map[:, None] == organs[None, :, None, None]  # (N, 13, H, W)
    true = target[:, None] == organs[None, :, None, None]
    n = target.shape[0]
    dice = batch_dice(pred.flatten(0, 1), true.flatten(0, 1)).view(n, NUM_ORGANS)
    present = true.flatten(2).any(2)
    counts = present.sum(1)
    per_slice = (dice * present).sum(1) / counts.clamp_min(1)
    empty = batch_dice(label_map > 0, target > 0)
    return torch.where(counts > 0, per_slice, empty).cpu()


def make_baseline_step(
    net: torch.nn.Module,
    batch_loader: Callable[[Sequence[SliceRef]], tuple[torch.Tensor, torch.Tensor]],
    loss: torch.nn.Module | None = None,
    precision: str = "fp32",
) -> Callable[[Sequence[SliceRef], int], StepResult]:
    """A ``step(batch, epoch) -> StepResult`` for ``utils.train.loop.run_training`` over :class:`SliceRef` samples.

    batch_loader: refs -> (image float32 (N, H, W) in [0, 1], label int64 (N, H, W)), e.g. a
        :class:`SliceLoader`. Tensors go to ``net``'s device.
    loss: called as ``loss(logits (N, 14, H, W), label (N, 1, H, W))``; default :func:`default_loss`.
    Returns StepResult(loss: the batch's scalar loss, metric_sum: the sum over slices of each slice's
    mean foreground Dice (:func:`foreground_dice`), count: slices in the batch). The loop weights the
    loss by ``count``, so its epoch loss and metric are per-slice means. ``epoch`` is unused: views
    are materialised, not redrawn per epoch. ``precision``: autocast of the network's forward pass (the
    training fast path, utils.train.fastpath); the loss is computed on float32 logits.
    """
    from utils.core.precision import autocast

    loss_fn = default_loss() if loss is None else loss

    def step(batch: Sequence[SliceRef], epoch: int) -> StepResult:
        images, labels = batch_loader(batch)
        device = network_device(net)
        labels = labels.to(device)
        with autocast(device, precision):
            logits = forward_logits(net, images)
        logits = logits.float()
        value = loss_fn(logits, labels[:, None])
        with torch.no_grad():
            dice = foreground_dice(logits.argmax(1), labels)
        return StepResult(loss=value, metric_sum=float(dice.sum()), count=len(batch))

    return step
