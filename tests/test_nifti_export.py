"""NIfTI export: a ground-truth label map goes MONAI -> RAS -> display slices -> writer -> nibabel and
comes back identical on the source grid, for RAS and non-RAS sources; and the logits merge."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synthetic import blob_volume, write_pair

from utils.data.dataset import CaseFiles, load_volume
from utils.data.nifti import (
    display_to_ras,
    merge_organ_logits,
    ras_shape,
    ras_to_display,
    ras_to_source,
    source_to_ras,
    write_label_nifti,
)
from utils.data.slice_store import DEFAULT_WINDOW, volume_to_display
from utils.eval.metrics3d import score_volume

SPACING = (0.8, 1.1, 5.0)  # mm along the source file's axes i, j, k


def affine_for(axcodes: str, spacing=SPACING, origin=(12.0, -40.0, 75.0)) -> np.ndarray:
    """Voxel -> world affine whose source axis a runs towards ``axcodes[a]`` (R/L, A/P, S/I)."""
    affine = np.eye(4)
    for axis, code in enumerate(axcodes):
        world = "RLAPSI".index(code) // 2
        sign = 1.0 if code in "RAS" else -1.0
        affine[:3, axis] = 0.0
        affine[world, axis] = sign * spacing[axis]
    affine[:3, 3] = origin
    return affine


def write_source(tmp_path: Path, axcodes: str) -> tuple[CaseFiles, np.ndarray]:
    """A CT + label pair stored with ``axcodes`` voxel axes; the CT is float-scaled int16 (slope/inter)."""
    image, label = blob_volume(shape=(24, 20, 6), organs=(6, 1, 8, 12))
    affine = affine_for(axcodes)
    case = CaseFiles("0001", tmp_path / "img" / "img0001.nii.gz", tmp_path / "label" / "label0001.nii.gz", "val")
    ct = nib.Nifti1Image(image.astype(np.float32) + 0.25, affine)
    ct.set_data_dtype(np.int16)  # nibabel stores float HU as scaled int16, as many scanners do
    write_pair(case.image, case.label, image, label, affine)
    nib.save(ct, case.image)
    scaled = nib.load(case.image).dataobj
    assert (scaled.slope, scaled.inter) != (1.0, 0.0)  # the writer must not inherit this scaling
    return case, label


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PLS", "SLP"])
def test_ground_truth_round_trip_through_monai_display_and_writer(tmp_path, axcodes):
    case, source_label = write_source(tmp_path, axcodes)
    source = nib.load(case.label)
    volume = load_volume(case, DEFAULT_WINDOW)  # MONAI: Orientationd to RAS
    # Our nibabel reorientation agrees with MONAI's, and the shape helper with both.
    assert np.array_equal(volume.label, source_to_ras(source_label, source.affine))
    assert volume.label.shape == ras_shape(source.shape, source.affine)
    display = np.stack([volume_to_display(volume.label[:, :, z]) for z in range(volume.label.shape[2])])
    assert np.array_equal(display, ras_to_display(volume.label))
    assert np.array_equal(display_to_ras(display), volume.label)

    for layout, prediction, src in (("display", display, case.label), ("ras", volume.label, case.image)):
        out = tmp_path / "pred" / layout / "0001.nii.gz"
        assert write_label_nifti(prediction, src, out, layout=layout) == out
        written = nib.load(out)
        assert written.shape == source.shape
        assert np.allclose(written.affine, source.affine, atol=0, rtol=0)
        assert int(written.header["sform_code"]) == int(source.header["sform_code"])
        assert int(written.header["qform_code"]) == int(source.header["qform_code"])
        assert nib.aff2axcodes(written.affine) == tuple(axcodes)
        assert written.get_data_dtype() == np.uint8
        data = np.asanyarray(written.dataobj)
        assert data.dtype == np.uint8
        assert np.array_equal(data, source_label)
        assert [p.name for p in out.parent.iterdir()] == ["0001.nii.gz"]  # no temp file left behind
        scores = score_volume(data, source_label, written.header.get_zooms()[:3])
        assert sorted(scores.organs) == [1, 6, 8, 12]
        for score in scores.organs.values():
            assert (score.dice, score.hd95_mm, score.nsd) == (1.0, 0.0, 1.0)


def test_display_orientation_row0_anterior_col0_right():
    ras = np.zeros((5, 4, 3), np.uint8)  # X=5 (left->right), Y=4 (posterior->anterior), Z=3
    ras[4, 3, 1] = 7  # the most right, most anterior voxel of slice 1
    display = ras_to_display(ras)
    assert display.shape == (3, 4, 5)
    assert display[1, 0, 0] == 7
    assert np.array_equal(display_to_ras(display), ras)


def test_ras_to_source_inverts_source_to_ras_for_every_axis_order():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 14, size=(3, 4, 5)).astype(np.uint8)
    for axcodes in ("RAS", "LPS", "PLS", "SLP", "IRA"):
        affine = affine_for(axcodes)
        assert np.array_equal(ras_to_source(source_to_ras(data, affine), affine), data)


def test_wrong_shape_or_labels_refused_and_nothing_written(tmp_path):
    case, label = write_source(tmp_path, "PLS")
    out = tmp_path / "pred" / "x.nii.gz"
    with pytest.raises(ValueError, match="does not fit the source grid"):
        write_label_nifti(label, case.label, out, layout="ras")  # source order (24, 20, 6) is RAS (20, 24, 6)
    with pytest.raises(ValueError, match="0..13"):
        write_label_nifti(np.full(ras_shape(label.shape, nib.load(case.label).affine), 14, np.uint8), case.label, out)
    with pytest.raises(ValueError, match="layout"):
        write_label_nifti(label, case.label, out, layout="lps")
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_merge_organ_logits_highest_wins_background_at_or_below_threshold():
    liver = np.array([[2.0, 2.0, -1.0, 0.0, -np.inf]], np.float32)
    spleen = np.array([[3.0, 1.0, -0.5, -np.inf, np.nan]], np.float32)
    merged = merge_organ_logits({6: liver, 1: spleen})
    assert merged.dtype == np.uint8
    assert merged.tolist() == [[1, 6, 0, 0, 0]]
    tie = merge_organ_logits({6: np.ones((1, 1)), 1: np.ones((1, 1))})
    assert tie.tolist() == [[1]]  # ties go to the lower label
    probs = merge_organ_logits({6: np.array([[0.4, 0.6]])}, threshold=0.5)
    assert probs.tolist() == [[0, 6]]
    assert merge_organ_logits({}, shape=(2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="share one grid"):
        merge_organ_logits({6: np.zeros((2, 2)), 1: np.zeros((2, 3))})
    with pytest.raises(ValueError):
        merge_organ_logits({14: np.zeros((2, 2))})
