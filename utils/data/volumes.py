"""Whole volumes in a dense slice store (one built with ``--slice-margin``): which volumes the 3-D stage
evaluates, their ground truth on the source grid and as the store's display stack, and the store rows of
their slices, checked to be complete.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.data.dataset import DataError
from utils.data.slice_store import SliceStore


@dataclass
class VolumeSlices:
    """One evaluated volume: its source files, its ground truth and where its slices are in the store.

    gt_source: uint8 labels in the source file's voxel order; gt_display: the same labels as the store's
    display stack (Z, H, W). rows: z -> store row (== base-cache row) for z_first..z_last, no gap.
    affine: the source label file's 4 x 4 voxel-to-world affine.
    """

    case: str
    image_path: Path
    label_path: Path
    affine: object
    gt_source: object
    gt_display: object
    rows: dict[int, int]

    @property
    def z_first(self) -> int:
        return min(self.rows)

    @property
    def z_last(self) -> int:
        return max(self.rows)

    def pixel_spacing(self, store: SliceStore) -> tuple[float, float]:
        """(row, column) pixel spacing in mm of the volume's slices (the store's record of its first slice)."""
        return store.records[self.rows[self.z_first]].spacing

    def image_stack(self, store: SliceStore) -> np.ndarray:
        """float32 (Z, H, W) display stack of the stored CT slices in [0, 1]; slices not stored are 0."""
        image = np.zeros(self.gt_display.shape, np.float32)
        for z, row in self.rows.items():
            image[z] = store.load(row)[0]
        return image

    def voxel_mm(self, store: SliceStore) -> tuple[float, float, float]:
        """(z, row, column) voxel size in mm of the display stack; z = the voxel volume / the pixel area."""
        sy, sx = self.pixel_spacing(store)
        z_mm = float(abs(np.linalg.det(np.asarray(self.affine)[:3, :3])) / (sx * sy))
        return z_mm, sy, sx


def _inputs(store: SliceStore, split: str, cases: list[str]) -> list[dict]:
    """The manifest inputs of ``split`` (or of ``cases``, whatever their split)."""
    inputs = [i for i in store.manifest["inputs"] if split == "all" or i["split"] == split]
    if cases:
        unknown = sorted(set(cases) - {i["case"] for i in store.manifest["inputs"]})
        if unknown:
            raise DataError(f"--cases {','.join(unknown)}: not in the store {store.path} "
                            f"(it has {', '.join(i['case'] for i in store.manifest['inputs'])})")
        inputs = [i for i in store.manifest["inputs"] if i["case"] in cases]
    if not inputs:
        raise DataError(f"{store.path}: no {split} volumes in this store; try --split all")
    return inputs


def _ground_truth(store: SliceStore, item: dict):
    """(label image, gt_source, gt_display) of one manifest input, checked to be the file the store was cut from."""
    import nibabel as nib

    from utils.data.nifti import ras_to_display, source_to_ras
    from utils.models.sam import file_sha256

    case, label_path = item["case"], Path(item["label"])
    if not label_path.is_file():
        raise DataError(f"volume {case}: its source label {label_path} (recorded in {store.path / 'manifest.json'}) "
                        "is missing; the 3-D stage scores and writes predictions on the source grid. Restore the "
                        "file, or rebuild the store from where the data now are")
    if file_sha256(label_path) != item["label_sha256"]:
        raise DataError(f"volume {case}: {label_path} changed since the store {store.path} was built; rebuild the "
                        "store with preprocess_slices.py")
    image = nib.load(label_path)
    gt_source = np.asarray(image.dataobj).round().astype(np.uint8)
    return image, gt_source, ras_to_display(source_to_ras(gt_source, image.affine))


def plan_volumes(store: SliceStore, split: str, cases: list[str]) -> list[VolumeSlices]:
    """The volumes of ``split`` (or ``cases``), checked: the store holds every slice the 3-D stage needs (each
    volume's lowest organ slice - margin to its highest + margin) and the source label files are there,
    unchanged. Volumes without any organ are skipped. Raises DataError naming the volume and the fix."""
    margin = store.manifest["settings"].get("slice_margin")
    if margin is None:
        raise DataError(f"{store.path}: this store holds only slices with an organ (Tasks 1-3's store); the 3-D "
                        "stage needs every slice through the organs. Build one with: python preprocess_slices.py "
                        "--data-root DATA --slice-margin 2 --out data/slices_3d (add --phantom for the phantom), "
                        "then pass --slices data/slices_3d")
    inputs = _inputs(store, split, cases)
    stored: dict[str, dict[int, int]] = {}
    for record in store.records:
        stored.setdefault(record.case_id, {})[record.z] = record.index
    volumes = []
    for item in inputs:
        case, label_path = item["case"], Path(item["label"])
        image, gt_source, gt_display = _ground_truth(store, item)
        organ_z = np.flatnonzero(gt_display.reshape(gt_display.shape[0], -1).any(axis=1))
        rows = stored.get(case, {})
        if organ_z.size == 0:
            continue  # no organ: nothing to score (the store skipped it too)
        need = set(range(max(int(organ_z[0]) - margin, 0), min(int(organ_z[-1]) + margin, len(gt_display) - 1) + 1))
        missing = sorted(need - set(rows))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise DataError(f"volume {case} ({label_path}): {len(missing)} of its slices are missing from the store "
                            f"{store.path} (z = {shown}); the 3-D stage needs every slice from its lowest organ "
                            f"slice - {margin} to its highest + {margin}. Rebuild the store with preprocess_slices.py "
                            "--slice-margin N")
        rows = {z: rows[z] for z in sorted(need)}
        volumes.append(VolumeSlices(case, Path(item["image"]), label_path, image.affine, gt_source, gt_display, rows))
    return volumes
