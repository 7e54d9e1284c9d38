"""Supervised 2-D baselines for Table 3: MONAI's U-Net and ResU-Net on the slice store, scored on the
same (slice, organ) samples and with the same Dice code as SAM.

The networks are ``monai.networks.nets.UNet`` (2-D, 1 input channel, 14 output channels); nothing here
is a hand-written network. Conventions, shared with the rest of the suite:

- Images are store slices: float32 (H, W) in [0, 1] (the HU window), display orientation (row 0
  anterior, column 0 patient's right). Labels are uint8 (H, W) BTCV labels, 0 = background.
- Network input is float32 (N, 1, H', W'); channel 0 is the windowed CT intensity. Output logits are
  float32 (N, 14, H, W); channel 0 is background, channel ``k`` (1..13) is BTCV organ label ``k``
  (``utils.organs.ORGANS[k - 1]``).
- Padding rule: the U-Net halves the image ``len(strides)`` times, so H' and W' must be multiples of
  ``prod(strides)`` (``2**depth``). :func:`pad_images` pads on the bottom and right only, with 0 (the
  bottom of the HU window: air), so a pixel keeps its (x, y) = (column, row) coordinates; logits are
  cropped back to (H, W) before anything reads them. A 512 x 512 BTCV slice needs no padding.
- Boxes are XYXY with inclusive pixel indices, as ``utils.prompts.bound_box`` returns them.
- Library code never picks a device: it follows the network's parameters.

Training samples are whole slices (:class:`SliceRef`), not (slice, organ) pairs: one forward pass
segments all 13 organs. Evaluation samples are Task 1's (store row, organ) pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch

from .augmentation import AugmentSpec, augment_view
from .metrics import batch_dice, summarise_dice
from .organs import NUM_ORGANS
from .prompts import bound_box
from .slice_store import SliceStore
from .training import StepResult

NUM_CLASSES = NUM_ORGANS + 1  # background + 13 organs
ARCHS = ("unet", "resunet")
# Residual units per encoder/decoder block: 0 is MONAI's plain U-Net, 2 its residual "ResU-Net"
# (the setting of MONAI's BTCV/Spleen UNet tutorials).
RES_UNITS = {"unet": 0, "resunet": 2}
# Channel widths per resolution level. QUICK fits the CPU quick preset (3 poolings): measured on this
# 2-core machine, one training step on 160 x 160 phantom slices, batch 8, costs 0.019 s a slice for
# the U-Net (166 k parameters) and 0.034 s for the ResU-Net (407 k); (8, 16, 32, 64) was only ~20 %
# faster. PAPER is MONAI's tutorial U-Net (4 poolings, as in its spleen/BTCV UNet examples), for a GPU.
QUICK_CHANNELS = (16, 32, 64, 128)
PAPER_CHANNELS = (16, 32, 64, 128, 256)
# The two scored rows of Table 3 per architecture: the plain prediction, and the prediction kept only
# inside the organ's ground-truth box (the oracle box SAM's bound_box prompt gets).
EVAL_ROWS = {"none": False, "bound_box_crop": True}

Arch = Literal["unet", "resunet"]
ImageBatch = np.ndarray | torch.Tensor | Sequence[np.ndarray]


# ------------------------------------------------------------------------------------------ network
def build_baseline(
    arch: Arch,
    channels: Sequence[int] = QUICK_CHANNELS,
    strides: Sequence[int] | None = None,
    dropout: float = 0.0,
    norm: str = "INSTANCE",
) -> torch.nn.Module:
    """A 2-D ``monai.networks.nets.UNet``: 1 input channel (CT in [0, 1]), 14 output logits.

    arch: "unet" (``num_res_units=0``) or "resunet" (``num_res_units=2``).
    channels: feature widths per resolution level, finest first (default ``QUICK_CHANNELS``
        = (16, 32, 64, 128); ``PAPER_CHANNELS`` for the GPU preset).
    strides: downsampling per level transition, ``len(channels) - 1`` of them (default all 2).
        The input must be a multiple of their product; :func:`forward_logits` pads to it.
    dropout, norm: passed to MONAI (instance norm keeps no running statistics, so train and eval
        modes compute the same thing).
    The model is on the CPU; move it with ``.to(device)``.
    """
    if arch not in RES_UNITS:
        raise ValueError(f"unknown baseline architecture {arch!r}; choose from {', '.join(ARCHS)}")
    channels = tuple(int(c) for c in channels)
    if len(channels) < 2:
        raise ValueError(f"a U-Net needs at least two channel levels, got {channels}")
    strides = tuple(int(s) for s in strides) if strides is not None else (2,) * (len(channels) - 1)
    if len(strides) != len(channels) - 1:
        raise ValueError(f"need len(channels) - 1 = {len(channels) - 1} strides, got {strides}")
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1, out_channels=NUM_CLASSES, channels=channels, strides=strides,
                num_res_units=RES_UNITS[arch], dropout=dropout, norm=norm)


def size_multiple(net: torch.nn.Module) -> int:
    """The multiple H and W must have for ``net``: the product of a MONAI UNet's strides (2**depth)."""
    strides = getattr(net, "strides", None)
    if strides is None:
        raise TypeError(f"{type(net).__name__} has no 'strides'; expected a monai.networks.nets.UNet")
    return int(math.prod(int(s) for s in strides))


def _device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


# ------------------------------------------------------------------------------------- input / output
def _as_image_tensor(images: ImageBatch) -> torch.Tensor:
    """float32 (N, H, W) on the CPU from an (N, H, W) array/tensor or a sequence of (H, W) arrays of one size."""
    if isinstance(images, torch.Tensor):
        x = images.detach().float()
    elif isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    else:
        sizes = {np.shape(im) for im in images}
        if len(sizes) != 1:
            raise ValueError(f"a batch of slices must share one size, got sizes {sorted(sizes)}")
        x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]))
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected slices shaped (N, H, W) (or (N, 1, H, W)), got {tuple(x.shape)}")
    return x


def pad_images(images: ImageBatch, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Network input for N slices of one size: (float32 (N, 1, H', W'), original (H, W)).

    H' and W' are H and W rounded up to ``multiple``; the added rows and columns are at the bottom
    and right and hold 0 (the bottom of the HU window), so pixel coordinates do not move.
    """
    x = _as_image_tensor(images)
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), value=0.0)
    return x[:, None], (int(h), int(w))


def forward_logits(net: torch.nn.Module, images: ImageBatch) -> torch.Tensor:
    """float32 (N, 14, H, W) logits on ``net``'s device for N slices of one size (H, W), any size.

    Pads to the network's multiple (see :func:`pad_images`), runs it, and crops back to (H, W).
    Gradients flow (use under ``torch.inference_mode()`` for prediction).
    """
    x, (h, w) = pad_images(images, size_multiple(net))
    logits = net(x.to(_device(net)))
    return logits[:, :, :h, :w]


@torch.inference_mode()
def predict_label_maps(net: torch.nn.Module, images: ImageBatch) -> torch.Tensor:
    """int64 (N, H, W) CPU label maps: argmax over the 14 classes (0 background, k = organ label k).

    ``images``: float (N, H, W) in [0, 1] (array, tensor, or sequence of (H, W) arrays of one size).
    Runs ``net`` in eval mode and restores its previous mode afterwards.
    """
    was_training = net.training
    net.eval()
    try:
        return forward_logits(net, images).argmax(1).cpu()
    finally:
        net.train(was_training)


def organ_masks_from_prediction(label_map: np.ndarray | torch.Tensor, organ: int) -> np.ndarray | torch.Tensor:
    """bool mask(s) of organ label ``organ`` (1..13) from a label map (H, W) or (N, H, W), same type."""
    if not 1 <= int(organ) <= NUM_ORGANS:
        raise ValueError(f"organ labels are 1..{NUM_ORGANS}, got {organ}")
    return label_map == int(organ)


def restrict_to_box(mask: np.ndarray | torch.Tensor, box: Sequence[float] | np.ndarray) -> np.ndarray | torch.Tensor:
    """``mask`` (bool (H, W)) kept only inside ``box``, zero outside; same type as ``mask``.

    box: XYXY (x0, y0, x1, y1) with inclusive pixel indices (``utils.prompts.bound_box`` of the organ's
    ground-truth mask: the oracle box SAM's bound_box prompt gets). Pixel (row r, column c) is inside
    when x0 <= c <= x1 and y0 <= r <= y1, so fractional boxes keep only pixels they fully reach.
    """
    if mask.ndim != 2:
        raise ValueError(f"restrict_to_box takes one (H, W) mask, got shape {tuple(mask.shape)}")
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1))
    h, w = mask.shape
    c0, r0 = max(math.ceil(x0), 0), max(math.ceil(y0), 0)
    c1, r1 = min(math.floor(x1), w - 1), min(math.floor(y1), h - 1)
    if isinstance(mask, torch.Tensor):
        out = torch.zeros_like(mask, dtype=torch.bool)
    else:
        out = np.zeros(mask.shape, dtype=bool)
    if c1 >= c0 and r1 >= r0:
        out[r0 : r1 + 1, c0 : c1 + 1] = mask[r0 : r1 + 1, c0 : c1 + 1] != 0
    return out


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
    """A ``step(batch, epoch) -> StepResult`` for ``utils.training.run_training`` over :class:`SliceRef` samples.

    batch_loader: refs -> (image float32 (N, H, W) in [0, 1], label int64 (N, H, W)), e.g. a
        :class:`SliceLoader`. Tensors go to ``net``'s device.
    loss: called as ``loss(logits (N, 14, H, W), label (N, 1, H, W))``; default :func:`default_loss`.
    Returns StepResult(loss: the batch's scalar loss, metric_sum: the sum over slices of each slice's
    mean foreground Dice (:func:`foreground_dice`), count: slices in the batch). The loop weights the
    loss by ``count``, so its epoch loss and metric are per-slice means. ``epoch`` is unused: views
    are materialised, not redrawn per epoch. ``precision``: autocast of the network's forward pass (the
    training fast path, utils.fastpath); the loss is computed on float32 logits.
    """
    from .precision import autocast

    loss_fn = default_loss() if loss is None else loss

    def step(batch: Sequence[SliceRef], epoch: int) -> StepResult:
        images, labels = batch_loader(batch)
        device = _device(net)
        labels = labels.to(device)
        with autocast(device, precision):
            logits = forward_logits(net, images)
        logits = logits.float()
        value = loss_fn(logits, labels[:, None])
        with torch.no_grad():
            dice = foreground_dice(logits.argmax(1), labels)
        return StepResult(loss=value, metric_sum=float(dice.sum()), count=len(batch))

    return step


# ---------------------------------------------------------------------------------------- evaluation
def _chunks(samples: Sequence[tuple[int, int]], rows_per_chunk: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive runs of samples touching at most ``rows_per_chunk`` distinct store rows."""
    chunk: list[tuple[int, int]] = []
    rows: set[int] = set()
    for sample in samples:
        row = int(sample[0])
        if row not in rows and len(rows) == rows_per_chunk:
            yield chunk
            chunk, rows = [], set()
        rows.add(row)
        chunk.append((row, int(sample[1])))
    if chunk:
        yield chunk


def _predict_rows(net: torch.nn.Module, store: SliceStore, rows: Iterable[int]) -> tuple[dict, dict]:
    """({row: uint8 (H, W) predicted label map}, {row: uint8 (H, W) true label}); one pass per slice size."""
    images: dict[int, np.ndarray] = {}
    labels: dict[int, np.ndarray] = {}
    for row in rows:
        images[row], labels[row] = store.load(row)
    by_size: dict[tuple[int, int], list[int]] = {}
    for row, image in images.items():
        by_size.setdefault(image.shape, []).append(row)
    predictions: dict[int, np.ndarray] = {}
    for group in by_size.values():
        maps = predict_label_maps(net, [images[r] for r in group]).numpy().astype(np.uint8)
        predictions.update(zip(group, maps))
    return predictions, labels


def evaluate_baseline_rows(
    net: torch.nn.Module,
    store: SliceStore,
    samples: Sequence[tuple[int, int]],
    rows: dict[str, bool] = EVAL_ROWS,
    batch_size: int = 8,
) -> dict[str, tuple[dict, list[dict]]]:
    """Several Table 3 rows from one prediction pass: {row name: (summary, records)}.

    rows: {name: restrict_to_boxes}, default ``EVAL_ROWS`` = {"none": False, "bound_box_crop": True}.
    See :func:`evaluate_baseline` for samples, summary and records.
    """
    records: dict[str, list[dict]] = {name: [] for name in rows}
    for chunk in _chunks(samples, batch_size):
        predictions, labels = _predict_rows(net, store, dict.fromkeys(r for r, _ in chunk))
        for name, restrict in rows.items():
            preds, trues = [], []
            for row, organ in chunk:
                true = labels[row] == organ
                pred = predictions[row] == organ
                if restrict:
                    if not true.any():
                        raise ValueError(f"sample (row {row}, organ {organ}): the organ is not on this slice, so it "
                                         "has no ground-truth box; pass samples of present organs (store.samples)")
                    pred = restrict_to_box(pred, bound_box(true))
                preds.append(pred)
                trues.append(true)
            for (row, organ), d in zip(chunk, _dice_by_size(preds, trues)):
                record = store.records[row]
                records[name].append({"case": record.case_id, "z": record.z, "row": row, "organ": organ, "dice": d})
    return {name: (summarise_dice((r["organ"], r["dice"]) for r in recs), recs) for name, recs in records.items()}


def _dice_by_size(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray]) -> list[float]:
    """``batch_dice`` of bool (H, W) mask pairs, one call per mask size, in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, pred in enumerate(preds):
        groups.setdefault(pred.shape, []).append(k)
    out = [0.0] * len(preds)
    for idx in groups.values():
        dice = batch_dice(torch.from_numpy(np.stack([preds[k] for k in idx])),
                          torch.from_numpy(np.stack([trues[k] for k in idx])))
        for k, d in zip(idx, dice.tolist()):
            out[k] = d
    return out


def evaluate_baseline(
    net: torch.nn.Module,
    store: SliceStore,
    samples: Sequence[tuple[int, int]],
    restrict_to_boxes: bool,
    batch_size: int = 8,
) -> tuple[dict, list[dict]]:
    """Dice of every (store row, organ) sample of ``samples``, in their order, with the suite's Dice.

    samples: (store row, organ label) pairs, e.g. Task 1's validation samples ``store.samples("val")``
        (with Task 1's base cache, cache row = store row). Each slice is predicted once per run of
        consecutive samples on it (``batch_size`` slices per forward pass).
    restrict_to_boxes: keep each organ's prediction only inside the tight box of its ground-truth mask
        (:func:`restrict_to_box` with ``utils.prompts.bound_box``), the like-for-like row beside SAM's
        box prompt; False scores the plain argmax prediction.
    Returns (summary {"mDice", "organs": {name: {"dice", "n"}}} from ``summarise_dice``, records
    [{"case", "z", "row", "organ", "dice"}] one per sample, in sample order: Task 1's record shape).
    """
    name = "bound_box_crop" if restrict_to_boxes else "none"
    return evaluate_baseline_rows(net, store, samples, {name: restrict_to_boxes}, batch_size)[name]
