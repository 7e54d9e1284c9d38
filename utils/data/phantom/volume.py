"""One phantom volume: the layers drawn in order (tissues, then organs), then the scanner (partial-volume
blur and noise) and the int16 HU image."""
from __future__ import annotations

import cv2
import numpy as np

from utils.data.phantom.anatomy import HU_MAX, HU_MIN, Anatomy, PhantomConfig, phantom_affine
from utils.data.phantom.organs import draw_organs
from utils.data.phantom.tissues import draw_body, draw_spine_and_ribs, draw_viscera


def _generate(case_id: int, config: PhantomConfig) -> Anatomy:
    A = Anatomy(case_id, config)
    draw_body(A)
    draw_viscera(A)
    draw_spine_and_ribs(A)
    draw_organs(A)
    _scan(A)
    return A


def _scan(A: Anatomy) -> None:
    """Air outside the body (and the table), partial-volume blur in-plane, then scanner noise; int16 HU."""
    rng = A.rng
    outside = ~A.body & ~A.table
    A.image[outside] = -1000.0
    img = cv2.GaussianBlur(A.image, (0, 0), sigmaX=rng.uniform(0.7, 1.0))
    img += rng.normal(0, rng.uniform(15, 25), A.shape).astype(np.float32)
    A.image = np.clip(np.rint(img), HU_MIN, HU_MAX).astype(np.int16)


def make_volume(case_id: int, config: PhantomConfig = PhantomConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom volume, deterministic in (config.seed, case_id).

    Returns ``(image, label, affine)``:

    * image: int16 CT numbers (HU) of shape ``config.shape`` = (x, y, z), clipped to [-1024, 3071];
    * label: uint8 BTCV labels 0..13, same shape, never blurred, organs do not overlap;
    * affine: (4, 4) float64 voxel -> world mm, RAS+ (axis 0 toward the patient's right, axis 1
      anterior, axis 2 superior): ``diag(spacing)`` with the volume centred on the origin.
    """
    A = _generate(int(case_id), config)
    return A.image, A.label, phantom_affine(config)
