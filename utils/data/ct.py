"""A CT without labels, as the slice store would cut it: the display stack of windowed slices, and points
converted between the file's voxel indices, world millimetres and the display stack.

The image goes through exactly what :func:`utils.data.dataset.load_volume` and the slice store apply
(MONAI ``Orientationd`` to RAS, the soft-tissue window to [0, 1], ``volume_to_display`` per axial slice,
rounded to float16 as the store stores it), so the same CT gives the same embeddings and the same masks
whether it comes through a store or through here.

Coordinates (:class:`CTVolume`):

- **voxel**: (i, j, k) indices of the NIfTI file's own array, as stored, whatever its orientation (what
  ``nibabel.load(path).dataobj[i, j, k]`` reads; 3D Slicer's "IJK" and ITK-SNAP's voxel coordinates, 0-based).
- **mm**: world coordinates in millimetres, RAS+ (nibabel's and 3D Slicer's convention: increasing x goes
  to the patient's Right, y Anterior, z Superior), mapped with the file's affine to the nearest voxel.
  ITK and ITK-SNAP show LPS: negate x and y first.
- **display**: (z, row, column) of the display stack (Z, H, W): z inferior -> superior, row 0 anterior,
  column 0 the patient's right; a point on a display slice is (x, y) = (column, row).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.data.dataset import DataError, _load_one
from utils.data.slice_store import DEFAULT_WINDOW, volume_to_display

COORDINATES = ("voxel", "mm")


@dataclass
class CTVolume:
    """One CT: ``path``, ``affine`` (the file's 4 x 4), ``shape`` (the file's (I, J, K)), ``images`` float32
    display stack (Z, H, W) in [0, 1] (float16-rounded, as stored), ``spacing`` (row, column) mm of a display
    slice and ``z_mm`` the slice step."""

    path: Path
    affine: np.ndarray
    shape: tuple[int, int, int]
    images: np.ndarray
    spacing: tuple[float, float]
    z_mm: float

    def voxel_to_display(self, ijk: Sequence[float]) -> tuple[int, int, int]:
        """(i, j, k) voxel indices of the file -> (z, row, column) of the display stack; DataError outside."""
        from utils.data.nifti import _to_ras_ornt

        index = np.round(np.asarray(ijk, dtype=np.float64)).astype(int)
        if index.shape != (3,):
            raise DataError(f"a voxel point has 3 indices (i, j, k), got {list(ijk)}")
        if np.any(index < 0) or np.any(index >= np.asarray(self.shape)):
            raise DataError(f"voxel {index.tolist()} is outside the volume {self.path} (shape {list(self.shape)}: "
                            f"indices 0..{self.shape[0] - 1}, 0..{self.shape[1] - 1}, 0..{self.shape[2] - 1})")
        ras = [0, 0, 0]
        ras_shape = [0, 0, 0]
        for axis, (target, flip) in enumerate(_to_ras_ornt(self.affine)):
            target = int(target)
            ras_shape[target] = self.shape[axis]
            ras[target] = int(index[axis]) if flip > 0 else self.shape[axis] - 1 - int(index[axis])
        x, y, z = ras
        width, height, _ = ras_shape
        return z, height - 1 - y, width - 1 - x  # display[z, h, w] = ras[W - 1 - w, H - 1 - h, z]

    def display_to_voxel(self, z: int, row: int, column: int) -> list[int]:
        """(z, row, column) of the display stack -> (i, j, k) voxel indices of the file (inverse of
        :meth:`voxel_to_display`)."""
        from utils.data.nifti import _to_ras_ornt

        ornt = _to_ras_ornt(self.affine)
        ras_shape = [0, 0, 0]
        for axis, (target, _) in enumerate(ornt):
            ras_shape[int(target)] = self.shape[axis]
        ras = (ras_shape[0] - 1 - int(column), ras_shape[1] - 1 - int(row), int(z))
        index = []
        for axis, (target, flip) in enumerate(ornt):
            value = ras[int(target)]
            index.append(value if flip > 0 else self.shape[axis] - 1 - value)
        return index

    def mm_to_voxel(self, xyz_mm: Sequence[float]) -> np.ndarray:
        """World (x, y, z) mm, RAS+ -> the nearest (i, j, k) voxel index of the file (may lie outside)."""
        point = np.asarray(xyz_mm, dtype=np.float64)
        if point.shape != (3,):
            raise DataError(f"a point in mm has 3 coordinates (x, y, z), got {list(xyz_mm)}")
        return np.round((np.linalg.inv(self.affine) @ np.append(point, 1.0))[:3]).astype(int)

    def to_display(self, point: Sequence[float], coordinates: str) -> tuple[int, int, int]:
        """A point in ``coordinates`` ("voxel" or "mm") -> (z, row, column) of the display stack."""
        if coordinates not in COORDINATES:
            raise DataError(f"coordinates {coordinates!r}: choose from {', '.join(COORDINATES)}")
        return self.voxel_to_display(point if coordinates == "voxel" else self.mm_to_voxel(point))


def load_ct(path: str | Path, window: tuple[float, float] = DEFAULT_WINDOW) -> CTVolume:
    """Read a CT NIfTI (no label needed) as the slice store would cut it; DataError naming the file otherwise."""
    from monai.transforms import Orientation, ScaleIntensityRange

    path = Path(path)
    try:
        image = _load_one(path)
    except DataError:
        raise
    except Exception as exc:  # nibabel/MONAI raise many types for a bad file
        raise DataError(f"{path}: cannot read this NIfTI file ({type(exc).__name__}: {exc}). It is unreadable or "
                        "truncated") from exc
    if not np.isfinite(np.asarray(image)).all():
        raise DataError(f"{path}: some voxels are not finite (NaN or inf); a CT volume holds HU values only")
    affine = np.asarray(image.affine, dtype=np.float64)
    shape = tuple(int(s) for s in image.shape[1:])
    ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(image)
    ras = ScaleIntensityRange(a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True)(ras)
    sx, sy, sz = (float(s) for s in ras.pixdim[:3])
    volume = np.asarray(ras[0], dtype=np.float32)
    images = np.stack([volume_to_display(volume[:, :, z]) for z in range(volume.shape[2])])
    return CTVolume(path, affine, shape, images.astype(np.float16).astype(np.float32), (sy, sx), sz)


def load_label_display(path: str | Path, ct: CTVolume) -> np.ndarray:
    """A label map for ``ct`` (same grid and affine; BTCV labels 0..13) as a uint8 display stack (Z, H, W);
    DataError naming the file otherwise. For making prompts from labels and scoring afterwards, never for
    segmenting."""
    import nibabel as nib

    from utils.core.organs import MAX_LABEL
    from utils.data.nifti import ras_to_display, source_to_ras

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for a bad file
        raise DataError(f"{path}: cannot read this NIfTI file ({type(exc).__name__}: {exc})") from exc
    if tuple(data.shape) != ct.shape or not np.allclose(image.affine, ct.affine, atol=1e-3):
        raise DataError(f"{path}: its grid (shape {list(data.shape)}) or affine differs from the CT {ct.path} "
                        f"(shape {list(ct.shape)}); a label map must lie on the CT's own grid")
    if data.size and (data.min() < 0 or data.max() > MAX_LABEL or not np.all(data == np.round(data))):
        raise DataError(f"{path}: label values must be integers 0..{MAX_LABEL} (BTCV labels)")
    return ras_to_display(source_to_ras(data.round().astype(np.uint8), ct.affine))
