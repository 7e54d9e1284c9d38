import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from synthetic import blob_volume, ras_affine, write_pair, write_rawdata

from utils.data.dataset import DataError, discover_cases, load_volume
from utils.data.slice_store import SliceStore, build_store, volume_to_display


def organ_slices(label):
    return [z for z in range(label.shape[2]) if label[:, :, z].any()]


def test_rawdata_split_and_slice_filter(tmp_path):
    root = write_rawdata(tmp_path / "btcv", case_ids=(1, 2, 35))
    cases, layout = discover_cases(root)
    assert layout == "RawData"
    assert {c.case_id: c.split for c in cases} == {"0001": "train", "0002": "train", "0035": "val"}
    store_path, summary = build_store(root, tmp_path / "slices", progress=False)
    store = SliceStore(tmp_path / "slices")
    assert store.path == store_path
    # exactly the slices that hold an organ, per volume, in order
    for i, case in enumerate((1, 2, 35)):
        _, label = blob_volume(seed=i)
        kept = [r.z for r in store.records if r.case_id == f"{case:04d}"]
        assert kept == organ_slices(label)
    record = store.records[0]
    image, label = store.load(0)
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    _, raw_label = blob_volume(seed=0)
    assert np.array_equal(label, volume_to_display(raw_label[:, :, record.z]))
    present = {int(o): int((label == o).sum()) for o in np.unique(label) if o}
    assert record.organs == present
    assert store.indices("val") == [r.index for r in store.records if r.case_id == "0035"]
    assert summary["slices"] == len(store)


def test_dataset_json_and_plain_folders_give_same_slices(tmp_path):
    raw = write_rawdata(tmp_path / "raw", case_ids=(1, 35))
    reference = SliceStore(build_store(raw, tmp_path / "s0", progress=False)[0])

    monai = tmp_path / "monai"
    shutil.copytree(raw / "RawData/Training", monai)
    (monai / "dataset_0.json").write_text(json.dumps({
        "training": [{"image": "img/img0001.nii.gz", "label": "label/label0001.nii.gz"}],
        "validation": [{"image": "img/img0035.nii.gz", "label": "label/label0035.nii.gz"}],
    }))
    nnunet = tmp_path / "nnunet"
    for case in (1, 35):
        (nnunet / "imagesTr").mkdir(parents=True, exist_ok=True)
        (nnunet / "labelsTr").mkdir(parents=True, exist_ok=True)
        shutil.copy(raw / f"RawData/Training/img/img{case:04d}.nii.gz", nnunet / f"imagesTr/btcv_{case:04d}_0000.nii.gz")
        shutil.copy(raw / f"RawData/Training/label/label{case:04d}.nii.gz", nnunet / f"labelsTr/btcv_{case:04d}.nii.gz")
    for root, layout in ((monai, "dataset_0.json"), (nnunet, "imagesTr/labelsTr folder")):
        assert discover_cases(root)[1] == layout
        store = SliceStore(build_store(root, tmp_path / f"s-{root.name}", progress=False)[0])
        assert len(store) == len(reference)
        for a, b in zip(store.records, reference.records):
            assert (a.z, a.organs) == (b.z, b.organs)
            assert np.array_equal(store.load(a.index)[1], reference.load(b.index)[1])
    assert [c.split for c in discover_cases(monai)[0]] == ["train", "val"]


def test_plain_folder_split_rule_one_in_five(tmp_path):
    for case in range(7):
        image, label = blob_volume(seed=case)
        write_pair(tmp_path / f"img/img{case:04d}x.nii.gz", tmp_path / f"label/label{case:04d}x.nii.gz",
                   image, label, ras_affine())
    cases, layout = discover_cases(tmp_path)
    assert layout == "img/label folder"
    assert [c.split for c in cases] == ["train"] * 4 + ["val"] + ["train"] * 2


def test_lps_volume_gives_same_slices_as_ras_twin(tmp_path):
    image, label = blob_volume(seed=3)
    ras = ras_affine()
    write_pair(tmp_path / "ras/img/img0001.nii.gz", tmp_path / "ras/label/label0001.nii.gz", image, label, ras)
    # The same scan stored LPS: x and y axes flipped in the array and negative in the affine.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = image.shape[0] - 1
    flip[1, 3] = image.shape[1] - 1
    lps = ras @ flip
    write_pair(tmp_path / "lps/img/img0001.nii.gz", tmp_path / "lps/label/label0001.nii.gz",
               image[::-1, ::-1].copy(), label[::-1, ::-1].copy(), lps)
    assert nib.aff2axcodes(lps) == ("L", "P", "S")
    a = SliceStore(build_store(tmp_path / "ras", tmp_path / "s1", progress=False)[0])
    b = SliceStore(build_store(tmp_path / "lps", tmp_path / "s2", progress=False)[0])
    assert len(a) == len(b) > 0
    for i in range(len(a)):
        ia, la = a.load(i)
        ib, lb = b.load(i)
        assert np.array_equal(la, lb) and np.allclose(ia, ib)


def test_rerun_reuses_and_changed_window_makes_new_store(tmp_path):
    root = write_rawdata(tmp_path / "btcv", case_ids=(1,))
    first, s1 = build_store(root, tmp_path / "slices", progress=False)
    again, s2 = build_store(root, tmp_path / "slices", progress=False)
    assert first == again and s2["reused"] and not s1["reused"]
    other, _ = build_store(root, tmp_path / "slices", window=(-125, 275), progress=False)
    assert other != first and first.exists()
    assert SliceStore(tmp_path / "slices").path == other  # 'current' follows the last run
    # changed input bytes -> new key
    image, label = blob_volume(seed=9)
    write_pair(root / "RawData/Training/img/img0001.nii.gz", root / "RawData/Training/label/label0001.nii.gz",
               image, label, ras_affine())
    assert build_store(root, tmp_path / "slices", window=(-125, 275), progress=False)[0] != other


def assert_fails_cleanly(root, out, match):
    with pytest.raises(DataError, match=match):
        build_store(root, out, progress=False)
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith((".tmp", "store-"))]


def test_missing_root_says_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match="--phantom"):
        discover_cases(tmp_path / "nowhere")


def test_image_without_label_and_label_without_image(tmp_path):
    root = write_rawdata(tmp_path / "a", case_ids=(1, 2))
    (root / "RawData/Training/label/label0002.nii.gz").unlink()
    assert_fails_cleanly(root, tmp_path / "out", r"img0002\.nii\.gz: image has no label")
    root = write_rawdata(tmp_path / "b", case_ids=(1, 2))
    (root / "RawData/Training/img/img0001.nii.gz").unlink()
    assert_fails_cleanly(root, tmp_path / "out", r"label0001\.nii\.gz: label has no image")


def test_shape_and_affine_mismatch(tmp_path):
    image, label = blob_volume()
    write_pair(tmp_path / "s/img/img0001.nii.gz", tmp_path / "s/label/label0001.nii.gz", image, label[:, :-2], ras_affine())
    assert_fails_cleanly(tmp_path / "s", tmp_path / "out", r"label0001\.nii\.gz: label shape")
    write_pair(tmp_path / "a/img/img0001.nii.gz", tmp_path / "a/label/label0001.nii.gz", image, label, ras_affine(),
               label_affine=ras_affine((2.0, 1.5, 5.0)))
    assert_fails_cleanly(tmp_path / "a", tmp_path / "out", r"label0001\.nii\.gz: label affine")


def test_label_values_outside_btcv(tmp_path):
    image, label = blob_volume()
    label[0, 0, 2] = 14
    write_pair(tmp_path / "v/img/img0001.nii.gz", tmp_path / "v/label/label0001.nii.gz", image, label, ras_affine())
    assert_fails_cleanly(tmp_path / "v", tmp_path / "out", r"label0001\.nii\.gz: label values \[14\.0\]")


def test_non_finite_voxels_are_refused_with_the_file_named(tmp_path):
    image, label = blob_volume()
    image = image.astype(np.float32)
    image[3, 4, 2] = np.nan
    image[5, 5, 1] = np.inf
    write_pair(tmp_path / "n/img/img0001.nii.gz", tmp_path / "n/label/label0001.nii.gz", image, label, ras_affine())
    assert_fails_cleanly(tmp_path / "n", tmp_path / "out", r"img0001\.nii\.gz: 2 of \d+ voxels are not finite")


def test_two_dimensional_nifti_is_refused_with_the_file_named(tmp_path):
    image, label = blob_volume()
    write_pair(tmp_path / "f/img/img0001.nii.gz", tmp_path / "f/label/label0001.nii.gz", image[:, :, 2],
               label[:, :, 2], ras_affine())
    assert_fails_cleanly(tmp_path / "f", tmp_path / "out", r"img0001\.nii\.gz: a 2-D image .* volumes are 3-D")


def test_truncated_gzip_names_the_file(tmp_path):
    root = write_rawdata(tmp_path / "t", case_ids=(1, 2))
    path = root / "RawData/Training/img/img0002.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_fails_cleanly(root, tmp_path / "out", r"img0002\.nii\.gz: cannot read")


def test_empty_volume_is_skipped_and_counted(tmp_path):
    root = write_rawdata(tmp_path / "e", case_ids=(1, 2))
    image, label = blob_volume()
    write_pair(root / "RawData/Training/img/img0002.nii.gz", root / "RawData/Training/label/label0002.nii.gz",
               image, np.zeros_like(label), ras_affine())
    with pytest.warns(UserWarning, match="label0002.nii.gz: no organ"):
        _, summary = build_store(root, tmp_path / "out", progress=False)
    assert summary["volumes"] == 1 and len(summary["skipped_empty_volumes"]) == 1


def test_load_volume_applies_window(tmp_path):
    image, label = blob_volume()
    image[0, 0, 0], image[1, 0, 0] = -1000, 1000
    write_pair(tmp_path / "w/img/img0001.nii.gz", tmp_path / "w/label/label0001.nii.gz", image, label, ras_affine())
    case = discover_cases(tmp_path / "w")[0][0]
    volume = load_volume(case, (-175, 250))
    expected = np.clip((image.astype(np.float32) + 175) / 425, 0, 1)
    assert np.allclose(volume.image, expected, atol=1e-6)
    assert volume.spacing == pytest.approx((1.5, 1.5, 5.0))


def test_montage_slices_cover_every_organ_in_the_store():
    from types import SimpleNamespace

    from preprocess_slices import pick_montage_slices

    def rec(index, case, organs):
        return SimpleNamespace(index=index, case_id=case, organs={o: 10 for o in organs})

    no_gallbladder = [o for o in range(1, 14) if o != 4]
    records = [rec(0, "a", no_gallbladder[:10]), rec(1, "a", no_gallbladder), rec(2, "b", no_gallbladder[:11]),
               rec(3, "c", [4]), rec(4, "d", [1, 2])]
    picks = pick_montage_slices(records, n=2)
    # The fullest slice, then the small one that adds the gallbladder, not the fuller slice of volume b.
    assert picks == [1, 3]
    assert set().union(*(records[i].organs for i in picks)) == set(range(1, 14))
    assert len(pick_montage_slices(records, n=10)) == 4  # one per volume at most
