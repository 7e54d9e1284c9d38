"""Predicted label maps back onto the source CT's own voxel grid, as NIfTI files that open over the CT.

Three layouts of the same volume appear in the suite:

- **source**: the NIfTI file's own voxel order, (i, j, k) as stored, with the header's affine
  (``nibabel.load(path).affine``, voxel -> world mm, RAS+ world as nibabel defines it).
- **RAS**: (X, Y, Z) after MONAI ``Orientationd(axcodes="RAS", labels=(("L","R"),("P","A"),("I","S")))``
  (what ``utils.data.dataset.load_volume`` returns): increasing X goes to the patient's Right, Y to
  Anterior, Z to Superior. Only flips and axis permutations
  are applied (nibabel ``io_orientation`` picks the nearest axes for an oblique affine); there is no
  resampling, so every layout holds the same voxels.
- **display**: the slice store's stack (Z, H, W), slice z = ``volume_to_display(ras[:, :, z])``:
  row 0 anterior, column 0 the patient's right, Z inferior -> superior as in RAS.

``write_label_nifti`` takes a label map in the RAS or display layout and writes it in the source
layout with the source header (affine, qform/sform and their codes, pixdim, units), as uint8.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from utils.core.io import atomic_path
from utils.core.organs import NUM_ORGANS, organ_name
from utils.data.slice_store import volume_to_display

# The target orientation of utils.data.dataset.load_volume, in nibabel's orientation-array form.
_RAS = axcodes2ornt("RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))


def _as_affine(source_affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(source_affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"expected a 4x4 voxel-to-world affine, got shape {affine.shape}")
    return affine


def _to_ras_ornt(source_affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform source voxel axes -> RAS axes (what MONAI Orientationd applies)."""
    return ornt_transform(io_orientation(_as_affine(source_affine)), _RAS)


def ras_shape(source_shape: Sequence[int], source_affine: np.ndarray) -> tuple[int, int, int]:
    """(X, Y, Z) shape of a source-grid volume of ``source_shape`` once reoriented to RAS."""
    order = np.argsort(_to_ras_ornt(source_affine)[:, 0])
    return tuple(int(source_shape[int(i)]) for i in order)  # type: ignore[return-value]


def source_to_ras(volume: np.ndarray, source_affine: np.ndarray) -> np.ndarray:
    """Array in the source file's voxel order (i, j, k) -> RAS (X, Y, Z), as MONAI's Orientationd does.

    Only flips and transposes (nibabel ``apply_orientation``); dtype kept. Returns a view where possible.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume in source voxel order, got shape {volume.shape}")
    return apply_orientation(volume, _to_ras_ornt(source_affine))


def ras_to_source(ras: np.ndarray, source_affine: np.ndarray) -> np.ndarray:
    """RAS (X, Y, Z) array -> the source file's voxel order (i, j, k): the inverse of ``source_to_ras``.

    ``source_affine`` is the source NIfTI's affine (``nibabel.load(path).affine``). Dtype kept.
    """
    ras = np.asarray(ras)
    if ras.ndim != 3:
        raise ValueError(f"expected a 3-D RAS volume (X, Y, Z), got shape {ras.shape}")
    return apply_orientation(ras, ornt_transform(_RAS, io_orientation(_as_affine(source_affine))))


def display_to_ras(slices: np.ndarray) -> np.ndarray:
    """Stack of display slices (Z, H, W) -> RAS volume (X, Y, Z) = (W, H, Z).

    Inverse of ``ras_to_display``: display[z, h, w] = ras[W - 1 - w, H - 1 - h, z] (row 0 anterior,
    column 0 the patient's right). Dtype kept; the result is contiguous.
    """
    slices = np.asarray(slices)
    if slices.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) stack of display slices, got shape {slices.shape}")
    return np.ascontiguousarray(np.flip(slices.transpose(2, 1, 0), (0, 1)))


def ras_to_display(ras: np.ndarray) -> np.ndarray:
    """RAS volume (X, Y, Z) -> (Z, H, W) stack of the slice store's display slices (``volume_to_display``)."""
    ras = np.asarray(ras)
    if ras.ndim != 3:
        raise ValueError(f"expected a 3-D RAS volume (X, Y, Z), got shape {ras.shape}")
    return np.stack([volume_to_display(ras[:, :, z]) for z in range(ras.shape[2])])


def merge_organ_logits(logits: Mapping[int, np.ndarray], threshold: float = 0.0,
                       shape: Sequence[int] | None = None) -> np.ndarray:
    """One uint8 label map from per-organ score volumes: each voxel gets the organ of highest score.

    logits: BTCV label (1..13) -> float array, all of one shape (any layout: display (Z, H, W), RAS, ...).
        Mask logits (SAM's, threshold 0) or probabilities (pass ``threshold=0.5``); ``-inf`` marks
        slices an organ never visited. Organs absent from the mapping are background everywhere.
    threshold: a voxel is background where every organ's score is <= threshold (NaN never wins).
    shape: the output shape when ``logits`` is empty (then all background).
    Ties between organs go to the lower label. Works organ by organ: memory is two volumes, not 13.
    """
    labels = sorted(int(k) for k in logits)
    for label in labels:
        organ_name(label)  # raises for a label outside 1..NUM_ORGANS
    if not labels:
        if shape is None:
            raise ValueError("merge_organ_logits: no organs given; pass shape= for an all-background map")
        return np.zeros(tuple(shape), np.uint8)
    first_shape = np.shape(logits[labels[0]])
    if shape is not None and tuple(shape) != tuple(first_shape):
        raise ValueError(f"shape={tuple(shape)} differs from the logits' shape {first_shape}")
    best = np.full(first_shape, threshold, np.float32)
    merged = np.zeros(first_shape, np.uint8)
    for label in labels:
        scores = np.asarray(logits[label], dtype=np.float32)
        if scores.shape != first_shape:
            raise ValueError(f"logits of organ {label} ({organ_name(label)}) have shape {scores.shape}, "
                             f"organ {labels[0]} has {first_shape}; all must share one grid")
        wins = scores > best
        merged[wins] = label
        best[wins] = scores[wins]
    return merged


def _load_source(source: str | os.PathLike | nib.Nifti1Image) -> nib.Nifti1Image:
    if isinstance(source, (nib.Nifti1Image, nib.Nifti2Image)):
        image = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: source NIfTI does not exist (the CT or label the prediction belongs to)")
        image = nib.load(path)
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ValueError(f"{path}: not a NIfTI image ({type(image).__name__})")
    if len(image.shape) != 3:
        raise ValueError(f"{getattr(image, 'get_filename', lambda: None)() or 'source'}: expected a 3-D volume, "
                         f"got shape {image.shape}")
    return image


def write_label_nifti(label: np.ndarray, source: str | os.PathLike | nib.Nifti1Image, path: str | os.PathLike,
                      layout: str = "ras") -> Path:
    """Write a predicted label map onto the source volume's voxel grid, atomically, as uint8 NIfTI.

    label: integer label map, values 0..13 (BTCV order), in ``layout``:
        "ras": (X, Y, Z), as ``utils.data.dataset.load_volume`` returns volumes;
        "display": (Z, H, W), the slice store's display slices stacked along Z.
    source: the NIfTI file (or loaded nibabel image) the prediction belongs to, the CT or its label;
        its header is copied, so the file gets the source's affine, qform/sform (and codes), pixdim,
        units and grid, and opens over the CT in 3D Slicer or ITK-SNAP.
    path: ``.nii.gz`` (gzip) or ``.nii``. Written to a temporary file in the same folder, then
        renamed into place, so an interrupted run never leaves a half-written file.
    Returns ``path``. Raises ValueError when the label does not fit the source grid or has labels > 13.
    """
    path = Path(path)
    if not path.name.endswith((".nii.gz", ".nii")):
        raise ValueError(f"{path}: a NIfTI path must end in .nii.gz or .nii")
    image = _load_source(source)
    label = np.asarray(label)
    if layout not in ("ras", "display"):
        raise ValueError(f"layout must be 'ras' or 'display', got {layout!r}")
    x, y, z = ras_shape(image.shape, image.affine)
    want = (x, y, z) if layout == "ras" else (z, y, x)
    if label.shape != want:
        raise ValueError(f"label map shape {label.shape} does not fit the source grid {tuple(image.shape)} "
                         f"(affine axes {''.join(nib.aff2axcodes(image.affine))}): in the {layout!r} layout it must be {want}")
    if layout == "display":
        label = display_to_ras(label)
    if label.size and (label.min() < 0 or label.max() > NUM_ORGANS or not np.all(label == np.round(label))):
        raise ValueError(f"label values must be integers 0..{NUM_ORGANS}, got range [{label.min()}, {label.max()}]")
    data = np.ascontiguousarray(ras_to_source(label.astype(np.uint8), image.affine))
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    out = type(image)(data, image.affine, header)  # resets scl_slope/inter: labels are stored unscaled
    payload = out.to_bytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path
