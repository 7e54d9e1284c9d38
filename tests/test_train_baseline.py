"""train_baseline.py end to end on the tiny phantom store, and the confidence intervals the tables render.

The network-level checks (14 channels at the slice size, a few steps lower the loss, box restriction)
are in tests/test_baselines.py; here: the script visits exactly Task 1's samples, resumes to the same
history, writes Task 1's schema, and every rendered interval equals utils.eval.bootstrap on the written records.
"""
import csv
import json
import re

import numpy as np
import pytest
from conftest import QUICK_TRAIN_PRECISION, script_args

import segmentation_task1
import train_baseline
from utils.eval.bootstrap import bootstrap_accuracy, bootstrap_difference, bootstrap_mdice, triples
from utils.report.tables import table1, table2, table3, table4, training_precision_note
from utils.scaffold.boundary import run_script

TINY = ["--preset", "quick", "--channels", "4,8,16", "--aug-views", "1", "--batch-size", "4",
        "--samples-per-epoch", "8", "--learning-rate", "0.01"]


def baseline_args(study, results, ckpt, *extra):
    return ["--slices", str(study["slices"]), "--results", str(results), "--checkpoint-dir", str(ckpt),
            "--no-progress", *TINY, *map(str, extra)]


def read_csv(path, prompt):
    with open(path) as f:
        return [(r["case"], int(r["z"]), r["organ"]) for r in csv.DictReader(f) if r["prompt"] == prompt]


def load(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def baseline_run(tiny_study):
    results, ckpt = tiny_study["base"] / "bl_results", tiny_study["base"] / "bl_ckpt"
    assert train_baseline.main(baseline_args(tiny_study, results, ckpt, "--epochs", "2")) == 0
    return results / "baseline" / "unet"


@pytest.fixture(scope="module")
def task1_all(tiny_study):
    """Task 1 on every slice of the tiny store (4 volumes, so the intervals are not a single point)."""
    results = tiny_study["base"] / "bl_task1_all"
    assert segmentation_task1.main(script_args(tiny_study, results, "--prompts", "bound_box,one_central_point",
                                               "--split", "all", "--overlays", "0")) == 0
    return results / "task1"


def test_scores_exactly_task1s_samples_in_task1s_order(baseline_run, tiny_study):
    task1 = tiny_study["base"] / "bl_task1_val"
    assert segmentation_task1.main(script_args(tiny_study, task1, "--prompts", "bound_box", "--overlays", "0")) == 0
    expected = read_csv(task1 / "task1" / "per_slice.csv", "bound_box")
    assert len(expected) > 0
    for row in ("none", "bound_box_crop"):
        assert read_csv(baseline_run / "per_slice.csv", row) == expected
    metrics = load(baseline_run / "metrics.json")
    t1 = load(task1 / "task1" / "metrics.json")
    for row in ("none", "bound_box_crop"):
        assert [(c, o) for c, o, _ in metrics["records"][row]] == [(c, o) for c, o, _ in t1["records"]["bound_box"]]
        assert sum(v["n"] for v in metrics["prompts"][row]["organs"].values()) == len(expected)


def test_writes_task1s_schema_with_provenance(baseline_run, tiny_study):
    metrics = load(baseline_run / "metrics.json")
    assert {"model", "data", "split", "n_slices", "prompts", "provenance"} <= set(metrics)
    assert metrics["model"] == "unet" and metrics["split"] == "val"
    assert set(metrics["prompts"]) == {"none", "bound_box_crop"}
    meta = metrics["provenance"]
    assert meta["store_key"] == tiny_study["store"].key and meta["seed"] == 0 and meta["preset"] == "quick"
    assert meta["precision"] == "fp32" and len(meta["checkpoint_sha256"]) == 64
    # the quick preset trains at --train-precision auto (scoring stays fp32): recorded in settings, provenance, run key
    assert metrics["settings"]["train_precision"] == QUICK_TRAIN_PRECISION
    assert meta["training_fast_path"]["train_precision"] == QUICK_TRAIN_PRECISION
    run_json = load(baseline_run.parents[2] / "bl_ckpt" / "unet" / f"run-{metrics['run']['key']}" / "run.json")
    assert run_json["identity"]["train_precision"] == QUICK_TRAIN_PRECISION
    assert meta["run"]["key"] == metrics["run"]["key"] and metrics["checkpoint"].endswith("best.pt")
    # the box can only remove false positives: per sample, Dice in the box >= Dice of the whole prediction
    whole, boxed = (np.array([d for _, _, d in metrics["records"][r]]) for r in ("none", "bound_box_crop"))
    assert np.all(boxed >= whole - 1e-12)
    for name in ("history.json", "curves.png", "config.json", "table3_baseline.md"):
        assert (baseline_run / name).stat().st_size > 0


def test_resume_gives_the_same_history_as_an_uninterrupted_run(baseline_run, tiny_study):
    full = load(baseline_run / "history.json")
    results, ckpt = tiny_study["base"] / "bl_resumed", tiny_study["base"] / "bl_resumed_ckpt"
    assert train_baseline.main(baseline_args(tiny_study, results, ckpt, "--epochs", "1")) == 0  # "killed" after 1
    assert train_baseline.main(baseline_args(tiny_study, results, ckpt, "--epochs", "2", "--resume")) == 0
    resumed = load(results / "baseline" / "unet" / "history.json")
    assert len(full["train_loss"]) == 2
    for key in ("train_loss", "train_dice", "val_dice", "val_dice_in_box"):
        assert resumed[key] == full[key], key
    assert resumed["run"]["key"] == full["run"]["key"]


def test_bad_store_names_the_folder_and_the_fix(tiny_study, capsys):
    missing = tiny_study["base"] / "no_store_here"
    assert run_script(train_baseline.main, ["--slices", str(missing), "--results", str(tiny_study["base"] / "x"),
                                            "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "preprocess_slices.py" in err


def cells(markdown, first_cell):
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in markdown.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if parts and parts[0] == first_cell:
            return parts
    raise AssertionError(f"no row {first_cell!r} in:\n{markdown}")


def interval_text(result):
    return f"[{result['low']:.4f}, {result['high']:.4f}]"


def test_table1s_interval_is_bootstrap_mdice_of_the_written_records(task1_all):
    metrics = load(task1_all / "metrics.json")
    written = (task1_all / "table1.md").read_text()
    for prompt, title in (("bound_box", "bound box"), ("one_central_point", "one central point")):
        # oracle: the records as Task 1's per_slice.csv states them, bootstrapped directly
        with open(task1_all / "per_slice.csv") as f:
            from utils.core.organs import ORGANS
            rows = [(r["case"], ORGANS.index(r["organ"]) + 1, float(r["dice"])) for r in csv.DictReader(f)
                    if r["prompt"] == prompt]
        expected = bootstrap_mdice(rows)
        assert expected["n_volumes"] == 4 and expected["low"] < expected["high"]  # a real interval
        for text in (written, table1(metrics)):  # the script's file and the report's rendering agree
            assert cells(text, title)[2] == interval_text(expected)
    assert "1000 resamples" in written and "4 validation volumes" in written


def records(case_values):
    """[(case, organ, value)] from {case: [values for organs 1, 2, ...]}."""
    return [(case, organ, v) for case, values in case_values.items() for organ, v in enumerate(values, 1)]


def test_table2_marks_exactly_the_improvements_whose_paired_interval_excludes_zero():
    cases = [f"c{k}" for k in range(6)]
    rng = np.random.default_rng(0)
    original = {c: list(rng.uniform(0.3, 0.6, 3)) for c in cases}
    better = {c: [v + 0.2 for v in vals] for c, vals in original.items()}  # +0.2 on every volume
    mixed = {c: [v + (0.1 if k % 2 else -0.1) for v in vals] for k, (c, vals) in enumerate(original.items())}
    summary = {"mDice": 0.5, "organs": {}, "run": {"key": "k"}}
    metrics = {
        "settings": {"epochs": 1, "learning_rate": 0.1, "batch_size": 1, "samples_per_epoch": 0, "aug_views": 0,
                     "val_samples": 18, "val_samples_per_epoch": 18},
        "preset": "quick", "original_source": "hand-made", "model": "lite_medsam", "data": "hand-made",
        "provenance": {"data": "hand-made", "split": "val", "model": "m", "checkpoint": "c",
                       "checkpoint_sha256": "0" * 64, "seed": 0},
        "prompts": {"bound_box": summary, "larger_box": summary},
        "original": {"bound_box": summary, "larger_box": summary},
        "records": {"original": {"bound_box": records(original), "larger_box": records(original)},
                    "finetuned": {"bound_box": records(better), "larger_box": records(mixed)}},
    }
    rendered = table2(metrics)
    expected = {p: bootstrap_difference(metrics["records"]["finetuned"][p], metrics["records"]["original"][p])
                for p in ("bound_box", "larger_box")}
    assert expected["bound_box"]["excludes_zero"] and not expected["larger_box"]["excludes_zero"]
    for prompt, title in (("bound_box", "bound box"), ("larger_box", "larger box")):
        cell = cells(rendered, title)[-1]
        assert cell.endswith("*") == expected[prompt]["excludes_zero"], cell
        low, high = map(float, re.search(r"\[([-+.\d]+), ([-+.\d]+)\]", cell).groups())
        assert (low, high) == (round(expected[prompt]["low"], 4), round(expected[prompt]["high"], 4))
        assert cells(rendered, title)[4] == interval_text(bootstrap_mdice(metrics["records"]["finetuned"][prompt]))


def test_table3_has_a_measured_block_and_a_cited_block(baseline_run):
    unet = load(baseline_run / "metrics.json")
    task2 = {"model": "lite_medsam", "provenance": unet["provenance"],
             "prompts": {"bound_box": {"mDice": 0.81}, "one_central_point": {"mDice": 0.62}},
             "records": {"finetuned": {"bound_box": unet["records"]["none"],
                                       "one_central_point": unet["records"]["bound_box_crop"]}}}
    rendered = table3(task2, {"unet": unet, "resunet": unet})
    measured, cited = rendered.split("**Cited by the study**")
    assert "**Measured here**" in measured
    for label in ("U-Net, whole prediction", "U-Net, in box: prediction kept inside the organ's box",
                  "ResU-Net, whole prediction", "Fine-tuned SAM (lite_medsam), bound box",
                  "Fine-tuned SAM (lite_medsam), one central point"):
        row = cells(measured, label)
    assert cells(measured, "U-Net, whole prediction")[3] == interval_text(bootstrap_mdice(unet["records"]["none"]))
    assert "the same" in measured and "Warning" not in measured
    note = training_precision_note({"train_precision": QUICK_TRAIN_PRECISION})
    assert (f"Trained with: U-Net, preset `quick`{note}; ResU-Net, preset `quick`{note}; "
            f"fine-tuned SAM, preset `quick`{note}." in measured)
    n_volumes = len({c for c, _, _ in unet["records"]["none"]})
    assert f"over the {n_volumes} validation volumes" in measured
    for name, value in (("U-Net [7]", "92.1"), ("PIPO-FAN [10]", "93.6")):
        row = cells(cited, name)
        assert row[1] == value and "not measured here" in row[2]
        assert name not in measured
    # a row from another store is called out
    other = json.loads(json.dumps(unet))
    other["provenance"]["store_key"] = "another"
    assert "Warning" in table3(task2, {"unet": unet, "resunet": other})


def test_table4_intervals_are_bootstrap_accuracy_of_the_records():
    correct = records({f"c{k}": [1, k % 2, 1, 0 if k < 3 else 1] for k in range(5)})
    metrics = {"organs": {"spleen": {"accuracy": 0.5, "n": 5, "share": 0.25}}, "weighted_average": 0.7, "n": 20,
               "mean": 0.7, "majority_baseline": 0.25, "majority_organ": "spleen", "records": {"correct": correct},
               "provenance": {"data": "d", "split": "val", "model": "m", "checkpoint": "c",
                              "checkpoint_sha256": "0" * 64, "seed": 0, "preset": "quick", "classifier_run": "r",
                              "classifier_epoch": 1, "starting_weights": "w"}}
    rendered = table4(metrics)
    assert cells(rendered, "**Weighted Average**")[2] == interval_text(bootstrap_accuracy(correct))
    assert cells(rendered, "Mean over organs (unweighted)")[2] == interval_text(bootstrap_mdice(correct))
    assert triples([{"case": "a", "organ": 2, "dice": 1}]) == [("a", 2, 1.0)]


def test_report_shows_the_measured_baseline_in_table3(baseline_run):
    import make_report

    results = baseline_run.parent.parent
    assert make_report.main(["--results", str(results)]) == 0
    report = (results / "REPORT.md").read_text()
    measured = report.split("**Measured here**")[1].split("**Cited by the study**")[0]
    unet = load(baseline_run / "metrics.json")
    assert cells(measured, "U-Net, whole prediction")[2] == f"{unet['prompts']['none']['mDice']:.4f}"
    assert "Not run: ResU-Net" in measured and "Fine-tuned SAM: not run" in measured
    assert "Table 3 (unet baseline)" in report  # its provenance row
