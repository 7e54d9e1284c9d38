"""A synthetic, deterministic abdominal CT phantom in BTCV format (the suite's stand-in for BTCV).

The real BTCV data (Synapse "RawData") cannot be downloaded everywhere, so this package draws
look-alike volumes: an axial stack through the upper abdomen of a supine patient in the
portal-venous phase, with the 13 BTCV organs at their usual places, sizes, through-plane extents
and Hounsfield values, among distractors (spine, ribs, muscle, fat, bowel loops, colon, a CT table),
then blurred (partial volume) and noised like a CT scanner's output.

**It is synthetic data, not BTCV.** Numbers measured on it say nothing about real patients.

Conventions (the same as the real data once reoriented, see :mod:`utils.data.dataset`):

* Arrays are indexed ``[x, y, z]`` in RAS+ voxel order: axis 0 increases toward the patient's
  right, axis 1 toward anterior, axis 2 toward superior. The affine is
  ``diag(spacing_x, spacing_y, spacing_z, 1)`` plus a translation that puts the volume's centre at
  world (0, 0, 0) mm, so ``nibabel.aff2axcodes(affine) == ("R", "A", "S")``.
* Labels (uint8): 0 background, 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder,
  5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal and splenic veins,
  11 pancreas, 12 right adrenal gland, 13 left adrenal gland (see :mod:`utils.core.organs`).
* Images are int16 Hounsfield units clipped to [-1024, 3071].

Modules, in the order a volume is made:
- ``anatomy``: the config and affine, body-unit coordinates, and the shapes every layer is drawn with.
- ``tissues``: skin, fat, muscle wall, CT table, bowel and colon, spine and ribs (drawn first).
- ``organs``: the 13 organs' places, sizes and CT numbers.
- ``volume``: the layers in order, then the scanner's blur and noise: :func:`make_volume`.
- ``writing``: the BTCV-layout NIfTI files and the ``PHANTOM.json`` marker: :func:`write_phantom_dataset`.
"""
from utils.data.phantom.anatomy import (
    ABDOMEN_EXTENT,
    BAND_EXTENT,
    BAND_MM,
    EXTENTS,
    PHANTOM_CASE_IDS,
    PhantomConfig,
    phantom_affine,
)
from utils.data.phantom.volume import make_volume
from utils.data.phantom.writing import PHANTOM_NOTE, PHANTOM_VERSION, write_phantom_dataset

__all__ = [
    "ABDOMEN_EXTENT",
    "BAND_EXTENT",
    "BAND_MM",
    "EXTENTS",
    "PHANTOM_CASE_IDS",
    "PHANTOM_NOTE",
    "PHANTOM_VERSION",
    "PhantomConfig",
    "phantom_affine",
    "make_volume",
    "write_phantom_dataset",
]
