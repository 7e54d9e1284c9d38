"""segmentation_3d.py end to end on a tiny dense phantom store (one validation volume, every slice):
the metrics.json schema, predictions on the source grid, metrics equal to a re-score of the written
files (and to Dice counted by hand), and the clear errors for stores the 3-D stage cannot use."""
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from synthetic import blob_volume, write_pair

import preprocess_slices
import segmentation_3d
from utils.core.errors import SuiteError
from utils.core.organs import ORGANS, organ_name
from utils.data.slice_store import build_store
from utils.eval.metrics3d import score_volume

CASE = "0035"  # a BTCV validation case id: the phantom's val split


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    base = tmp_path_factory.mktemp("dense3d")
    code = preprocess_slices.main(["--phantom", "--data-root", str(base / "phantom"), "--phantom-cases", "35",
                                   "--phantom-size", "64", "--phantom-slices", "6", "--slice-margin", "1",
                                   "--out", str(base / "slices"), "--results", str(base / "pre"), "--no-progress"])
    assert code == 0
    return base


def run(base, results, *extra, slices=None):
    return segmentation_3d.main(["--slices", str(slices or base / "slices"), "--cache-dir", str(base / "cache"),
                                 "--results", str(results), "--no-progress", "--prompts", "bound_box", *map(str, extra)])


@pytest.fixture(scope="module")
def smoke(dense):
    results = dense / "results"
    assert run(dense, results) == 0
    return results / "task3d", json.loads((results / "task3d" / "metrics.json").read_text())


def test_metrics_schema_and_provenance(smoke):
    _, metrics = smoke
    assert {"model", "checkpoint", "data", "split", "finetuned", "modes"} <= set(metrics)
    assert metrics["finetuned"] is None and metrics["split"] == "val" and "phantom" in metrics["data"]
    assert metrics["provenance"]["checkpoint_sha256"] and metrics["provenance"]["seed"] == 0
    assert set(metrics["modes"]) == {"per_slice", "propagate", "box3d", "clicks3d"}
    for by_prompt in metrics["modes"].values():
        s = by_prompt["bound_box"]
        assert all(isinstance(s[k], float) for k in ("dice", "hd95_mm", "nsd"))
        assert set(s["volumes"]) == {CASE}
        for name, o in s["organs"].items():
            assert {"dice", "hd95_mm", "nsd", "n_volumes"} <= set(o) and o["n_volumes"] == 1
            assert {"dice", "hd95_mm", "nsd"} <= set(s["volumes"][CASE][name])
    assert metrics["timing"]["encoded_slices"] == 6  # every slice, once


def source_label(dense):
    return nib.load(dense / "phantom" / "RawData" / "Training" / "label" / f"label{CASE}.nii.gz")


@pytest.mark.parametrize("mode", ["per_slice", "propagate", "box3d", "clicks3d"])
def test_predictions_on_source_grid_and_metrics_are_those_of_the_written_file(smoke, dense, mode):
    out, metrics = smoke
    source = source_label(dense)
    written = nib.load(out / "predictions" / mode / "bound_box" / f"{CASE}.nii.gz")
    assert written.shape == source.shape
    assert np.array_equal(written.affine, source.affine)
    pred, truth = np.asarray(written.dataobj), np.asarray(source.dataobj).astype(np.uint8)
    assert pred.dtype == np.uint8 and pred.max() <= 13 and (pred > 0).any()
    rescored = score_volume(pred, truth, written.header.get_zooms()[:3]).to_dict()
    reported = metrics["modes"][mode]["bound_box"]["volumes"][CASE]
    assert set(reported) == set(rescored) == {organ_name(int(o)) for o in np.unique(truth) if o > 0}
    for name, values in rescored.items():
        for key in ("dice", "hd95_mm", "nsd"):
            assert reported[name][key] == pytest.approx(values[key], abs=1e-9), (name, key)
        label = ORGANS.index(name) + 1
        p, t = pred == label, truth == label
        by_hand = 2 * (p & t).sum() / (p.sum() + t.sum())  # 3-D Dice counted voxel by voxel
        assert reported[name]["dice"] == pytest.approx(by_hand, abs=1e-6)


def test_per_slice_decodes_one_prompt_per_organ_slice_and_propagation_fewer_or_equal(smoke, dense):
    _, metrics = smoke
    truth = np.asarray(source_label(dense).dataobj)
    pairs = sum(len(np.setdiff1d(np.unique(truth[:, :, z]), [0])) for z in range(truth.shape[2]))
    assert metrics["modes"]["per_slice"]["bound_box"]["decoded_prompts"] == pairs
    organs = len(np.setdiff1d(np.unique(truth), [0]))
    propagated = metrics["modes"]["propagate"]["bound_box"]["decoded_prompts"]
    assert organs <= propagated <= pairs + 2 * organs  # each organ slice at most once, plus one stop each way


def test_tables_and_figures_written(smoke):
    out, _ = smoke
    table = (out / "table3d.md").read_text()
    assert "| per slice | bound box |" in table and "zero-shot" in table
    for name in ("slice_vs_3d.png", f"views_{CASE}.png", "config.json"):
        assert (out / name).stat().st_size > 0


def test_second_run_encodes_nothing(smoke, dense, tmp_path):
    assert run(dense, tmp_path, "--modes", "per_slice") == 0
    metrics = json.loads((tmp_path / "task3d" / "metrics.json").read_text())
    assert metrics["timing"]["encoded_slices"] == 0


def store_copy(dense, tmp_path):
    store = next((dense / "slices").glob("store-*"))
    copy = tmp_path / "slices" / store.name
    shutil.copytree(store, copy)
    return copy


def test_missing_slice_names_the_volume(dense, tmp_path):
    copy = store_copy(dense, tmp_path)
    index = json.loads((copy / "index.json").read_text())
    index["slices"] = [r for r in index["slices"] if not (r["case"] == CASE and r["z"] == 3)]
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(SuiteError) as error:
        run(dense, tmp_path / "results", slices=copy)
    err = str(error.value)
    assert f"volume {CASE}" in err and "missing from the store" in err and "z = 3" in err


def test_missing_source_label_names_the_volume_and_file(dense, tmp_path):
    copy = store_copy(dense, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    gone = tmp_path / "moved" / "label0035.nii.gz"
    manifest["inputs"][0]["label"] = str(gone)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SuiteError) as error:
        run(dense, tmp_path / "results", slices=copy)
    err = str(error.value)
    assert f"volume {CASE}" in err and str(gone) in err and "missing" in err


def test_store_of_organ_slices_only_is_refused_with_the_fix(dense, tmp_path):
    build_store(dense / "phantom", tmp_path / "organ_only", progress=False)
    with pytest.raises(SuiteError, match="--slice-margin"):
        run(dense, tmp_path / "results", slices=tmp_path / "organ_only")


def test_finetuned_store_without_task2_run_says_what_to_run(dense, tmp_path):
    with pytest.raises(SuiteError, match="finetune_task2.py"):
        run(dense, tmp_path / "results", "--finetuned", "auto", "--finetuned-store", dense / "slices",
            "--finetuned-dir", tmp_path / "no_runs")


def test_real_btcv_layout_with_one_volume_in_lps_orientation(tmp_path):
    """A Synapse RawData folder with one volume whose affine is LPS (not the phantom's RAS): --split all
    works, the prediction lands on the source grid, and the big bright organ is found where it is."""
    image, label = blob_volume((48, 40, 5), seed=3)
    affine = np.diag([-1.5, -1.5, 5.0, 1.0])  # voxel axes i, j run to the patient's left and posterior: LPS
    affine[:3, 3] = [30.0, 25.0, 10.0]
    root = tmp_path / "btcv"
    write_pair(root / "RawData/Training/img/img0001.nii.gz", root / "RawData/Training/label/label0001.nii.gz",
               image, label, affine)
    build_store(root, tmp_path / "slices", progress=False, slice_margin=1)
    code = segmentation_3d.main(["--slices", str(tmp_path / "slices"), "--cache-dir", str(tmp_path / "cache"),
                                 "--results", str(tmp_path / "results"), "--no-progress", "--split", "all",
                                 "--prompts", "bound_box"])
    assert code == 0
    metrics = json.loads((tmp_path / "results" / "task3d" / "metrics.json").read_text())
    assert metrics["data"] == "BTCV" and metrics["split"] == "all"
    written = nib.load(tmp_path / "results" / "task3d" / "predictions" / "per_slice" / "bound_box" / "0001.nii.gz")
    assert np.array_equal(written.affine, affine) and written.shape == label.shape
    pred = np.asarray(written.dataobj)
    liver = 6
    dice = 2 * ((pred == liver) & (label == liver)).sum() / ((pred == liver).sum() + (label == liver).sum())
    assert dice > 0.8  # a flipped or transposed write would put the off-centre disk elsewhere
    assert metrics["modes"]["per_slice"]["bound_box"]["volumes"]["0001"]["liver"]["dice"] == pytest.approx(dice)


def pretrained_run(dense, tmp_path, task, prompt, parent, epoch, **settings):
    """A run of ``task`` made on the organ-slice store whose weights ARE the pre-trained decoder's (so its
    scores must equal zero-shot's): (that store, the run folder)."""
    import torch

    from utils.data.slice_store import SliceStore
    from utils.models.sam import load_model
    from utils.scaffold.runs import identity_of, open_run

    build_store(dense / "phantom", tmp_path / "organ_only", progress=False)
    main_store = SliceStore(tmp_path / "organ_only")
    model = load_model("lite_medsam")

    class Exp:  # what identity_of reads
        pass

    exp = Exp()
    exp.model, exp.store = model, main_store
    identity = identity_of(task, exp, prompt, 0, "fp32", "fp32", **settings)
    run_folder, _ = open_run(parent, identity, resume=False)
    weights = {f"{part}.{k}": v for part in ("prompt_encoder", "mask_decoder")
               for k, v in getattr(model.sam, part).state_dict().items()}
    torch.save({"model": weights, "epoch": epoch, "run": {"key": run_folder.key, "identity": identity}},
               run_folder.best)
    return main_store, run_folder


def test_task2_handoff_from_the_main_store_is_used_and_recorded(smoke, dense, tmp_path):
    """A Task 2 run for another store (the organ-slice store) whose weights ARE the pre-trained ones: through
    --finetuned auto --finetuned-store it must give exactly the zero-shot numbers, in task3d_finetuned/, with
    the run, its store and 'other data' recorded."""
    main_store, task2 = pretrained_run(dense, tmp_path, "task2", "bound_box", tmp_path / "runs" / "lite_medsam" /
                                       "bound_box", epoch=2, learning_rate=0.01)

    results = tmp_path / "results"
    assert run(dense, results, "--finetuned", "auto", "--finetuned-store", tmp_path / "organ_only",
               "--finetuned-dir", tmp_path / "runs") == 0
    tuned = json.loads((results / "task3d_finetuned" / "metrics.json").read_text())
    record = tuned["finetuned"]["bound_box"]
    assert record["run_key"] == task2.key and record["epoch"] == 3 and record["other_data"] is True
    assert record["trained_on"]["store_key"] == main_store.key != tuned["provenance"]["store_key"]
    assert task2.key in (results / "task3d_finetuned" / "table3d.md").read_text()
    _, zero_shot = smoke
    for mode in ("per_slice", "propagate"):
        assert tuned["modes"][mode]["bound_box"]["volumes"] == zero_shot["modes"][mode]["bound_box"]["volumes"]


def test_slice_margin_keeps_slices_without_organ_and_gets_its_own_key(tmp_path):
    from synthetic import write_rawdata

    from utils.data.slice_store import SliceStore

    root = write_rawdata(tmp_path / "btcv", case_ids=(1,), shape=(48, 40, 7))  # organs on z = 1..5
    stores = {}
    for margin in (None, 0, 1, 5):
        path, summary = build_store(root, tmp_path / f"slices_{margin}", progress=False, slice_margin=margin)
        stores[margin] = SliceStore(path)
    zs = {m: [r.z for r in s.records] for m, s in stores.items()}
    assert zs[None] == zs[0] == [1, 2, 3, 4, 5]
    assert zs[1] == zs[5] == list(range(7))  # clipped to the volume
    assert [r.organs for r in stores[1].records if r.z in (0, 6)] == [{}, {}]  # stored though organ-free
    assert "slice_margin" not in stores[None].manifest["settings"]  # Tasks 1-3's stores keep their keys
    assert len({s.key for s in stores.values()}) == 4


def test_phantom_cases_pick_validation_volumes():
    from utils.data.phantom import PhantomConfig

    assert PhantomConfig(cases=(36, 35)).case_ids == (35, 36)
    assert PhantomConfig(n_volumes=2).case_ids == (1, 2)
    with pytest.raises(ValueError, match="case ids"):
        PhantomConfig(cases=(11,))


def test_propagation_reports_the_organ_slices_it_reached(smoke, dense):
    out, metrics = smoke
    truth = np.asarray(source_label(dense).dataobj)  # source layout (x, y, z): slices along the last axis
    organ_slices = sum(int((truth == o).any(axis=(0, 1)).sum()) for o in np.setdiff1d(np.unique(truth), [0]))
    s = metrics["modes"]["propagate"]["bound_box"]
    assert s["organ_slices"] == organ_slices and 0 < s["reached_slices"] <= organ_slices
    for trace in s["propagation"][CASE]["organs"].values():
        assert 1 <= trace["reached_slices"] <= trace["organ_slices"]  # the key slice is always kept
    assert "organ_slices" not in metrics["modes"]["per_slice"]["bound_box"]
    # the defaults, chosen on training volumes (docs/3d.md)
    assert metrics["settings"]["box_margin_mm"] == 4.0 and metrics["settings"]["min_iou_previous"] == 0.5
    assert "organ slices reached" in (out / "table3d.md").read_text()


def test_mask_carry_runs_through_the_protocols_and_is_recorded(smoke, dense, tmp_path):
    """--carry as_prompt+mask: propagate and box3d decode every propagated slice with the previous slice's
    low-res logits (the decoder's mask-input path); recorded in the settings; the key slices are unchanged."""
    plain_out, plain = smoke
    assert run(dense, tmp_path, "--modes", "propagate,box3d", "--carry", "as_prompt+mask") == 0
    metrics = json.loads((tmp_path / "task3d" / "metrics.json").read_text())
    assert metrics["settings"]["carry"] == "as_prompt+mask" and plain["settings"]["carry"] == "as_prompt"
    for mode in ("propagate", "box3d"):
        fed, alone = metrics["modes"][mode]["bound_box"], plain["modes"][mode]["bound_box"]
        assert 0 < fed["dice"] <= 1 and fed["decoded_prompts"] > 0
        for organ, trace in fed["propagation"][CASE]["organs"].items():
            assert trace["key_z"] == alone["propagation"][CASE]["organs"][organ]["key_z"]
        # the mask input reached the decoder: the written label map is not the one decoded without it
        maps = [np.asarray(nib.load(out / "predictions" / mode / "bound_box" / f"{CASE}.nii.gz").dataobj)
                for out in (tmp_path / "task3d", plain_out)]
        assert not np.array_equal(*maps)


def test_a_box_margin_in_mm_is_converted_with_the_spacing_and_recorded(dense, tmp_path):
    assert run(dense, tmp_path, "--modes", "propagate", "--box-margin-mm", "5") == 0
    metrics = json.loads((tmp_path / "task3d" / "metrics.json").read_text())
    s = metrics["modes"]["propagate"]["bound_box"]
    zooms = source_label(dense).header.get_zooms()
    assert metrics["settings"]["box_margin_mm"] == 5.0
    assert zooms[0] == zooms[1]  # the phantom's in-plane spacing is isotropic, so x and y need no matching
    assert s["propagation"][CASE]["box_margin_px"] == pytest.approx([5 / zooms[0], 5 / zooms[1]], abs=1e-3)
    assert "grown by 5 mm per side" in (tmp_path / "task3d" / "table3d.md").read_text()


def test_a_predicted_iou_stop_rejects_slices_by_the_models_own_estimate_and_is_recorded(smoke, dense, tmp_path):
    # 0.99: above what LiteMedSAM predicts for most propagated slices, so directions stop by this rule
    assert run(dense, tmp_path, "--modes", "propagate,box3d", "--min-predicted-iou", "0.99") == 0
    metrics = json.loads((tmp_path / "task3d" / "metrics.json").read_text())
    assert metrics["settings"]["min_predicted_iou"] == 0.99
    default = smoke[1]["modes"]["propagate"]["bound_box"]
    strict = metrics["modes"]["propagate"]["bound_box"]
    assert strict["reached_slices"] < default["reached_slices"]
    stops = [why for t in strict["propagation"][CASE]["organs"].values() for why in t["stops"].values()]
    assert "low_predicted_iou" in stops
    box3d = metrics["modes"]["box3d"]["bound_box"]["propagation"][CASE]["organs"].values()
    assert any(t.get("rejected_slices") for t in box3d)  # inside the 3-D box a rejected slice is held through
    assert "min_predicted_iou 0.99" in (tmp_path / "task3d" / "table3d.md").read_text()


def test_box3d_never_predicts_outside_each_organs_first_and_last_slice(smoke, dense):
    out, metrics = smoke
    truth = np.asarray(source_label(dense).dataobj)  # source (x, y, z)
    for mode in ("box3d", "clicks3d"):
        pred = np.asarray(nib.load(out / "predictions" / mode / "bound_box" / f"{CASE}.nii.gz").dataobj)
        for organ in np.setdiff1d(np.unique(truth), [0]):
            on = np.flatnonzero((truth == organ).any(axis=(0, 1)))
            predicted = np.flatnonzero((pred == organ).any(axis=(0, 1)))
            assert predicted.size == 0 or (on[0] <= predicted.min() and predicted.max() <= on[-1]), (mode, organ)
    s = metrics["modes"]["box3d"]["bound_box"]
    assert s["organ_slices"] == metrics["modes"]["propagate"]["bound_box"]["organ_slices"]
    assert 0 < s["reached_slices"] <= s["organ_slices"]


def test_clicks3d_reports_curves_whose_last_point_is_the_written_map_and_its_aucs(smoke):
    _, metrics = smoke
    s = metrics["modes"]["clicks3d"]["bound_box"]
    n = metrics["settings"]["clicks"]
    assert n == 5 and len(s["dice_per_click"]) == len(s["nsd_per_click"]) == len(s["hd95_mm_per_click"]) == n + 1
    assert s["dice_per_click"][-1] == pytest.approx(s["dice"]) and s["nsd_per_click"][-1] == pytest.approx(s["nsd"])
    assert s["dice_per_click"][0] == pytest.approx(metrics["modes"]["box3d"]["bound_box"]["dice"])  # starts from box3d
    assert s["dice_auc"] == pytest.approx(np.mean(s["dice_per_click"]))
    assert s["nsd_auc"] == pytest.approx(np.mean(s["nsd_per_click"]))
    for name, trace in s["propagation"][CASE]["organs"].items():
        assert len(trace["clicks"]) == n and len(s["organ_dice_per_click"][name]) == n + 1
        for click in trace["clicks"]:
            assert click is None or (len(click) == 4 and click[3] in (0, 1))


def test_the_interactive_decoder_from_the_main_store_is_scored_in_task3d_trained(smoke, dense, tmp_path):
    """An interactive run for the organ-slice store whose weights ARE the pre-trained ones: --finetuned interactive
    --finetuned-store gives exactly the zero-shot numbers, in task3d_trained/, the run recorded as other data."""
    _, run_folder = pretrained_run(dense, tmp_path, "interactive", "interactive",
                                   tmp_path / "inter" / "lite_medsam" / "interactive", epoch=0, rounds=2)
    results = tmp_path / "results"
    assert run(dense, results, "--finetuned", "interactive", "--finetuned-store", tmp_path / "organ_only",
               "--interactive-dir", tmp_path / "inter", "--modes", "propagate,box3d") == 0
    tuned = json.loads((results / "task3d_trained" / "metrics.json").read_text())
    assert not (results / "task3d_finetuned").exists()
    record = tuned["finetuned"]["bound_box"]
    assert record["run_key"] == run_folder.key and record["other_data"] is True
    assert "interactive decoder" in (results / "task3d_trained" / "table3d.md").read_text()
    _, zero_shot = smoke
    for mode in ("propagate", "box3d"):
        assert tuned["modes"][mode]["bound_box"]["volumes"] == zero_shot["modes"][mode]["bound_box"]["volumes"]


def test_the_propagation_decoder_is_task2s_propagated_box_run_for_every_prompt_in_task3d_propagation(smoke, dense,
                                                                                                    tmp_path):
    """A Task 2 propagated_box run for the organ-slice store whose weights ARE the pre-trained ones: --finetuned
    propagation --finetuned-store scores it for every prompt type (bound box here), in task3d_propagation/, with
    exactly the zero-shot numbers; without such a run the error names the command to run."""
    results = tmp_path / "results"
    with pytest.raises(SuiteError, match="finetune_task2.py --prompts propagated_box"):
        run(dense, results, "--finetuned", "propagation", "--finetuned-store", dense / "slices",
            "--finetuned-dir", tmp_path / "runs", "--modes", "propagate")
    _, run_folder = pretrained_run(dense, tmp_path, "task2", "propagated_box",
                                   tmp_path / "runs" / "lite_medsam" / "propagated_box", epoch=1, learning_rate=0.01)
    assert run(dense, results, "--finetuned", "propagation", "--finetuned-store", tmp_path / "organ_only",
               "--finetuned-dir", tmp_path / "runs", "--modes", "propagate,box3d") == 0
    tuned = json.loads((results / "task3d_propagation" / "metrics.json").read_text())
    assert not (results / "task3d_finetuned").exists() and not (results / "task3d_trained").exists()
    record = tuned["finetuned"]["bound_box"]
    assert record["run_key"] == run_folder.key and record["prompt"] == "propagated_box" and record["other_data"]
    assert "propagation decoder" in (results / "task3d_propagation" / "table3d.md").read_text()
    _, zero_shot = smoke
    for mode in ("propagate", "box3d"):
        assert tuned["modes"][mode]["bound_box"]["volumes"] == zero_shot["modes"][mode]["bound_box"]["volumes"]


def test_protocols_sharing_one_volumes_decodes_score_as_each_run_alone(dense, tmp_path):
    """The protocols of one volume share its decodes (clicks3d starts with box3d's walk, box3d repeats
    propagate's where their rules agree): each protocol run alone scores the same, and the timing counts what
    was decoded once and what was reused (summing to every protocol's prompts). One prompt per decoder call:
    a batch's other prompts move a logit in its last bits, and shared and lone runs batch differently."""
    assert run(dense, tmp_path / "shared", "--decode-batch", 1) == 0
    metrics = json.loads((tmp_path / "shared" / "task3d" / "metrics.json").read_text())
    timing = metrics["timing"]
    asked = sum(s["decoded_prompts"] for per_prompt in metrics["modes"].values() for s in per_prompt.values())
    assert timing["reused_prompts"] > 0 and timing["decoded_prompts"] + timing["reused_prompts"] == asked
    for mode in ("box3d", "clicks3d"):
        assert run(dense, tmp_path / mode, "--modes", mode, "--decode-batch", 1) == 0
        alone = json.loads((tmp_path / mode / "task3d" / "metrics.json").read_text())
        shared, single = metrics["modes"][mode]["bound_box"], alone["modes"][mode]["bound_box"]
        assert single["decoded_prompts"] == shared["decoded_prompts"]
        assert alone["timing"]["decoded_prompts"] + alone["timing"]["reused_prompts"] == single["decoded_prompts"]
        for key in ("dice", "nsd", "hd95_mm", "dice_per_click"):
            assert single.get(key) == pytest.approx(shared.get(key), abs=1e-6)


def test_box_protocols_skip_point_prompts_and_prompt_types_sharing_weights_share_one_decoder():
    from utils.eval.protocols3d import plan_protocols, remembering_decoders

    protocols, skipped = plan_protocols(["per_slice", "box3d"], ["bound_box", "one_central_point"])
    assert [(p.mode, p.prompt_type) for p in protocols] == [("per_slice", "bound_box"),
                                                            ("per_slice", "one_central_point"), ("box3d", "bound_box")]
    assert skipped == [("box3d", "one_central_point")]

    class Decoder:
        remembering = False

        def remember(self):
            self.remembering = True

    shared, own, made = object(), object(), []
    decoders = remembering_decoders({"bound_box": shared, "larger_box": shared, "one_central_point": own},
                                    lambda choice: made.append(choice) or Decoder())
    assert decoders["bound_box"] is decoders["larger_box"] is not decoders["one_central_point"]
    assert made == [shared, own] and all(d.remembering for d in decoders.values())
