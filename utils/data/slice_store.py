"""The 2-D slice store: every axial slice that holds at least one organ, written once.

(With ``slice_margin=N``, for the 3-D stage: every slice from N below a volume's lowest organ slice
to N above its highest, slices without any organ included, so a volume's stored slices have no gap.)

Layout of ``SLICE_DIR`` (what ``preprocess_slices.py --out SLICE_DIR`` writes)::

    SLICE_DIR/current                 name of the store the last preprocessing run made
    SLICE_DIR/store-<key>/manifest.json   settings, input digests, counts (the key is a hash of them)
    SLICE_DIR/store-<key>/index.json      one row per slice: case, z, split, organs + pixel counts, spacing
    SLICE_DIR/store-<key>/organs.csv      the per-organ view: one row per (slice, organ) with class id,
                                          pixel count and tight box; its mask is ``label == organ``
    SLICE_DIR/store-<key>/slices/<case>_<z>.npz   image float16 (H, W) in [0, 1] + label uint8 (H, W)

Slices are stored in radiological display orientation: row 0 is anterior, column 0 is the patient's
right (from the RAS volume: ``np.flip(volume[:, :, z], (0, 1)).T``). Points are (x, y) = (column, row).
A store is built in a temporary folder and renamed into place, so a failed run leaves nothing behind;
changed inputs or settings give a new key, hence a new store, never a mix.
"""
from __future__ import annotations

import csv
import io
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from utils.core.hashing import file_sha256, short_digest
from utils.core.io import read_json, write_json, write_text
from utils.core.organs import NUM_ORGANS
from utils.data.dataset import CaseFiles, DataError, discover_cases, load_volume

STORE_FORMAT_VERSION = 1
STORE_KEY_LENGTH = 16  # hex digits of the store-<key> folder name
DEFAULT_WINDOW = (-175.0, 250.0)  # MONAI's BTCV tutorials' soft-tissue window, in HU


def volume_to_display(axial_ras: np.ndarray) -> np.ndarray:
    """(X, Y) RAS axial slice -> (H, W) display slice (row 0 anterior, column 0 patient's right)."""
    return np.ascontiguousarray(np.flip(axial_ras, (0, 1)).T)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight XYXY box (x0, y0, x1, y1), inclusive pixel indices, of a non-empty (H, W) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("tight_box of an empty mask")
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


@dataclass(frozen=True)
class SliceRecord:
    """One stored slice (``index`` is its row in the store, 0-based)."""

    index: int
    file: str
    case_id: str
    z: int
    split: str
    organs: dict[int, int]  # organ label -> pixel count on this slice
    spacing: tuple[float, float]  # (row, column) spacing in mm


class SliceStore:
    """Read access to one built store. Slices are read lazily from their .npz files."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = resolve_store(path)
        self.manifest = read_json(self.path / "manifest.json")
        rows = read_json(self.path / "index.json")["slices"]
        self.records = [
            SliceRecord(
                index=i,
                file=r["file"],
                case_id=r["case"],
                z=r["z"],
                split=r["split"],
                organs={int(k): int(v) for k, v in r["organs"].items()},
                spacing=tuple(r["spacing"]),  # type: ignore[arg-type]
            )
            for i, r in enumerate(rows)
        ]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def key(self) -> str:
        """The store's content key: changes whenever inputs or settings change."""
        return self.manifest["key"]

    @property
    def description(self) -> str:
        """What data this is, for results files: e.g. 'synthetic phantom (not BTCV)' or 'BTCV'."""
        return self.manifest["data"]

    def indices(self, split: str) -> list[int]:
        """Store rows of ``split`` ("train", "val" or "all")."""
        if split == "all":
            return list(range(len(self)))
        if split not in ("train", "val"):
            raise ValueError(f"split must be train, val or all, got {split!r}")
        return [r.index for r in self.records if r.split == split]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 (H, W) in [0, 1], label uint8 (H, W)) of store row ``index``."""
        path = self.path / "slices" / self.records[index].file
        try:
            with np.load(path) as data:
                return data["image"].astype(np.float32), data["label"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: unreadable slice file ({exc}); rebuild the store with preprocess_slices.py") from exc

    def label(self, index: int) -> np.ndarray:
        """uint8 (H, W) label of store row ``index`` (decompresses the label only, not the image)."""
        path = self.path / "slices" / self.records[index].file
        try:
            with np.load(path) as data:
                return data["label"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: unreadable slice file ({exc}); rebuild the store with preprocess_slices.py") from exc


def resolve_store(path: Path) -> Path:
    """A store folder, or a SLICE_DIR whose ``current`` file names one."""
    if (path / "manifest.json").is_file():
        return path
    current = path / "current"
    if current.is_file():
        store = path / current.read_text().strip()
        if (store / "manifest.json").is_file():
            return store
        raise DataError(f"{current}: names {store.name}, which is missing; rerun preprocess_slices.py")
    raise DataError(
        f"{path}: no slice store here. Build one with: python preprocess_slices.py --phantom "
        f"--out {path}  (or --data-root BTCV_DIR --out {path})"
    )


def store_key(cases: Sequence[CaseFiles], digests: dict[str, str], settings: dict) -> str:
    """Hash of everything the store's contents depend on."""
    # repr of the sorted settings, not JSON: the serialisation every existing store's key was made with.
    text = repr(sorted(settings.items())) + "".join(
        f"{c.case_id}|{c.split}|{digests[str(c.image)]}|{digests[str(c.label)]}\n" for c in cases)
    return short_digest(text, STORE_KEY_LENGTH)


def store_settings(window: tuple[float, float] = DEFAULT_WINDOW, slice_margin: int | None = None) -> dict:
    """The settings a store's contents depend on (part of its key): format, HU window, slice filter."""
    settings = {
        "format_version": STORE_FORMAT_VERSION,
        "window_hu": [float(window[0]), float(window[1])],
        "orientation": "RAS volume -> display (row 0 anterior, column 0 patient right)",
        "slice_filter": "at least one organ label > 0",
    }
    if slice_margin is not None:  # absent for Tasks 1-3's stores, so their keys stay as they were
        if int(slice_margin) != slice_margin or slice_margin < 0:
            raise ValueError(f"slice_margin must be an integer >= 0, got {slice_margin}")
        settings["slice_filter"] = "every slice from the lowest organ slice - margin to the highest + margin"
        settings["slice_margin"] = int(slice_margin)
    return settings


def build_store(
    data_root: str | Path,
    out_dir: str | Path,
    window: tuple[float, float] = DEFAULT_WINDOW,
    data_description: str | None = None,
    progress: bool = True,
    slice_margin: int | None = None,
) -> tuple[Path, dict]:
    """Preprocess every volume under ``data_root`` into a store under ``out_dir``.

    slice_margin: None (Tasks 1-3): only slices with an organ. N >= 0 (the 3-D stage): every slice z
        with ``first - N <= z <= last + N`` (clipped to the volume), ``first``/``last`` the volume's
        lowest/highest organ slice, slices without any organ included. Part of the store's settings,
        hence of its key (and of its embedding cache's).
    Returns (store path, summary). A store with the same key is reused as is.
    """
    cases, layout = discover_cases(data_root)
    digests = {str(p): file_sha256(p) for c in cases for p in (c.image, c.label)}
    settings = store_settings(window, slice_margin)
    key = store_key(cases, digests, settings)
    out_dir = Path(out_dir)
    final = out_dir / f"store-{key}"
    if (final / "manifest.json").is_file():
        write_text(out_dir / "current", final.name + "\n")
        manifest = read_json(final / "manifest.json")
        return final, dict(manifest["summary"], reused=True)

    if data_description is None:
        phantom = Path(data_root) / "PHANTOM.json"
        data_description = "synthetic BTCV-format phantom (not BTCV)" if phantom.is_file() else "BTCV"

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".tmp-store-{key}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "slices").mkdir(parents=True)
    try:
        rows, organ_rows, skipped_empty = _cut_slices(cases, window, slice_margin, tmp / "slices", progress)
        if not rows:
            raise DataError(f"{data_root}: no volume holds any organ label; nothing to store")
        summary = _summary(layout, len(cases), skipped_empty, rows, organ_rows)
        _write_tables(tmp, rows, organ_rows)
        write_json(tmp / "manifest.json", {
            "key": key,
            "data": data_description,
            "data_root": str(Path(data_root).resolve()),
            "settings": settings,
            "inputs": _inputs(cases, digests),
            "summary": summary,
        })
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text(out_dir / "current", final.name + "\n")
    return final, dict(summary, reused=False)


def _cut_slices(cases: Sequence[CaseFiles], window: tuple[float, float], slice_margin: int | None, folder: Path,
                progress: bool) -> tuple[list[dict], list[list], list[str]]:
    """Write each kept axial slice of every volume to ``folder`` as ``<case>_<z:03d>.npz``; return the
    index rows (one per slice), the organ rows (one per slice and organ, with its tight box) and the label
    files skipped for holding no organ."""
    from tqdm import tqdm

    rows: list[dict] = []
    organ_rows: list[list] = []
    skipped_empty: list[str] = []
    for case in tqdm(cases, desc="volumes", unit="vol", disable=not progress):
        volume = load_volume(case, window)
        organ_slices = np.flatnonzero(volume.label.reshape(-1, volume.label.shape[2]).any(axis=0))
        if organ_slices.size == 0:
            warnings.warn(f"{case.label}: no organ label in this volume; skipped")
            skipped_empty.append(str(case.label))
            continue
        if slice_margin is not None:
            first = max(int(organ_slices[0]) - slice_margin, 0)
            organ_slices = np.arange(first, min(int(organ_slices[-1]) + slice_margin + 1, volume.label.shape[2]))
        # Display rows run along RAS axis 1 (y), columns along axis 0 (x).
        spacing = (volume.spacing[1], volume.spacing[0])
        for z in organ_slices:
            image = volume_to_display(volume.image[:, :, z])
            label = volume_to_display(volume.label[:, :, z])
            name = f"{case.case_id}_{int(z):03d}.npz"
            buffer = io.BytesIO()
            np.savez_compressed(buffer, image=image.astype(np.float16), label=label)
            (folder / name).write_bytes(buffer.getvalue())
            present, counts = np.unique(label[label > 0], return_counts=True)
            organs = {str(int(o)): int(n) for o, n in zip(present, counts)}
            index = len(rows)
            rows.append({"file": name, "case": case.case_id, "z": int(z), "split": case.split,
                         "organs": organs, "spacing": list(spacing)})
            for o in present:
                organ_rows.append([index, case.case_id, int(z), case.split, int(o), organs[str(int(o))],
                                   *tight_box(label == o)])
    return rows, organ_rows, skipped_empty


def _inputs(cases: Sequence[CaseFiles], digests: dict[str, str]) -> list[dict]:
    """The manifest's record of every source volume: case, split, files and their SHA-256."""
    return [{"case": c.case_id, "split": c.split, "image": str(c.image), "label": str(c.label),
             "image_sha256": digests[str(c.image)], "label_sha256": digests[str(c.label)]} for c in cases]


def _summary(layout: str, n_cases: int, skipped_empty: list[str], rows: list[dict], organ_rows: list[list]) -> dict:
    """The manifest's summary: volumes, slices and (slice, organ) samples, per split and per organ."""
    return {
        "layout": layout,
        "volumes": n_cases - len(skipped_empty),
        "skipped_empty_volumes": skipped_empty,
        "slices": len(rows),
        "slices_without_organ": sum(not r["organs"] for r in rows),
        "slices_per_split": {s: sum(r["split"] == s for r in rows) for s in ("train", "val")},
        "organ_samples": len(organ_rows),
        "organ_samples_per_label": {str(o): sum(r[4] == o for r in organ_rows) for o in range(1, NUM_ORGANS + 1)},
    }


def _write_tables(folder: Path, rows: list[dict], organ_rows: list[list]) -> None:
    """``index.json`` (one record per slice) and ``organs.csv`` (one row per slice and organ)."""
    write_json(folder / "index.json", {"slices": rows})
    with open(folder / "organs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["slice", "case", "z", "split", "organ", "pixels", "x0", "y0", "x1", "y1"])
        writer.writerows(organ_rows)


def iter_organ_masks(label: np.ndarray, organs: Iterable[int]) -> Iterable[tuple[int, np.ndarray]]:
    """(organ, bool (H, W) mask) for each organ label in ``organs``."""
    for organ in organs:
        yield organ, label == organ
