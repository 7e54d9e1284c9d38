"""The 13 BTCV organs, in label order (label value = index + 1; 0 is background)."""
from __future__ import annotations

ORGANS: tuple[str, ...] = (
    "spleen",
    "right_kidney",
    "left_kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior_vena_cava",
    "portal_and_splenic_veins",
    "pancreas",
    "right_adrenal_gland",
    "left_adrenal_gland",
)
NUM_ORGANS = len(ORGANS)
MAX_LABEL = NUM_ORGANS

# Human-readable names used in tables and figures (the study report's spelling).
ORGAN_TITLES: tuple[str, ...] = (
    "Spleen",
    "Right Kidney",
    "Left Kidney",
    "Gallbladder",
    "Esophagus",
    "Liver",
    "Stomach",
    "Aorta",
    "Inferior Vena Cava",
    "Portal Vein and Splenic Vein",
    "Pancreas",
    "Right Adrenal Gland",
    "Left Adrenal Gland",
)


def organ_name(label: int) -> str:
    """Snake-case name of BTCV label ``label`` (1..13)."""
    if not 1 <= label <= NUM_ORGANS:
        raise ValueError(f"BTCV organ labels are 1..{NUM_ORGANS}, got {label}")
    return ORGANS[label - 1]


def organ_title(label: int) -> str:
    """Display name of BTCV label ``label`` (1..13)."""
    organ_name(label)
    return ORGAN_TITLES[label - 1]
