"""Task 2's augmentation (the study's: random flip, random rotation, random intensity shift), applied
with MONAI to a slice and its label together, and deterministic per (seed, slice, view).

The image encoder is frozen, so augmented views are *materialised*: each view is made once, encoded
once into an augmented embedding cache (:mod:`utils.embeddings.cache`), and then read like any slice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentSpec:
    """Materialised augmentation: ``views`` transformed copies of every training slice."""

    views: int
    seed: int = 0
    flip_prob: float = 0.5
    rotate_degrees: float = 15.0
    intensity_shift: float = 0.1  # in window units ([0, 1] = the whole HU window)

    def transform(self):
        """The MONAI transform applied to {"image": (1, H, W) float, "label": (1, H, W)}."""
        from monai.transforms import Compose, RandFlipd, RandRotated, RandShiftIntensityd

        return Compose(
            [
                RandFlipd(keys=["image", "label"], prob=self.flip_prob, spatial_axis=1),
                RandRotated(
                    keys=["image", "label"], range_x=math.radians(self.rotate_degrees), prob=1.0,
                    mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True,
                ),
                RandShiftIntensityd(keys=["image"], offsets=self.intensity_shift, prob=1.0),
            ]
        )


def augment_view(image: np.ndarray, label: np.ndarray, spec: AugmentSpec, store_index: int, view: int):
    """The deterministic augmented view ``view`` (1-based) of a slice: (image float32 in [0, 1], label uint8)."""
    transform = spec.transform()
    transform.set_random_state(seed=int(np.random.default_rng([spec.seed, store_index, view]).integers(2**31)))
    out = transform({"image": image[None].astype(np.float32), "label": label[None].astype(np.float32)})
    aug_image = np.clip(np.asarray(out["image"][0], dtype=np.float32), 0.0, 1.0)
    aug_label = np.asarray(out["label"][0]).round().astype(np.uint8)
    return aug_image, aug_label
