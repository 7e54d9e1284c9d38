"""Finding BTCV volumes on disk, splitting them 24/6, and loading them through MONAI.

Three layouts are accepted under ``--data-root``:

1. MONAI's tutorial copy: a ``dataset_0.json`` with ``training`` / ``validation`` lists of
   ``{"image": ..., "label": ...}`` (paths relative to the folder holding the JSON). Its split is used.
2. Synapse ``RawData``: ``RawData/Training/img/img0001.nii.gz`` + ``RawData/Training/label/label0001.nii.gz``
   (the root may also be ``RawData`` or ``RawData/Training`` itself). Split by case id as in MONAI's
   ``dataset_0.json``: validation = cases 35-40, training = every other case (1-10, 21-34).
3. A plain folder with ``img/`` + ``label/`` or ``imagesTr/`` + ``labelsTr/``. Split rule: cases sorted by
   name, every fifth one (positions 4, 9, 14, ...) is validation -- 6 of 30, and works for any count.

The TransUNet/SAMed "Synapse" 18/12 split overlaps cases 35, 36 and 38 with MONAI's validation set;
it is never used here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.core.errors import SuiteError
from utils.core.organs import MAX_LABEL

SPLITS = ("train", "val")
MONAI_VAL_CASE_IDS = frozenset(range(35, 41))
NIFTI_SUFFIXES = (".nii.gz", ".nii")


class DataError(SuiteError, ValueError):
    """Bad input data: the message names the file and says what is wrong and how to fix it."""


@dataclass(frozen=True)
class CaseFiles:
    """One CT volume and its label map on disk."""

    case_id: str  # e.g. "0001" for img0001.nii.gz, or the file stem for plain folders
    image: Path
    label: Path
    split: str  # "train" or "val"


def _strip_nifti(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def _case_key(path: Path, prefix: str) -> str:
    stem = _strip_nifti(path.name)
    if stem.startswith(prefix):
        stem = stem[len(prefix):]
    # nnU-Net names images CASE_0000.nii.gz (channel suffix) and labels CASE.nii.gz.
    return re.sub(r"_0000$", "", stem)


def _pair_folder(img_dir: Path, label_dir: Path, img_prefix: str, label_prefix: str) -> dict[str, tuple[Path, Path]]:
    images = {_case_key(p, img_prefix): p for p in sorted(img_dir.iterdir()) if _is_nifti(p)}
    labels = {_case_key(p, label_prefix): p for p in sorted(label_dir.iterdir()) if _is_nifti(p)}
    for key in sorted(images.keys() - labels.keys()):
        raise DataError(
            f"{images[key]}: image has no label (expected a matching file in {label_dir}). "
            "Add the label or move the image out of the data folder."
        )
    for key in sorted(labels.keys() - images.keys()):
        raise DataError(
            f"{labels[key]}: label has no image (expected a matching file in {img_dir}). "
            "Add the image or move the label out of the data folder."
        )
    if not images:
        raise DataError(f"{img_dir}: no .nii.gz volumes found")
    return {key: (images[key], labels[key]) for key in sorted(images)}


def _from_dataset_json(json_path: Path) -> list[CaseFiles]:
    try:
        spec = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{json_path}: not a readable JSON file ({exc})") from exc
    base = json_path.parent
    cases = []
    for key, split in (("training", "train"), ("validation", "val")):
        for entry in spec.get(key, []):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise DataError(f"{json_path}: every '{key}' entry needs 'image' and 'label', got {entry!r}")
            image, label = base / entry["image"], base / entry["label"]
            for path, what in ((image, "image"), (label, "label")):
                if not path.is_file():
                    raise DataError(f"{json_path}: {what} {path} listed under '{key}' does not exist")
            cases.append(CaseFiles(_case_key(image, "img"), image, label, split))
    if not cases:
        raise DataError(f"{json_path}: no 'training' or 'validation' entries")
    return cases


def _split_by_position(keys: list[str]) -> dict[str, str]:
    return {key: ("val" if i % 5 == 4 else "train") for i, key in enumerate(sorted(keys))}


def discover_cases(data_root: str | Path) -> tuple[list[CaseFiles], str]:
    """Find the volumes under ``data_root``; return them (sorted by case id) and the layout's name.

    Raises DataError naming the folder when nothing usable is there.
    """
    root = Path(data_root)
    if not root.exists():
        raise DataError(
            f"{root}: data root does not exist. Download BTCV (Synapse 'RawData.zip', or MONAI's "
            "tutorial copy with dataset_0.json) and pass its folder with --data-root, or generate the "
            "suite's synthetic phantom with: python preprocess_slices.py --phantom"
        )
    json_path = root / "dataset_0.json"
    if json_path.is_file():
        return _from_dataset_json(json_path), "dataset_0.json"

    for raw in (root / "RawData" / "Training", root / "Training", root):
        if (raw / "img").is_dir() and (raw / "label").is_dir():
            pairs = _pair_folder(raw / "img", raw / "label", "img", "label")
            if all(key.isdigit() for key in pairs):
                splits = {key: ("val" if int(key) in MONAI_VAL_CASE_IDS else "train") for key in pairs}
                layout = "RawData"
            else:
                splits = _split_by_position(list(pairs))
                layout = "img/label folder"
            return [CaseFiles(k, i, l, splits[k]) for k, (i, l) in pairs.items()], layout

    if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        pairs = _pair_folder(root / "imagesTr", root / "labelsTr", "", "")
        splits = _split_by_position(list(pairs))
        return [CaseFiles(k, i, l, splits[k]) for k, (i, l) in pairs.items()], "imagesTr/labelsTr folder"

    raise DataError(
        f"{root}: no BTCV layout found. Expected dataset_0.json, RawData/Training/img + label, img/ + "
        "label/, or imagesTr/ + labelsTr/. Generate the synthetic phantom with: "
        "python preprocess_slices.py --phantom"
    )


def select_split(cases: list[CaseFiles], split: str) -> list[CaseFiles]:
    """Cases of ``split`` ("train", "val" or "all")."""
    if split == "all":
        return list(cases)
    if split not in SPLITS:
        raise ValueError(f"split must be train, val or all, got {split!r}")
    return [c for c in cases if c.split == split]


@dataclass(frozen=True)
class Volume:
    """A loaded, validated, RAS-oriented, windowed volume.

    image: float32 (X, Y, Z) in [0, 1] after the CT window; label: uint8 (X, Y, Z) in 0..13.
    Axis 0 points to the patient's right, axis 1 anterior, axis 2 superior (RAS+). spacing in mm.
    """

    case: CaseFiles
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def load_volume(case: CaseFiles, window: tuple[float, float]) -> Volume:
    """Load ``case`` with MONAI, check it, reorient to RAS and apply the HU ``window`` -> [0, 1].

    Raises DataError naming the file for: unreadable/truncated NIfTI, shape or affine mismatch
    between image and label, label values outside 0..13.
    """
    from monai.transforms import Compose, Orientationd, ScaleIntensityRanged

    data = {}
    for key, path in (("image", case.image), ("label", case.label)):
        try:
            data[key] = _load_one(path)
        except DataError:
            raise
        except Exception as exc:  # nibabel/MONAI raise many types for a bad file
            raise DataError(
                f"{path}: cannot read this NIfTI file ({type(exc).__name__}: {exc}). It is unreadable or "
                "truncated: download or extract it again."
            ) from exc
    image, label = data["image"], data["label"]
    finite = np.isfinite(np.asarray(image))
    if not finite.all():
        raise DataError(
            f"{case.image}: {int((~finite).sum())} of {finite.size} voxels are not finite (NaN or inf). A CT volume "
            "holds HU values only: re-export or repair the file, or move it out of the data folder."
        )
    if tuple(image.shape) != tuple(label.shape):
        raise DataError(
            f"{case.label}: label shape {tuple(label.shape[1:])} does not match image {case.image} shape "
            f"{tuple(image.shape[1:])}. The pair must come from the same scan."
        )
    if not np.allclose(np.asarray(image.affine), np.asarray(label.affine), atol=1e-3):
        raise DataError(
            f"{case.label}: label affine does not match the affine of image {case.image} "
            f"(image\n{np.asarray(image.affine)}\nlabel\n{np.asarray(label.affine)}). The pair must share one "
            "voxel grid; resample the label onto the image."
        )
    label_values = np.unique(np.asarray(label))
    bad = [v for v in label_values if v != np.round(v) or not 0 <= v <= MAX_LABEL]
    if bad:
        raise DataError(
            f"{case.label}: label values {[float(v) for v in bad[:10]]} are outside the BTCV labels "
            f"0..{MAX_LABEL}. Is this a BTCV label map?"
        )
    transform = Compose(
        [
            Orientationd(keys=["image", "label"], axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            # A fixed soft-tissue window, not a per-volume min-max: min-max over a whole CT volume
            # (bone at +1000, air at -1000) crushes the ~100 HU contrast between abdominal organs.
            ScaleIntensityRanged(keys=["image"], a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True),
        ]
    )
    out = transform({"image": image, "label": label})
    spacing = tuple(float(s) for s in out["image"].pixdim[:3])
    return Volume(
        case=case,
        image=np.asarray(out["image"][0], dtype=np.float32),
        label=np.asarray(out["label"][0]).round().astype(np.uint8),
        spacing=spacing,  # type: ignore[arg-type]
    )


def _load_one(path: Path):
    from monai.transforms import EnsureChannelFirst, LoadImage

    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    volume = LoadImage(image_only=True, reader="NibabelReader")(path)
    if volume.ndim != 3:
        raise DataError(
            f"{path}: a {volume.ndim}-D image of shape {tuple(volume.shape)}; BTCV volumes are 3-D (X, Y, Z). "
            "Pass the whole CT volume (not a single slice or a 4-D series)."
        )
    volume = EnsureChannelFirst()(volume)
    # Force the lazy nibabel read now, so a truncated gzip fails here with the file's name.
    np.asarray(volume)
    return volume
