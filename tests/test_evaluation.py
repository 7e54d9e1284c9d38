"""The evaluation scaffold (utils/scaffold/evaluation.py) on stand-ins: the results folder, the results
header's and timing block's key order (what every metrics.json of Task 1, the interactive and 3-D stages
starts and ends with), the user errors, and rank-0 writing. The scripts on it run end to end in
test_interactive_script.py, test_segmentation_3d.py and test_task2.py."""
import argparse
import csv
import json
from types import SimpleNamespace

import pytest

from utils.core import distributed
from utils.inference.prompts import parse_prompt_types
from utils.scaffold.evaluation import Evaluation

META = {"data": "phantom", "slice_store": "s", "store_key": "k", "split": "val", "model": "lite_medsam",
        "checkpoint": "c", "checkpoint_sha256": "0" * 64, "device": "cpu (test)", "seed": 0}


def flags(tmp_path, **extra):
    return argparse.Namespace(results=tmp_path, finetuned="none", seed=0, split="val", no_progress=True, **extra)


def test_results_folder_follows_finetuned(tmp_path):
    assert Evaluation(flags(tmp_path), "task1").out == tmp_path / "task1"
    tuned = Evaluation(argparse.Namespace(results=tmp_path, finetuned="auto"), "task3d")
    assert tuned.finetuned and tuned.out == tmp_path / "task3d_finetuned"


def test_header_and_timing_keep_the_common_keys_around_the_scripts_own(tmp_path):
    results = Evaluation.header(META, n_slices=3, prompts={}, zeta=1)
    assert list(results) == ["model", "checkpoint", "data", "split", "n_slices", "prompts", "zeta", "provenance",
                             "timing"]
    assert results["model"] == "lite_medsam" and results["provenance"] is META and results["timing"] == {}
    ev = Evaluation(flags(tmp_path), "task1")
    ev.meta, ev.encoded, ev.encode_seconds = META, 4, 2.0
    timing = ev.timing(**{"per_slice/bound_box seconds": 1.5, "decoded_prompts": 7})
    assert list(timing) == ["encoded_slices", "per_slice/bound_box seconds", "decoded_prompts", "device"]
    assert timing["encoded_slices"] == 4 and timing["device"] == "cpu (test)"
    assert ev.encoder_seconds_per_slice == 0.5 and Evaluation.rate(7, 2.0) == 3.5 and Evaluation.rate(7, 0) is None
    assert set(ev.clock()) == {"wall_seconds", "cpu_seconds"}


def test_a_bad_value_and_an_empty_split_are_one_line_user_errors(tmp_path, capsys):
    ev = Evaluation(flags(tmp_path), "task1")
    assert ev.parse(parse_prompt_types, "bound_box") == ["bound_box"]
    with pytest.raises(BaseException) as bad:  # the suite's user error (exit 1), not a ValueError traceback
        ev.parse(parse_prompt_types, "bogus")
    assert not isinstance(bad.value, ValueError)
    assert "bogus" in str(bad.value) + capsys.readouterr().err
    ev.exp = SimpleNamespace(cache=SimpleNamespace(index=SimpleNamespace(rows_for=lambda split: [])),
                            store=SimpleNamespace(path="STORE"))
    with pytest.raises(BaseException) as empty:
        ev.split_rows()
    message = str(empty.value) + capsys.readouterr().err
    assert "STORE: the store has no val slices; try --split all" in message


def test_only_rank_0_writes(tmp_path, monkeypatch):
    results = Evaluation.header(META, prompts={"bound_box": {"mDice": 0.5}})
    tables = {"table1.md": "| a |\n"}
    csvs = {"per_slice.csv": (["prompt", "dice"], [["bound_box", "0.5"]])}
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    other = Evaluation(flags(tmp_path / "rank1"), "task1")
    other.write(results, tables, csvs)
    assert not (tmp_path / "rank1").exists()
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    ev = Evaluation(flags(tmp_path, prompts="bound_box"), "task1")
    ev.write(results, tables, csvs)
    assert json.loads((ev.out / "metrics.json").read_text()) == results
    assert (ev.out / "table1.md").read_text() == "| a |\n"
    assert json.loads((ev.out / "config.json").read_text())["prompts"] == "bound_box"
    with open(ev.out / "per_slice.csv", newline="") as f:
        assert list(csv.reader(f)) == [["prompt", "dice"], ["bound_box", "0.5"]]
