"""What a correction click may change: the whole mask (``global``, SAM's rule) or only the part near the click
(``local``, FocalClick's progressive merge inside an nnInteractive-style window).

``local`` (:func:`accepted_region`): after a click at (x, y), the new prediction is taken only inside the
8-connected component of (old mask XOR new mask) that holds the click, searched inside a square window of
``window`` px centred on the click (0 = the whole slice); when that component touches the window's edge
(and the window is not yet the whole slice) the window grows by ``growth`` and the component is searched
again, up to :data:`MAX_WINDOW_GROWTH` times its first side (nnInteractive's 4x), where the change is cut
at the window's edge. Everywhere else the old mask stays. When the decoder did not change the clicked pixel at all, there is
no such component and nothing changes: the merge is a veto, never a repair.

How this relates to the field (read, not copied):
- FocalClick (Chen et al. 2022), ``FocalPredictor.progressive_merge``: the component of (previous XOR new)
  holding the click, added when the clicked pixel was background, removed when it was foreground; cv2's
  default 8-connectivity, over the whole image. Where the clicked pixel did not change, its label is the
  XOR's background and it takes every unchanged pixel; here that case keeps the old mask instead.
  FocalClick's window (its focus crop, 1.4x the changed region's box) bounds where its refiner predicts.
- nnInteractive (Isensee et al. 2025) predicts only in a patch around the newest interaction and pastes it
  back, enlarging the patch (1.5x, up to 4x) while the change touches its border: the window and growth here.

Masks are bool (H, W) slices; clicks (x, y) = (column, row). The low-res logits SAM feeds back as mask input
(N, 1, 256, 256) cover the padded square frame of the longest-side resize, so a slice region maps to it by
:func:`low_res_region` whatever the encoder's input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

REFINE_MODES = ("global", "local")
MERGE_CONNECTIVITY = 8  # FocalClick's (cv2's default): a change touching at a corner is one change
LOW_RES_SIDE = 256  # SAM's low-res logits: (N, 1, 256, 256) over the padded square input frame
MAX_WINDOW_GROWTH = 4.0  # nnInteractive's limit: a window grows to at most 4x its first side


@dataclass(frozen=True)
class Refinement:
    """How a round's new mask replaces the old one: ``mode`` global | local; for local, the square ``window``
    (px side centred on the click, 0 = the whole slice) and the ``growth`` factor applied while the accepted
    change touches the window's edge."""

    mode: str = "global"
    window: int = 0
    growth: float = 1.4

    def __post_init__(self):
        if self.mode not in REFINE_MODES:
            raise ValueError(f"refine {self.mode!r}: choose from {', '.join(REFINE_MODES)}")
        if int(self.window) != self.window or self.window < 0:
            raise ValueError(f"refine window must be a whole number of px >= 0, got {self.window!r}")
        if not self.growth > 1.0:
            raise ValueError(f"refine growth must be > 1, got {self.growth!r}")

    @property
    def local(self) -> bool:
        return self.mode == "local"

    def record(self) -> dict:
        """What results files and run keys record."""
        if not self.local:
            return {"mode": "global"}
        return {"mode": "local", "window": int(self.window), "growth": float(self.growth)}


def _window(x: int, y: int, side: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) of a square of ``side`` px centred on (x, y), clipped to the slice."""
    half = side / 2.0
    return (max(0, int(np.floor(y - half))), min(shape[0], int(np.ceil(y + half)) + 1),
            max(0, int(np.floor(x - half))), min(shape[1], int(np.ceil(x + half)) + 1))


def change_component(old: np.ndarray, new: np.ndarray, x: int, y: int) -> np.ndarray:
    """bool (H, W): the 8-connected component of (old XOR new) holding pixel (x, y); empty if it did not change."""
    changed = np.logical_xor(old, new)
    if not changed[y, x]:
        return np.zeros_like(changed)
    _, labels = cv2.connectedComponents(changed.astype(np.uint8), connectivity=MERGE_CONNECTIVITY)
    return labels == labels[y, x]


def accepted_region(old: np.ndarray, new: np.ndarray, x: int, y: int, refinement: Refinement) -> np.ndarray:
    """bool (H, W): where ``new`` replaces ``old`` after a click at (x, y) (module docstring); all True for global."""
    old, new = np.asarray(old, dtype=bool), np.asarray(new, dtype=bool)
    if old.shape != new.shape or old.ndim != 2:
        raise ValueError(f"expected two bool (H, W) masks of one shape, got {old.shape} and {new.shape}")
    if not refinement.local:
        return np.ones_like(old)
    h, w = old.shape
    first = float(refinement.window) if refinement.window else float(max(h, w)) * 2
    side = first
    while True:
        r0, r1, c0, c1 = _window(x, y, side, (h, w))
        part = change_component(old[r0:r1, c0:c1], new[r0:r1, c0:c1], x - c0, y - r0)
        whole = r0 == 0 and c0 == 0 and r1 == h and c1 == w
        touches = ((part[0].any() and r0 > 0) or (part[-1].any() and r1 < h)
                   or (part[:, 0].any() and c0 > 0) or (part[:, -1].any() and c1 < w))
        if whole or not touches or side >= first * MAX_WINDOW_GROWTH:
            region = np.zeros_like(old)
            region[r0:r1, c0:c1] = part
            return region
        side = min(side * refinement.growth, first * MAX_WINDOW_GROWTH)


def low_res_region(region: np.ndarray) -> np.ndarray:
    """bool (H, W) slice region -> bool (256, 256) on SAM's low-res frame (the longest side scaled to 256,
    padded at the bottom and right; nearest-neighbour)."""
    h, w = region.shape
    scale = LOW_RES_SIDE / max(h, w)
    rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
    small = cv2.resize(region.astype(np.uint8), (rw, rh), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = np.zeros((LOW_RES_SIDE, LOW_RES_SIDE), dtype=bool)
    out[:rh, :rw] = small
    return out


def merge(old_logits: torch.Tensor, old_low: torch.Tensor, new_logits: torch.Tensor, new_low: torch.Tensor,
          region: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (H, W), low-res (1, 256, 256)): the new ones inside bool (H, W) ``region``, the old elsewhere
    (on the low-res frame through :func:`low_res_region`, so the next round's mask input is the merged mask)."""
    inside = torch.from_numpy(region).to(new_logits.device)
    inside_low = torch.from_numpy(low_res_region(region)).to(new_low.device)[None]
    return (torch.where(inside, new_logits, old_logits.to(new_logits.device, new_logits.dtype)),
            torch.where(inside_low, new_low, old_low.to(new_low.device, new_low.dtype)))


def refine_round(old_logits: torch.Tensor, old_low: torch.Tensor, new_logits: torch.Tensor, new_low: torch.Tensor,
                 click: tuple[int, int], refinement: Refinement) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's round under ``refinement``: (logits float (H, W), low-res float (1, 256, 256)) to keep.
    ``click`` is (x, y) of the round's click; global keeps the new decode as it is."""
    if not refinement.local:
        return new_logits, new_low
    region = accepted_region(old_logits.cpu().numpy() > 0, new_logits.cpu().numpy() > 0, *click, refinement)
    return merge(old_logits, old_low, new_logits, new_low, region)

