"""segment_volume.py: a CT without labels. Coordinates (voxel and mm, on LPS and permuted files) against
nibabel's own reorientation, the prompt file's checks, and the end-to-end result against segmentation_3d.py's
box3d on the same volume, box and range."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from synthetic import blob_volume, write_pair

import preprocess_slices
import segment_volume
import segmentation_3d
from utils.data.ct import load_ct
from utils.data.dataset import DataError
from utils.data.nifti import ras_to_display, source_to_ras
from utils.inference.prompt_file import box3d_prompt_spec, read_prompt_file
from utils.inference.prompts import bound_box

AFFINES = {
    "lps": np.array([[-1.5, 0, 0, 30.0], [0, -1.5, 0, 25.0], [0, 0, 5.0, 10.0], [0, 0, 0, 1]]),
    # axes permuted (the file's first axis runs cranio-caudally) and one flipped: nothing is where RAS has it
    "permuted": np.array([[0, 0, 1.5, -20.0], [0, -1.5, 0, 40.0], [4.0, 0, 0, -7.0], [0, 0, 0, 1]]),
}


def write_ct(tmp_path, orientation, shape=(40, 36, 6)):
    image, label = blob_volume(shape, seed=5)
    if orientation == "permuted":  # the same blobs, stored with the file's axes (k, j, i)
        image, label = image.transpose(2, 1, 0).copy(), label.transpose(2, 1, 0).copy()
    img, lab = tmp_path / f"img_{orientation}.nii.gz", tmp_path / f"label_{orientation}.nii.gz"
    write_pair(img, lab, image, label, AFFINES[orientation])
    return img, lab


@pytest.mark.parametrize("orientation", ["lps", "permuted"])
def test_voxel_points_land_where_nibabel_reorients_them(tmp_path, orientation):
    img, _ = write_ct(tmp_path, orientation)
    ct = load_ct(img)
    shape = ct.shape
    # The oracle: a volume whose every voxel holds its own flat index, reoriented by nibabel (source_to_ras)
    # and cut into display slices (ras_to_display): where the index lands is where the point must land.
    flat = np.arange(np.prod(shape)).reshape(shape)
    display = ras_to_display(source_to_ras(flat, ct.affine))
    assert display.shape == ct.images.shape
    rng = np.random.default_rng(0)
    for _ in range(50):
        ijk = [int(rng.integers(0, n)) for n in shape]
        z, row, col = ct.voxel_to_display(ijk)
        assert display[z, row, col] == np.ravel_multi_index(ijk, shape)
        assert ct.display_to_voxel(z, row, col) == ijk
        world = (ct.affine @ np.array([*ijk, 1.0]))[:3]
        assert ct.to_display(world + 0.3, "mm") == (z, row, col)  # nearest voxel
    with pytest.raises(DataError, match="outside the volume"):
        ct.voxel_to_display([shape[0], 0, 0])


def test_the_ct_is_windowed_and_cut_as_the_store_cuts_it(tmp_path):
    from utils.data.slice_store import SliceStore, build_store

    img, lab = write_ct(tmp_path, "lps")
    root = tmp_path / "btcv"
    image, label = nib.load(img), nib.load(lab)
    write_pair(root / "RawData/Training/img/img0001.nii.gz", root / "RawData/Training/label/label0001.nii.gz",
               np.asarray(image.dataobj), np.asarray(label.dataobj), image.affine)
    path, _ = build_store(root, tmp_path / "slices", progress=False, slice_margin=9)
    store = SliceStore(path)
    ct = load_ct(img)
    for record in store.records:
        assert np.array_equal(store.load(record.index)[0].astype(np.float32), ct.images[record.z])
        assert tuple(record.spacing) == pytest.approx(ct.spacing)


@pytest.mark.parametrize("orientation", ["lps", "permuted"])
def test_prompts_in_voxels_and_in_mm_give_the_same_display_prompts(tmp_path, orientation):
    img, lab = write_ct(tmp_path, orientation)
    ct = load_ct(img)
    label = nib.load(lab)
    truth = ras_to_display(source_to_ras(np.asarray(label.dataobj).astype(np.uint8), label.affine))
    spec = box3d_prompt_spec(truth, ct)
    (tmp_path / "voxel.json").write_text(json.dumps(spec))
    to_mm = lambda p: (ct.affine @ np.array([*p, 1.0]))[:3].tolist()  # noqa: E731
    mm = {"coordinates": "mm", "organs": [{"organ": e["organ"], "box": [to_mm(c) for c in e["box"]],
                                           "first": to_mm(e["first"]), "last": to_mm(e["last"])}
                                          for e in spec["organs"]]}
    (tmp_path / "mm.json").write_text(json.dumps(mm))
    by_voxel, by_mm = read_prompt_file(tmp_path / "voxel.json", ct), read_prompt_file(tmp_path / "mm.json", ct)
    assert [p.organ for p in by_voxel] == [int(o) for o in np.unique(truth) if o > 0]
    for a, b in zip(by_voxel, by_mm):
        assert a.record() == b.record()
        mask = truth == a.organ
        on = np.flatnonzero(mask.any(axis=(1, 2)))
        assert a.z_limits == (on[0], on[-1]) and a.prompt_type == "bound_box"
        assert a.prompt.box.tolist() == bound_box(mask[a.key_z]).tolist()  # the display slice's tight box


def bad_file(tmp_path, ct_path, spec, match):
    path = tmp_path / "bad.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    with pytest.raises(DataError, match=match) as caught:
        read_prompt_file(path, load_ct(ct_path))
    assert str(path) in str(caught.value)


def test_every_bad_prompt_is_one_clear_error(tmp_path):
    img, _ = write_ct(tmp_path, "lps")  # shape (40, 36, 6)
    box = [[5, 5, 2], [20, 18, 2]]
    cases = [
        ("{not json", "not a readable JSON"),
        ({"organs": []}, "at least one organ"),
        ({"organs": [{"organ": "liver", "box": [[5, 5, 2], [50, 18, 2]]}]}, "outside the volume"),
        ({"organs": [{"organ": "liver", "box": [[5, 5, 2], [5, 5, 2]]}]}, "empty box"),
        ({"organs": [{"organ": "liver", "box": [[5, 5, 2], [20, 18, 3]]}]}, "on one slice"),
        ({"organs": [{"organ": "liver", "box": box, "first": [0, 0, 3], "last": [0, 0, 5]}]}, "outside its first"),
        ({"organs": [{"organ": "liver", "box": box, "first": [0, 0, 0]}]}, "both \"first\" and \"last\""),
        ({"organs": [{"organ": "liver", "box": box, "last": [0, 0, 9]}]}, "both"),
        ({"organs": [{"organ": "lung", "box": box}]}, "not a BTCV organ"),
        ({"organs": [{"organ": 14, "box": box}]}, "outside 1..13"),
        ({"organs": [{"organ": "liver", "box": box}, {"organ": 6, "box": box}]}, "one entry per organ"),
        ({"organs": [{"organ": "liver", "points": [[5, 5, 2]], "labels": [0]}]}, "at least one positive"),
        ({"organs": [{"organ": "liver", "points": [[5, 5, 2], [6, 6, 2]], "labels": [1]}]}, "one 0 or 1 per point"),
        ({"organs": [{"organ": "liver"}]}, "give a \"box\""),
        ({"coordinates": "pixels", "organs": [{"organ": "liver", "box": box}]}, "coordinates"),
        ({"organs": [{"organ": "liver", "box": box, "color": "red"}]}, "unknown keys"),
        ({"organs": [{"box": box}]}, "--classifier"),  # an unnamed organ needs a classifier to name it
        ({"organs": [{"organ": "auto", "box": box}]}, "\"organ\": \"auto\", but no --classifier"),
        ({"organs": [{"organ": "Liver", "box": box}, {"organ": "LIVER", "box": box}]}, "one entry per organ"),
    ]
    for spec, match in cases:
        bad_file(tmp_path, img, spec, match)


def test_organ_names_are_read_whatever_their_case_or_spacing(tmp_path):
    img, _ = write_ct(tmp_path, "lps")
    box = [[5, 5, 2], [20, 18, 2]]
    path = tmp_path / "names.json"
    path.write_text(json.dumps({"organs": [{"organ": "Liver", "box": box}, {"organ": "right kidney", "box": box},
                                           {"organ": " Left-Adrenal-Gland ", "box": box}]}))
    assert [p.organ for p in read_prompt_file(path, load_ct(img))] == [6, 2, 13]


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    base = tmp_path_factory.mktemp("segment_volume")
    assert preprocess_slices.main(["--phantom", "--data-root", str(base / "phantom"), "--phantom-cases", "35",
                                   "--phantom-size", "64", "--phantom-slices", "6", "--slice-margin", "1",
                                   "--out", str(base / "slices"), "--results", str(base / "pre"),
                                   "--no-progress"]) == 0
    assert segmentation_3d.main(["--slices", str(base / "slices"), "--cache-dir", str(base / "cache"),
                                 "--results", str(base / "results"), "--no-progress", "--prompts", "bound_box",
                                 "--modes", "box3d,propagate"]) == 0
    return base


def phantom_files(base):
    raw = base / "phantom" / "RawData" / "Training"
    return raw / "img" / "img0035.nii.gz", raw / "label" / "label0035.nii.gz"


def phantom_box3d_spec(base):
    """(CT path, label path, display-stack truth, the box3d prompt spec of every organ) of the phantom case."""
    img, lab = phantom_files(base)
    label = nib.load(lab)
    truth = ras_to_display(source_to_ras(np.asarray(label.dataobj).round().astype(np.uint8), label.affine))
    return img, lab, truth, box3d_prompt_spec(truth, load_ct(img))


def test_output_equals_box3d_with_the_same_box_and_range_on_the_source_grid(dense, tmp_path):
    img, lab = phantom_files(dense)
    ct = load_ct(img)
    label = nib.load(lab)
    truth = ras_to_display(source_to_ras(np.asarray(label.dataobj).round().astype(np.uint8), label.affine))
    (tmp_path / "prompts.json").write_text(json.dumps(box3d_prompt_spec(truth, ct)))
    out = tmp_path / "out" / "case35.nii.gz"
    assert segment_volume.main(["--image", str(img), "--prompts", str(tmp_path / "prompts.json"), "--out", str(out),
                                "--no-progress"]) == 0
    written = nib.load(out)
    assert written.shape == label.shape and np.array_equal(written.affine, label.affine)
    box3d = np.asarray(nib.load(dense / "results" / "task3d" / "predictions" / "box3d" / "bound_box" /
                                "0035.nii.gz").dataobj)
    mine = np.asarray(written.dataobj)
    # The same prompts through the same decoder; the embeddings are encoded in other batches than the store's
    # cache, which moves float sums in their last bits: a voxel may flip where a logit is ~0, no more.
    assert (mine != box3d).mean() < 1e-3
    for organ in np.setdiff1d(np.unique(box3d), [0]):
        a, b = mine == organ, box3d == organ
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99
    sidecar = json.loads(out.with_name("case35.json").read_text())
    assert sidecar["labels_used"].startswith("none") and sidecar["checkpoint_sha256"]
    assert sidecar["decoder"]["source"].startswith("the model's own")
    given = json.loads((tmp_path / "prompts.json").read_text())
    assert sidecar["prompts_given"] == given  # the file as given, copied from its one read
    assert set(sidecar["organs"]) == {o["organ"] for o in given["organs"]}
    for trace in sidecar["organs"].values():
        lo, hi = trace["predicted_z_range"]
        assert trace["z_range"][0] <= lo <= hi <= trace["z_range"][1]


def test_without_a_range_it_propagates_as_segmentation_3d_propagate_does(dense, tmp_path):
    img, _, _, spec = phantom_box3d_spec(dense)
    for entry in spec["organs"]:
        del entry["first"], entry["last"]
    (tmp_path / "prompts.json").write_text(json.dumps(spec))
    out = tmp_path / "p.nii.gz"
    assert segment_volume.main(["--image", str(img), "--prompts", str(tmp_path / "prompts.json"), "--out", str(out),
                                "--no-progress"]) == 0
    # propagate runs over the store's slices (organ slices +- 1: here the whole 6-slice volume)
    ref = np.asarray(nib.load(dense / "results" / "task3d" / "predictions" / "propagate" / "bound_box" /
                              "0035.nii.gz").dataobj)
    assert (np.asarray(nib.load(out).dataobj) != ref).mean() < 1e-3


def test_embeddings_from_a_store_of_this_ct_are_read_not_encoded(dense, tmp_path, capsys):
    """--embeddings-from: every slice the 3-D store's cache holds is matched by its pixels and read (none encoded);
    the map is box3d's, now from the very embeddings box3d decoded."""
    img, lab = phantom_files(dense)
    ct = load_ct(img)
    label = nib.load(lab)
    truth = ras_to_display(source_to_ras(np.asarray(label.dataobj).round().astype(np.uint8), label.affine))
    (tmp_path / "prompts.json").write_text(json.dumps(box3d_prompt_spec(truth, ct)))
    out = tmp_path / "reused.nii.gz"
    assert segment_volume.main(["--image", str(img), "--prompts", str(tmp_path / "prompts.json"), "--out", str(out),
                                "--embeddings-from", str(dense / "slices"), "--cache-dir", str(dense / "cache"),
                                "--no-progress"]) == 0
    timing = json.loads(out.with_name("reused.json").read_text())["timing"]
    assert timing["encoded_slices"] == 0 and timing["reused_slices"] == len(ct.images) == 6
    box3d = np.asarray(nib.load(dense / "results" / "task3d" / "predictions" / "box3d" / "bound_box" /
                                "0035.nii.gz").dataobj)
    assert (np.asarray(nib.load(out).dataobj) != box3d).mean() < 1e-4
    # an empty cache (another cache root) gives nothing to read: every slice is encoded, as without the flag
    out2 = tmp_path / "encoded.nii.gz"
    assert segment_volume.main(["--image", str(img), "--prompts", str(tmp_path / "prompts.json"), "--out", str(out2),
                                "--embeddings-from", str(dense / "slices"), "--cache-dir", str(tmp_path / "empty"),
                                "--no-progress"]) == 0
    timing = json.loads(out2.with_name("encoded.json").read_text())["timing"]
    assert timing["reused_slices"] == 0 and timing["encoded_slices"] > 0
    from utils.scaffold.boundary import run_script

    capsys.readouterr()
    code = run_script(segment_volume.main, ["--image", str(img), "--prompts", str(tmp_path / "prompts.json"),
                                            "--embeddings-from", str(tmp_path / "no_store"), "--out",
                                            str(tmp_path / "x.nii.gz"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--embeddings-from" in err and "no slice store" in err and "Traceback" not in err


def test_a_classifier_checkpoint_is_refused_before_loading(dense, tmp_path, capsys):
    from utils.scaffold.boundary import run_script

    img, _ = phantom_files(dense)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"organs": [{"organ": "liver", "box": [[10, 10, 2], [30, 30, 2]]}]}))
    fake = tmp_path / "classifier.pt"
    torch.save({"model": {"classifier.weight": torch.zeros(2, 2)}}, fake)
    code = run_script(segment_volume.main, ["--image", str(img), "--prompts", str(prompts), "--finetuned", str(fake),
                                            "--out", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err
    assert code == 1 and "Task 3 classifier" in err and "Traceback" not in err
    assert not (tmp_path / "x.nii.gz").exists()


def test_a_bad_prompt_file_ends_as_one_error_line(dense, tmp_path, capsys):
    from utils.scaffold.boundary import run_script

    img, _ = phantom_files(dense)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"organs": [{"organ": "liver", "box": [[10, 10, 2], [300, 30, 2]]}]}))
    code = run_script(segment_volume.main, ["--image", str(img), "--prompts", str(prompts)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1 and "outside the volume" in err and "Traceback" not in err


@pytest.mark.parametrize("orientation", ["lps", "permuted"])
def test_the_label_map_lies_on_a_non_ras_source_grid_where_the_organ_is(tmp_path, orientation):
    img, lab = write_ct(tmp_path, orientation, shape=(48, 40, 5))
    ct = load_ct(img)
    label = nib.load(lab)
    truth_display = ras_to_display(source_to_ras(np.asarray(label.dataobj).astype(np.uint8), label.affine))
    spec = box3d_prompt_spec(np.where(truth_display == 6, 6, 0).astype(np.uint8), ct)  # the liver's 3-D box
    (tmp_path / "p.json").write_text(json.dumps(spec))
    out = tmp_path / "liver.nii.gz"
    assert segment_volume.main(["--image", str(img), "--prompts", str(tmp_path / "p.json"), "--out", str(out),
                                "--no-progress", "--score-against", str(lab)]) == 0
    written = nib.load(out)
    assert written.shape == label.shape and np.array_equal(written.affine, label.affine)
    pred, truth = np.asarray(written.dataobj) == 6, np.asarray(label.dataobj) == 6
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.8  # a flipped or transposed write would put the off-centre disk elsewhere
    sidecar = json.loads(out.with_name("liver.json").read_text())
    assert sidecar["scored_against"]["organs"]["liver"]["dice"] == pytest.approx(dice)


def classifier_checkpoint(path, favour: int | None = None):
    """A Task 3 classifier run's best.pt for LiteMedSAM: the model's own prompt encoder and a classifying decoder
    with an untrained head; ``favour`` = an organ label its head always picks (a huge bias)."""
    from modified_classifier import ClassifyingMaskDecoder
    from utils.models.sam import load_model

    torch.manual_seed(0)
    model = load_model("lite_medsam")
    classifier = ClassifyingMaskDecoder(model.sam.mask_decoder)
    if favour is not None:
        with torch.no_grad():
            classifier.class_prediction_head.layers[-1].bias[favour - 1] = 10.0
    module = torch.nn.ModuleDict({"prompt_encoder": model.sam.prompt_encoder, "classifier": classifier})
    torch.save({"model": module.state_dict(), "epoch": 0,
                "run": {"key": "test", "identity": {"task": "task3", "prompt": "one_central_point"}}}, path)
    return path


def test_the_classifier_names_an_unnamed_organ_as_task3_would_on_the_written_mask(dense, tmp_path):
    """The oracle: the written label map's mask on the entry's key slice, its distance-transform centre as Task 3's
    one_central_point prompt, and the classifier run by hand on that slice's embedding encoded here."""
    from modified_classifier import ClassifyingMaskDecoder
    from utils.inference.decoding import prompt_inputs
    from utils.inference.propagation import next_prompt
    from utils.models.sam import load_model

    img, lab = phantom_files(dense)
    ct = load_ct(img)
    label = nib.load(lab)
    truth = ras_to_display(source_to_ras(np.asarray(label.dataobj).round().astype(np.uint8), label.affine))
    entry = next(e for e in box3d_prompt_spec(truth, ct)["organs"] if e["organ"] == "liver")
    entry["organ"] = "auto"
    (tmp_path / "p.json").write_text(json.dumps({"coordinates": "voxel", "organs": [entry]}))
    checkpoint = classifier_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "named.nii.gz"
    from utils.scaffold.boundary import run_script

    # a random-weight head is unsure of everything: the default threshold refuses to guess, naming the entry
    code = run_script(segment_volume.main, ["--image", str(img), "--prompts", str(tmp_path / "p.json"), "--out",
                                            str(out), "--classifier", str(checkpoint), "--no-progress"])
    assert code == 1 and not out.exists()
    assert segment_volume.main(["--image", str(img), "--prompts", str(tmp_path / "p.json"), "--out", str(out),
                                "--classifier", str(checkpoint), "--no-progress", "--min-name-probability", "0"]) == 0
    sidecar = json.loads(out.with_name("named.json").read_text())
    (named,) = sidecar["naming"]["entries"]
    assert named["named_by"] == "classifier" and named["organ_written"] == named["organ"]
    assert named["probability_of_organ_written"] == named["probability"]
    assert "not recorded" in sidecar["naming"]["classifier"]["trained_on"]  # a hand-made checkpoint says nothing
    organ = segment_volume_organ_label(named["organ"])
    z = sidecar["organs"][named["organ"]]["key_z"]
    written = ras_to_display(source_to_ras(np.asarray(nib.load(out).dataobj), nib.load(out).affine))
    assert (written == organ).any() and set(np.unique(written)) <= {0, organ}

    model = load_model("lite_medsam")
    state = torch.load(checkpoint, weights_only=False)
    classifier = ClassifyingMaskDecoder(model.sam.mask_decoder)
    torch.nn.ModuleDict({"prompt_encoder": model.sam.prompt_encoder, "classifier": classifier}).load_state_dict(
        state["model"])
    prompt = next_prompt(written[z] == organ, "one_central_point")
    assert named["classifier_points_xy"] == prompt.points.tolist()
    with torch.no_grad():
        embedding = model.sam.image_encoder(model.prepare_image(ct.images[z])[None])
        points, boxes = prompt_inputs(model, [prompt], [ct.images.shape[1:]])
        sparse, dense_embedding = model.sam.prompt_encoder(points=points, boxes=boxes, masks=None)
        scores = classifier.classify(embedding, model.sam.prompt_encoder.get_dense_pe(), sparse, dense_embedding)
    assert int(scores.argmax()) + 1 == organ
    assert abs(float(scores.softmax(-1)[0, organ - 1]) - named["probability"]) < 1e-3


def segment_volume_organ_label(name):
    from utils.core.organs import ORGANS

    return ORGANS.index(name) + 1


def test_an_organ_the_file_names_is_never_given_to_an_unnamed_entry(dense, tmp_path, capsys):
    from utils.core.organs import ORGANS
    from utils.scaffold.boundary import run_script

    img, _ = phantom_files(dense)
    box = [[10, 10, 2], [30, 30, 2]]
    (tmp_path / "p.json").write_text(json.dumps({"organs": [{"organ": "liver", "box": box},
                                                            {"organ": "auto", "box": [[5, 5, 3], [40, 40, 3]]}]}))
    liver_always = classifier_checkpoint(tmp_path / "liver.pt", favour=6)  # its head says liver for everything
    out = tmp_path / "x.nii.gz"
    assert segment_volume.main(["--image", str(img), "--prompts", str(tmp_path / "p.json"), "--classifier",
                                str(liver_always), "--out", str(out), "--no-progress",
                                "--min-name-probability", "0"]) == 0
    named, auto = json.loads(out.with_name("x.json").read_text())["naming"]["entries"]
    assert named["named_by"] == "prompt file" and named["organ_written"] == "liver" == named["organ"]
    assert auto["named_by"] == "classifier" and auto["organ"] == "liver" != auto["organ_written"]
    runner_up = max((p, o) for o, p in auto["probabilities"].items() if o != "liver")[1]
    assert auto["organ_written"] == runner_up  # the most probable organ the file does not name
    every = {"organs": [{"organ": name, "box": box} for name in ORGANS] + [{"organ": "auto", "box": box}]}
    (tmp_path / "all.json").write_text(json.dumps(every))
    code = run_script(segment_volume.main, ["--image", str(img), "--prompts", str(tmp_path / "all.json"),
                                            "--classifier", str(liver_always), "--out", str(tmp_path / "y.nii.gz"),
                                            "--min-name-probability", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "only 0 BTCV organs left" in err and "Traceback" not in err
    assert not (tmp_path / "y.nii.gz").exists()


def test_a_wrong_checkpoint_kind_as_classifier_is_refused(dense, tmp_path, capsys):
    from utils.scaffold.boundary import run_script

    img, _ = phantom_files(dense)
    (tmp_path / "p.json").write_text(json.dumps({"organs": [{"organ": "auto", "box": [[5, 5, 3], [40, 40, 3]]}]}))
    task2 = tmp_path / "task2.pt"
    torch.save({"model": {"prompt_encoder.w": torch.zeros(1), "mask_decoder.w": torch.zeros(1)}}, task2)
    code = run_script(segment_volume.main, ["--image", str(img), "--prompts", str(tmp_path / "p.json"),
                                            "--classifier", str(task2), "--out", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err
    assert code == 1 and "given as --classifier" in err and "Task 3 classifier" in err and "Traceback" not in err


# ---- issue 35: honest scores, nothing of the user's lost (tried as a user would) -------------------------

def two_organ_prompts(dense, tmp_path):
    """A prompt file for two of the phantom's organs only (the reference holds more)."""
    img, lab, truth, spec = phantom_box3d_spec(dense)
    spec["organs"] = spec["organs"][:2]
    path = tmp_path / "two.json"
    path.write_text(json.dumps(spec))
    return img, lab, path, [o["organ"] for o in spec["organs"]], truth


def test_score_against_scores_the_prompted_organs_and_lists_the_others(dense, tmp_path, capsys):
    from utils.core.organs import ORGANS
    from utils.eval.dice import dice_score

    img, lab, prompts, names, _ = two_organ_prompts(dense, tmp_path)
    out = tmp_path / "map.nii.gz"
    assert segment_volume.main(["--image", str(img), "--prompts", str(prompts), "--out", str(out),
                                "--score-against", str(lab), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    scored = json.loads(out.with_name("map.json").read_text())["scored_against"]
    assert sorted(scored["organs"]) == sorted(names) and scored["scored_organs"] == sorted(names, key=ORGANS.index)
    truth, pred = np.asarray(nib.load(lab).dataobj).round(), np.asarray(nib.load(out).dataobj)
    hand = [dice_score(torch.from_numpy(pred == ORGANS.index(n) + 1), torch.from_numpy(truth == ORGANS.index(n) + 1))
            for n in names]  # the oracle: Dice of each prompted organ by hand
    assert scored["dice"] == pytest.approx(float(np.mean(hand)), abs=1e-6)
    present = {ORGANS[int(v) - 1] for v in np.unique(truth) if v}
    assert set(scored["unprompted"]) == present - set(names) and scored["unprompted"]
    assert "the organs you prompted" in printed and "not prompted (not scored)" in printed
    from PIL import Image
    picture = Image.open(out.with_name("map.png"))  # the picture beside the map
    assert picture.size[0] > picture.size[1] > 100
    assert f"mean over {len(names)} organ(s)" in printed


def test_an_output_that_is_an_input_is_refused_and_the_ct_is_intact(dense, tmp_path, capsys):
    import shutil

    from utils.scaffold.boundary import run_script

    img, lab, prompts, _, _ = two_organ_prompts(dense, tmp_path)
    ct = tmp_path / "ct.nii.gz"
    shutil.copy(img, ct)
    before = ct.read_bytes()
    for out, flag in ((ct, "--image"), (tmp_path / "." / "ct.nii.gz", "--image")):
        code = run_script(segment_volume.main, ["--image", str(ct), "--prompts", str(prompts), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 1 and f"the file given as {flag}" in err and "Traceback" not in err
    assert ct.read_bytes() == before
    # the sidecar beside the map would be the prompt file: refused too, naming the flag to change
    code = run_script(segment_volume.main, ["--image", str(ct), "--prompts", str(prompts), "--out",
                                            str(prompts.with_name("two.nii.gz"))])
    err = capsys.readouterr().err
    assert code == 1 and "the file given as --prompts" in err and "Choose another --out" in err
    # a parent that is a file: one line, before any work
    (tmp_path / "afile").write_text("x")
    code = run_script(segment_volume.main, ["--image", str(ct), "--prompts", str(prompts), "--out",
                                            str(tmp_path / "afile" / "map.nii.gz")])
    err = capsys.readouterr().err
    assert code == 1 and "is a file, not a folder" in err and "Traceback" not in err


def test_a_reference_on_another_grid_is_refused_before_anything_is_written(dense, tmp_path, capsys):
    from utils.scaffold.boundary import run_script

    img, lab, prompts, _, _ = two_organ_prompts(dense, tmp_path)
    other = nib.load(lab)
    wrong = tmp_path / "wrong.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(other.dataobj)[:-1], other.affine), wrong)
    out = tmp_path / "map.nii.gz"
    code = run_script(segment_volume.main, ["--image", str(img), "--prompts", str(prompts), "--out", str(out),
                                            "--score-against", str(wrong)])
    err = capsys.readouterr().err
    assert code == 1 and "grid" in err and not out.exists() and not out.with_name("map.json").exists()


def test_prompts_from_labels_refuses_to_overwrite_its_inputs(dense, tmp_path, capsys):
    import prompts_from_labels
    from utils.scaffold.boundary import run_script

    img, lab = phantom_files(dense)
    before = lab.read_bytes()
    code = run_script(prompts_from_labels.main, ["--image", str(img), "--label", str(lab), "--out", str(lab)])
    assert code == 1 and "the file given as --label" in capsys.readouterr().err and lab.read_bytes() == before


def test_decoder_names_resolve_as_the_other_scripts_before_any_model_loads(tmp_path):
    from utils.core.errors import CheckpointError
    from utils.scaffold.unlabelled import resolve_decoder

    root = tmp_path / "checkpoints"
    (root / "interactive" / "lite_medsam" / "interactive").mkdir(parents=True)
    latest = root / "interactive" / "lite_medsam" / "interactive" / "latest"
    latest.write_text("run-abc")
    assert resolve_decoder("interactive", "lite_medsam", {"bound_box"}, root) == str(latest)
    assert resolve_decoder("none", "lite_medsam", {"bound_box"}, root) == "none"
    with pytest.raises(CheckpointError, match="finetune_task2.py --prompts bound_box"):
        resolve_decoder("auto", "lite_medsam", {"bound_box"}, root)
    with pytest.raises(CheckpointError, match="mixes prompt types"):
        resolve_decoder("auto", "lite_medsam", {"bound_box", "one_central_point"}, root)
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_decoder(str(tmp_path / "nowhere"), "lite_medsam", {"bound_box"}, root)
    with pytest.raises(CheckpointError, match="holds no best.pt and no latest"):
        resolve_decoder(str(tmp_path), "lite_medsam", {"bound_box"}, root)
    assert resolve_decoder(str(latest.parent), "lite_medsam", {"bound_box"}, root) == str(latest)
