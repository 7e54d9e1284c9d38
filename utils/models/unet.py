"""Supervised 2-D baselines for Table 3: MONAI's U-Net and ResU-Net on the slice store, scored on the
same (slice, organ) samples and with the same Dice code as SAM.

The networks are ``monai.networks.nets.UNet`` (2-D, 1 input channel, 14 output channels); nothing here
is a hand-written network. Conventions, shared with the rest of the suite:

- Images are store slices: float32 (H, W) in [0, 1] (the HU window), display orientation (row 0
  anterior, column 0 patient's right). Labels are uint8 (H, W) BTCV labels, 0 = background.
- Network input is float32 (N, 1, H', W'); channel 0 is the windowed CT intensity. Output logits are
  float32 (N, 14, H, W); channel 0 is background, channel ``k`` (1..13) is BTCV organ label ``k``
  (``utils.core.organs.ORGANS[k - 1]``).
- Padding rule: the U-Net halves the image ``len(strides)`` times, so H' and W' must be multiples of
  ``prod(strides)`` (``2**depth``). :func:`pad_images` pads on the bottom and right only, with 0 (the
  bottom of the HU window: air), so a pixel keeps its (x, y) = (column, row) coordinates; logits are
  cropped back to (H, W) before anything reads them. A 512 x 512 BTCV slice needs no padding.
- Boxes are XYXY with inclusive pixel indices, as ``utils.inference.prompts.bound_box`` returns them.
- Library code never picks a device: it follows the network's parameters.

Training samples are whole slices (:class:`SliceRef`), not (slice, organ) pairs: one forward pass
segments all 13 organs. Evaluation samples are Task 1's (store row, organ) pairs.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

from utils.core.organs import NUM_ORGANS

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


def network_device(net: torch.nn.Module) -> torch.device:
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
    logits = net(x.to(network_device(net)))
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

    box: XYXY (x0, y0, x1, y1) with inclusive pixel indices (``utils.inference.prompts.bound_box`` of the organ's
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
