"""The synthetic BTCV-format phantom: determinism, anatomy (RAS order), HU ranges, through-plane
extents, NIfTI round trip and the skip/rewrite behaviour of write_phantom_dataset."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from utils.core.organs import NUM_ORGANS
from utils.data.phantom import (
    ABDOMEN_EXTENT,
    BAND_EXTENT,
    PHANTOM_CASE_IDS,
    PHANTOM_VERSION,
    PhantomConfig,
    make_volume,
    phantom_affine,
    write_phantom_dataset,
)

SMALL = PhantomConfig(shape=(96, 96, 12), n_volumes=3)
ANATOMY = PhantomConfig(shape=(128, 128, 16), n_volumes=3)
SPLEEN, R_KIDNEY, L_KIDNEY, LIVER, AORTA, PANCREAS = 1, 2, 3, 6, 8, 11


@pytest.fixture(scope="module")
def anatomy_volumes():
    return {c: make_volume(c, ANATOMY) for c in ANATOMY.case_ids}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom_a")
    raw = write_phantom_dataset(root, SMALL, progress=False)
    return root, raw


def _centroid(label, value):
    return np.argwhere(label == value).mean(axis=0)


def test_case_ids_and_config():
    assert PHANTOM_CASE_IDS == tuple(range(1, 11)) + tuple(range(21, 41))
    assert len(PHANTOM_CASE_IDS) == 30
    cfg = PhantomConfig()
    assert cfg.shape == (160, 160, 16) and cfg.spacing == (2.4, 2.4, 6.0)
    assert cfg.seed == 0 and cfg.n_volumes == 30
    assert SMALL.case_ids == (1, 2, 3)
    with pytest.raises(ValueError):
        PhantomConfig(n_volumes=31)


def test_make_volume_is_deterministic_and_typed():
    a = make_volume(2, SMALL)
    b = make_volume(2, SMALL)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    image, label, affine = a
    assert image.shape == label.shape == SMALL.shape
    assert image.dtype == np.int16 and label.dtype == np.uint8 and affine.dtype == np.float64
    assert image.min() >= -1024 and image.max() <= 3071
    assert label.max() <= NUM_ORGANS
    # other case / other seed -> other volume
    assert not np.array_equal(make_volume(3, SMALL)[1], label)
    other_seed = PhantomConfig(shape=SMALL.shape, seed=1, n_volumes=3)
    assert not np.array_equal(make_volume(2, other_seed)[0], image)


def test_affine_is_ras():
    affine = phantom_affine(ANATOMY)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(affine)[:3], ANATOMY.spacing)
    # centred: the middle of the volume maps to world ~0
    centre = affine @ np.array([*(np.array(ANATOMY.shape) - 1) / 2, 1.0])
    np.testing.assert_allclose(centre[:3], 0, atol=1e-9)


def test_every_organ_present(anatomy_volumes):
    for case, (_, label, _) in anatomy_volumes.items():
        present = set(np.unique(label).tolist())
        assert present == set(range(NUM_ORGANS + 1)), f"case {case}: missing {set(range(14)) - present}"


def test_left_right_and_anterior_posterior(anatomy_volumes):
    # RAS voxel order: higher axis-0 index = patient's right, higher axis-1 index = anterior.
    for case, (_, label, _) in anatomy_volumes.items():
        liver, spleen = _centroid(label, LIVER), _centroid(label, SPLEEN)
        rk, lk = _centroid(label, R_KIDNEY), _centroid(label, L_KIDNEY)
        assert liver[0] > spleen[0], case
        assert rk[0] > spleen[0] and rk[0] > lk[0], case
        assert liver[0] > lk[0], case
        assert _centroid(label, AORTA)[1] < _centroid(label, PANCREAS)[1], case  # aorta posterior
        # body roughly centred; liver on the right half, spleen on the left half
        assert liver[0] > label.shape[0] / 2 > spleen[0], case


def test_hu_ranges(anatomy_volumes):
    kernel = np.ones((3, 3), np.uint8)
    for case, (image, label, _) in anatomy_volumes.items():
        assert 70 <= np.median(image[label == LIVER]) <= 130, case
        # aorta interior (eroded in-plane, away from the partial-volume rim)
        aorta = np.stack([cv2.erode((label[:, :, k] == AORTA).astype(np.uint8), kernel) for k in range(label.shape[2])], -1)
        assert aorta.sum() > 0
        assert 140 <= np.median(image[aorta > 0]) <= 210, case
        assert image.max() > 300, case  # bone
        assert np.sum((image > -150) & (image < -50)) > 0.02 * image.size, case  # fat
        # air in the corners, outside the body
        corner = image[:8, -8:, :]
        assert abs(np.median(corner) + 1000) < 30, case


def test_through_plane_extent(anatomy_volumes):
    for case, (_, label, _) in anatomy_volumes.items():
        per_slice = lambda v: (label == v).any(axis=(0, 1))  # noqa: E731
        for organ in (LIVER, SPLEEN, 7, AORTA, 9):
            assert per_slice(organ).all(), (case, organ)
        for organ in (12, 13, 5):  # adrenals and esophagus: only part of the stack
            assert 0 < per_slice(organ).mean() < 1, (case, organ)
        # kidneys in the lower part of the stack, adrenals in the upper part
        z = np.arange(label.shape[2])
        assert z[per_slice(R_KIDNEY)].mean() < z[per_slice(12)].mean(), case
        assert not per_slice(R_KIDNEY)[-1] and per_slice(R_KIDNEY)[0], case


ABDOMEN = PhantomConfig(shape=(128, 128, 50), spacing=(2.4, 2.4, 4.95), extent=ABDOMEN_EXTENT, cases=(1, 35))
GALLBLADDER, ESOPHAGUS, STOMACH, IVC, R_ADRENAL, L_ADRENAL = 4, 5, 7, 9, 12, 13


@pytest.fixture(scope="module")
def abdomen_volumes():
    return {c: make_volume(c, ABDOMEN) for c in ABDOMEN.case_ids}


def _slices_of(label, organ):
    return np.nonzero((label == organ).any(axis=(0, 1)))[0]


def test_abdomen_extent_organs_begin_and_end_inside_the_stack(abdomen_volumes):
    """The 3-D stage's whole upper abdomen (issue 21): ~250 mm, and every organ but the aorta and IVC (the whole
    stack) and the esophagus (the upper half, up to the top) has a first and a last slice inside the stack, at
    anatomically plausible levels (z = 0 is inferior)."""
    assert 240 <= ABDOMEN.shape[2] * ABDOMEN.spacing[2] <= 300 and ABDOMEN.spacing[2] <= 5
    for case, (_, label, _) in abdomen_volumes.items():
        Z = label.shape[2]
        for organ in (AORTA, IVC):
            assert len(_slices_of(label, organ)) == Z, (case, organ)
        extents = {o: _slices_of(label, o) for o in range(1, NUM_ORGANS + 1) if o not in (AORTA, IVC)}
        for organ, zs in extents.items():
            assert len(zs) and 0 < zs[0], (case, organ, zs)
            assert zs[-1] < Z - 1 or organ == ESOPHAGUS, (case, organ, zs)  # it leaves through the top, into the chest
            assert len(zs) == zs[-1] - zs[0] + 1, (case, organ)  # one run of slices, no gaps
        mm = ABDOMEN.spacing[2]
        # the liver dome above both kidneys' upper poles; the kidneys' lower poles in the lowest quarter
        assert extents[LIVER][-1] > max(extents[R_KIDNEY][-1], extents[L_KIDNEY][-1]), case
        assert max(extents[R_KIDNEY][0], extents[L_KIDNEY][0]) < Z / 4, case
        # the gallbladder and the adrenals are short; the esophagus is only in the upper half
        for organ in (GALLBLADDER, R_ADRENAL, L_ADRENAL):
            assert len(extents[organ]) * mm <= 60, (case, organ)
        assert extents[ESOPHAGUS][0] >= Z / 2, case
        # the adrenals sit on the kidneys' upper poles, below the liver dome
        assert extents[R_ADRENAL][0] < extents[R_KIDNEY][-1] < extents[R_ADRENAL][-1] < extents[LIVER][-1], case


def test_abdomen_extent_keeps_the_band_organ_sizes(abdomen_volumes, anatomy_volumes):
    """An organ is as big across the band in the long stack as in the band-only one (radii from the band's
    slices): the liver's largest cross-section differs by less than the per-volume size jitter allows."""
    for case in (1,):
        area = lambda label: (label == LIVER).sum(axis=(0, 1)).max() * 2.4 * 2.4  # noqa: E731
        long, band = area(abdomen_volumes[case][1]), area(anatomy_volumes[case][1])
        assert 0.6 < long / band < 1.6, (long, band)


def test_band_extent_is_the_default_and_unchanged():
    """The 2-D study's phantom must not change when the long stack was added (issue 21): a digest of one
    band-stack volume as generated before the ``extent`` option. If you change the generator on purpose,
    bump PHANTOM_VERSION and update this digest."""
    import hashlib

    assert PhantomConfig().extent == BAND_EXTENT == (0.0, 1.0)
    image, label, affine = make_volume(2, PhantomConfig(shape=(96, 96, 16), spacing=(2.4, 2.4, 6.0)))
    digest = hashlib.sha256(image.tobytes() + label.tobytes() + affine.tobytes()).hexdigest()[:16]
    assert digest == "b65b8c91a63229ac"
    with pytest.raises(ValueError, match="extent"):
        PhantomConfig(extent=(0.2, 1.0))  # must hold the band


def test_written_layout_and_roundtrip(written):
    root, raw = written
    assert raw == root / "RawData"
    marker = json.loads((root / "PHANTOM.json").read_text())
    assert marker["phantom_version"] == PHANTOM_VERSION and marker["synthetic"] is True
    assert "not" in marker["note"].lower() and "btcv" in marker["note"].lower()
    assert marker["config"]["shape"] == list(SMALL.shape)
    for case in SMALL.case_ids:
        img = nib.load(raw / "Training" / "img" / f"img{case:04d}.nii.gz")
        lab = nib.load(raw / "Training" / "label" / f"label{case:04d}.nii.gz")
        image, label, affine = make_volume(case, SMALL)
        for f in (img, lab):
            np.testing.assert_allclose(f.affine, affine)
            assert nib.aff2axcodes(f.affine) == ("R", "A", "S")
            np.testing.assert_allclose(f.header.get_zooms(), SMALL.spacing)
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(img.dataobj), image)
        np.testing.assert_array_equal(np.asarray(lab.dataobj), label)
    files = sorted(p.name for p in (raw / "Training").rglob("*") if p.is_file())
    assert files == sorted([f"img{c:04d}.nii.gz" for c in SMALL.case_ids] + [f"label{c:04d}.nii.gz" for c in SMALL.case_ids])


def test_written_files_are_byte_identical(written, tmp_path):
    # The gzip stream is written with mtime=0 and no file name, so equal arrays give equal bytes.
    _, raw_a = written
    raw_b = write_phantom_dataset(tmp_path, SMALL, progress=False)
    for sub in ("img", "label"):
        for p in sorted((raw_a / "Training" / sub).iterdir()):
            assert p.read_bytes() == (raw_b / "Training" / sub / p.name).read_bytes(), p.name


def test_rerun_skips_and_config_change_rewrites(tmp_path):
    raw = write_phantom_dataset(tmp_path, SMALL, progress=False)
    files = sorted((raw / "Training").rglob("*.nii.gz"))
    before = {p: p.stat().st_mtime_ns for p in files}
    os.utime(files[0], ns=(1, 1))  # a recognisable mtime: a rewrite would change it
    before[files[0]] = 1
    write_phantom_dataset(tmp_path, SMALL, progress=False)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    # a missing file is regenerated, identical to before
    lost = raw / "Training" / "label" / "label0002.nii.gz"
    old = lost.read_bytes()
    lost.unlink()
    write_phantom_dataset(tmp_path, SMALL, progress=False)
    assert lost.read_bytes() == old
    # other config: everything rewritten, stale volumes removed
    fewer = PhantomConfig(shape=SMALL.shape, seed=5, n_volumes=2)
    write_phantom_dataset(tmp_path, fewer, progress=False)
    assert sorted(p.name for p in (raw / "Training" / "img").iterdir()) == ["img0001.nii.gz", "img0002.nii.gz"]
    assert files[0].stat().st_mtime_ns != 1
    assert json.loads((tmp_path / "PHANTOM.json").read_text())["config"]["seed"] == 5
    np.testing.assert_array_equal(np.asarray(nib.load(raw / "Training" / "img" / "img0002.nii.gz").dataobj), make_volume(2, fewer)[0])


def test_changed_generator_code_rewrites_a_kept_phantom(tmp_path, monkeypatch):
    import utils.data.phantom.writing as phantom

    raw = write_phantom_dataset(tmp_path, SMALL, progress=False)
    kept = raw / "Training" / "img" / "img0001.nii.gz"
    os.utime(kept, ns=(1, 1))
    write_phantom_dataset(tmp_path, SMALL, progress=False)
    assert kept.stat().st_mtime_ns == 1  # same code: kept
    monkeypatch.setattr(phantom, "_generator_digest", lambda: "other generator code")
    write_phantom_dataset(tmp_path, SMALL, progress=False)
    assert kept.stat().st_mtime_ns != 1  # same config and version, other code: rewritten
    assert json.loads((tmp_path / "PHANTOM.json").read_text())["generator_sha256"] == "other generator code"


def test_refuses_to_overwrite_real_data(tmp_path):
    img_dir = tmp_path / "RawData" / "Training" / "img"
    img_dir.mkdir(parents=True)
    real = img_dir / "img0001.nii.gz"
    real.write_bytes(b"not a phantom")
    with pytest.raises(FileExistsError):
        write_phantom_dataset(tmp_path, SMALL, progress=False)
    assert real.read_bytes() == b"not a phantom"


def test_generator_digest_covers_every_module_of_the_phantom_package():
    import sys

    import utils.data.phantom.writing as writing
    from utils.core.hashing import files_digest

    loaded = {Path(m.__file__).resolve() for name, m in list(sys.modules.items())
              if name == "utils.data.phantom" or name.startswith("utils.data.phantom.")}
    assert {p.name for p in loaded} >= {"anatomy.py", "organs.py", "tissues.py", "volume.py", "writing.py"}
    files = writing._generator_files()
    assert loaded <= set(files)  # every module a volume is made with is hashed (test_hashing: any edit shows)
    assert writing._generator_digest() == files_digest(files, 16)
    marker = writing._marker(PhantomConfig())
    assert marker["generator_sha256"] == files_digest(files, 16) and marker["generator"] == "utils/data/phantom"
