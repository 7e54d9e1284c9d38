"""A person's prompts for a CT without labels (``segment_volume.py --prompts FILE``), checked and converted
to the display stack's slice pixels.

The file (JSON)::

    {"coordinates": "voxel",                       # or "mm": world millimetres, RAS+ (utils/data/ct.py)
     "organs": [
       {"organ": "liver",                          # a BTCV name, or its label 1..13: the label written;
                                                   # "auto" (or no "organ"): Task 3's classifier names it
        "box": [[i, j, k], [i, j, k]],             # two opposite corners of a box on ONE axial slice
        "first": [i, j, k], "last": [i, j, k]},    # optional: any point on the organ's first / last slice
       {"organ": 3, "points": [[i, j, k], ...],    # or points, all on one axial slice ...
        "labels": [1, 0]}                          # ... 1 = organ, 0 = not (default: all 1)
     ]}

Each entry is one organ: a box (propagated as the bound box is: the box of each slice's mask, grown by the
margin, prompts the next) or points (at least one positive; propagated from the mask's distance-transform
centre), optionally both (the box and its points on one slice). With ``first`` and ``last`` the entry is a
**3-D box** (the 3-D box protocol: nothing outside those slices, a rejected slice inside does not stop the
walk); without them propagation goes on until the masks stop. Only the axial position of ``first`` /
``last`` is used. Every mistake is one DataError naming the file, the entry and what is wrong.

An entry without an organ (``"organ": "auto"``, or no ``"organ"``) is read only when the caller has a
classifier to name it (``allow_unnamed``; ``segment_volume.py --classifier``): its ``organ`` is
:data:`UNNAMED` until :mod:`utils.inference.naming` names it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.core.organs import NUM_ORGANS, ORGANS
from utils.data.ct import COORDINATES, CTVolume
from utils.data.dataset import DataError
from utils.inference.prompts import Prompt

UNNAMED = 0  # OrganPrompt.organ of an entry the prompt file leaves to the classifier ("organ": "auto")


@dataclass
class OrganPrompt:
    """One organ's prompt on the display stack: its label, key slice, Prompt in slice pixels ((x, y) =
    (column, row), boxes XYXY inclusive), the propagation rule's prompt type, the optional (first, last) z."""

    organ: int  # 1..13, or UNNAMED
    key_z: int
    prompt: Prompt
    prompt_type: str
    z_limits: tuple[int, int] | None

    def record(self) -> dict:
        """What the sidecar JSON says was decoded (display coordinates)."""
        out = {"key_z": self.key_z, "prompt_type": self.prompt_type,
               "z_range": list(self.z_limits) if self.z_limits else None}
        if self.prompt.box is not None:
            out["box_xyxy"] = [float(v) for v in self.prompt.box]
        if self.prompt.points is not None:
            out["points_xy"] = self.prompt.points.tolist()
            out["labels"] = self.prompt.labels.tolist()
        return out


def _organ_label(value, where: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{where}: organ {value!r} is not a BTCV organ name or label")
    if isinstance(value, int):
        if not 1 <= value <= NUM_ORGANS:
            raise DataError(f"{where}: organ label {value} is outside 1..{NUM_ORGANS}")
        return value
    if isinstance(value, str):  # "Liver", "right kidney", "Right_Kidney": one organ, whatever the case or spacing
        key = "_".join(value.strip().lower().replace("-", " ").split())
        if key in ORGANS:
            return ORGANS.index(key) + 1
    raise DataError(f"{where}: organ {value!r} is not a BTCV organ; use a label 1..{NUM_ORGANS} or one of "
                    f"{', '.join(ORGANS)}")


def _points(ct: CTVolume, values, coordinates: str, where: str) -> list[tuple[int, int, int]]:
    if not isinstance(values, list) or not values:
        raise DataError(f"{where}: expected a list of [a, b, c] points")
    out = []
    for value in values:
        if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
            raise DataError(f"{where}: {value!r} is not a point [a, b, c] of 3 numbers")
        try:
            out.append(ct.to_display(value, coordinates))
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from exc
    return out


def _one_slice(points: list[tuple[int, int, int]], what: str, where: str) -> int:
    slices = sorted({z for z, _, _ in points})
    if len(slices) > 1:
        raise DataError(f"{where}: the {what} lie on axial slices {slices} of the display stack; they must lie on "
                        "one slice (give the organ's first and last slice with \"first\" / \"last\")")
    return slices[0]


def _entry(ct: CTVolume, entry: dict, coordinates: str, where: str, allow_unnamed: bool = False) -> OrganPrompt:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object with \"organ\" and \"box\" or \"points\"")
    unknown = set(entry) - {"organ", "box", "points", "labels", "first", "last"}
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)}; use organ, box, points, labels, first, last")
    if str(entry.get("organ", "auto")).strip().lower() == "auto":
        if not allow_unnamed:
            given = "\"organ\": \"auto\"" if "organ" in entry else "no \"organ\""
            raise DataError(f"{where}: {given}, but no --classifier to name it; name the organ (a BTCV name or label "
                            f"1..{NUM_ORGANS}), or pass segment_volume.py --classifier (a Task 3 run folder, e.g. "
                            "checkpoints/classifier/lite_medsam/one_central_point/latest)")
        organ = UNNAMED
    else:
        organ = _organ_label(entry["organ"], where)
    if "box" not in entry and "points" not in entry:
        raise DataError(f"{where}: give a \"box\" (two corners) or \"points\"")
    key_z, box, points, labels = None, None, None, None
    if "box" in entry:
        corners = _points(ct, entry["box"], coordinates, f"{where} box")
        if len(corners) != 2:
            raise DataError(f"{where} box: expected two opposite corners, got {len(corners)} points")
        key_z = _one_slice(corners, "box's corners", where)
        rows, cols = sorted(r for _, r, _ in corners), sorted(c for _, _, c in corners)
        if rows[0] == rows[1] and cols[0] == cols[1]:
            raise DataError(f"{where} box: both corners are the same voxel (row {rows[0]}, column {cols[0]} of "
                            f"display slice {key_z}): an empty box; give two opposite corners")
        box = np.array([cols[0], rows[0], cols[1], rows[1]], np.float32)
    if "points" in entry:
        pts = _points(ct, entry["points"], coordinates, f"{where} points")
        z = _one_slice(pts, "points", where)
        if key_z is not None and z != key_z:
            raise DataError(f"{where}: the points are on slice {z}, the box on slice {key_z}; one slice for both")
        key_z = z
        labels = entry.get("labels", [1] * len(pts))
        if not isinstance(labels, list) or len(labels) != len(pts) or any(v not in (0, 1) for v in labels):
            raise DataError(f"{where} labels: expected one 0 or 1 per point ({len(pts)} points), got {labels!r}")
        if box is None and 1 not in labels:
            raise DataError(f"{where}: points without a box need at least one positive point (label 1)")
        points = np.array([[c, r] for _, r, c in pts], np.float32)
        labels = np.array(labels, np.int64)
    limits = None
    if ("first" in entry) != ("last" in entry):
        raise DataError(f"{where}: give both \"first\" and \"last\" (the organ's first and last slice), or neither")
    if "first" in entry:
        first = _points(ct, [entry["first"]], coordinates, f"{where} first")[0][0]
        last = _points(ct, [entry["last"]], coordinates, f"{where} last")[0][0]
        lo, hi = min(first, last), max(first, last)
        if not lo <= key_z <= hi:
            raise DataError(f"{where}: the prompt's slice {key_z} is outside its first..last slices {lo}..{hi}")
        limits = (lo, hi)
    prompt_type = "bound_box" if box is not None else "one_central_point"
    return OrganPrompt(organ, key_z, Prompt(points=points, labels=labels, box=box), prompt_type, limits)


def read_prompt_spec(path: str | Path) -> dict:
    """The JSON object of prompt file ``path`` (read once: segment_volume.py parses it and copies it into its
    sidecar); DataError when the file is missing, unreadable or not of the module docstring's shape."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such prompt file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON prompt file ({exc})") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("organs"), list) or not spec["organs"]:
        raise DataError(f"{path}: expected {{\"coordinates\": \"voxel\" | \"mm\", \"organs\": [...]}} with at least "
                        "one organ (segment_volume.py --help shows the format)")
    return spec


def prompts_of_spec(spec: dict, ct: CTVolume, path: str | Path, allow_unnamed: bool = False) -> list[OrganPrompt]:
    """The organs' prompts of ``spec`` (:func:`read_prompt_spec` of ``path``, named in errors) on ``ct``'s
    display stack; DataError otherwise. ``allow_unnamed``: entries may leave the organ to a classifier."""
    coordinates = spec.get("coordinates", "voxel")
    if coordinates not in COORDINATES:
        raise DataError(f"{path}: coordinates {coordinates!r}: choose from {', '.join(COORDINATES)}")
    prompts = [_entry(ct, e, coordinates, f"{path}: organs[{i}]", allow_unnamed) for i, e in enumerate(spec["organs"])]
    seen: dict[int, int] = {}
    for i, p in enumerate(prompts):
        if p.organ == UNNAMED:
            continue
        if p.organ in seen:
            raise DataError(f"{path}: organs[{seen[p.organ]}] and organs[{i}] are both {ORGANS[p.organ - 1]}; one "
                            "entry per organ")
        seen[p.organ] = i
    return prompts


def read_prompt_file(path: str | Path, ct: CTVolume) -> list[OrganPrompt]:
    """The organs' prompts of ``path`` on ``ct``'s display stack (module docstring); DataError otherwise."""
    return prompts_of_spec(read_prompt_spec(path), ct, path)


def box3d_prompt_spec(label_display: np.ndarray, ct: CTVolume) -> dict:
    """The prompt file a person would write for the 3-D box protocol, made from a label map (display stack
    (Z, H, W), on ``ct``'s grid) for a demonstration on a volume whose labels are then withheld: per organ the
    tight box on its key slice (largest area, as segmentation_3d.py's box3d picks it) and its first and
    last slice, in the file's voxel indices."""
    from utils.inference.prompts import bound_box
    from utils.inference.propagation import key_slice

    organs = []
    for organ in (int(o) for o in np.unique(label_display) if o > 0):
        z = key_slice(label_display, organ)
        x0, y0, x1, y1 = (int(v) for v in bound_box(label_display[z] == organ))
        on = np.flatnonzero((label_display == organ).any(axis=(1, 2)))
        organs.append({"organ": ORGANS[organ - 1],
                       "box": [ct.display_to_voxel(z, y0, x0), ct.display_to_voxel(z, y1, x1)],
                       "first": ct.display_to_voxel(int(on[0]), y0, x0),
                       "last": ct.display_to_voxel(int(on[-1]), y0, x0)})
    return {"coordinates": "voxel", "organs": organs}
