"""Tiny hand-made NIfTI volumes for data-layer tests (independent of the phantom generator)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def blob_volume(shape=(48, 40, 5), seed=0, organs=(6, 1, 8, 12)):
    """(image int16 HU, label uint8) in RAS voxel order with a few ellipsoid 'organs' on inner slices.

    The first and last slices hold no organ, so the slice filter has something to drop.
    """
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[0 : shape[0], 0 : shape[1]]
    label = np.zeros(shape, np.uint8)
    image = np.full(shape, -100, np.int16)
    for k, organ in enumerate(organs):
        cx = shape[0] * (0.25 + 0.5 * ((k * 0.37) % 1))
        cy = shape[1] * (0.3 + 0.4 * ((k * 0.61) % 1))
        r = max(2.0, min(shape[:2]) * (0.18 if organ == 6 else 0.08))
        for z in range(1, shape[2] - 1):
            if organ == 12 and z % 2 == 0:
                continue  # an organ missing from some slices
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
            plane = label[:, :, z]
            plane[inside & (plane == 0)] = organ
    image[label > 0] = 60 + 10 * label[label > 0].astype(np.int16)
    image = (image + rng.normal(0, 5, shape)).astype(np.int16)
    return image, label


def ras_affine(spacing=(1.5, 1.5, 5.0)):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-30.0, -25.0, 10.0]
    return affine


def write_pair(img_path: Path, label_path: Path, image, label, affine, label_affine=None):
    img_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), img_path)
    nib.save(nib.Nifti1Image(label, affine if label_affine is None else label_affine), label_path)


def write_rawdata(root: Path, case_ids=(1, 2, 35), shape=(48, 40, 5)):
    """A BTCV RawData layout with one small volume per case id; returns root."""
    for i, case in enumerate(case_ids):
        image, label = blob_volume(shape, seed=i)
        write_pair(root / "RawData/Training/img" / f"img{case:04d}.nii.gz",
                   root / "RawData/Training/label" / f"label{case:04d}.nii.gz", image, label, ras_affine())
    return root


def write_tiny_phantom(root: Path, case_ids=(1, 2, 3, 35), shape=(96, 96, 2)):
    """A few phantom volumes (utils.data.phantom) in the RawData layout: case 35 makes a validation split."""
    from utils.data.phantom import PhantomConfig, make_volume

    config = PhantomConfig(shape=shape, spacing=(4.0, 4.0, 30.0), n_volumes=30)
    for case in case_ids:
        image, label, affine = make_volume(case, config)
        write_pair(root / "RawData/Training/img" / f"img{case:04d}.nii.gz",
                   root / "RawData/Training/label" / f"label{case:04d}.nii.gz", image, label, affine)
    return root
