"""interactive_task1.py end to end on the tiny phantom store, and --box-jitter's way into Task 1.

Oracles: Task 1 itself (round 0 of the rounds is Task 1's draw of the same prompt; a box jittered by
0 px is the tight box; the box-robustness table's jitter-0 row is Task 1's bound-box mDice)."""
import csv
import json

import pytest
from conftest import script_args

import interactive_task1
import make_report
import segmentation_task1

CLICKS = 3
STARTS = ["bound_box", "one_central_point"]


def load(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def task1(tiny_study):
    """Task 1 on the whole val split: bound box, and jittered_box at jitter 0 and 5."""
    out = {}
    for jitter in (0, 5):
        results = tiny_study["base"] / f"it_task1_j{jitter}"
        assert segmentation_task1.main(script_args(tiny_study, results, "--prompts", "bound_box,jittered_box,"
                                                   "one_central_point", "--box-jitter", jitter,
                                                   "--overlays", "0")) == 0
        out[jitter] = results / "task1"
    return out


@pytest.fixture(scope="module")
def interactive(tiny_study):
    results = tiny_study["base"] / "it_results"
    assert interactive_task1.main(script_args(tiny_study, results, "--start", ",".join(STARTS), "--clicks", CLICKS,
                                              "--samples-per-organ", 0, "--jitters", "0,5,20")) == 0
    return results


def per_slice(folder):
    with open(folder / "per_slice.csv") as f:
        return [r for r in csv.DictReader(f)]


def test_jittered_box_at_zero_jitter_is_the_bound_box_in_task1(task1):
    rows = per_slice(task1[0])
    box = {(r["case"], r["z"], r["organ"]): r["dice"] for r in rows if r["prompt"] == "bound_box"}
    jittered = {(r["case"], r["z"], r["organ"]): r["dice"] for r in rows if r["prompt"] == "jittered_box"}
    assert box and jittered == box  # every sample, exactly
    metrics = load(task1[0] / "metrics.json")
    assert metrics["prompts"]["jittered_box"]["mDice"] == metrics["prompts"]["bound_box"]["mDice"]
    assert metrics["provenance"]["box_jitter"] == 0
    # ... and the flag really arrives: at 5 px the boxes move and the Dice changes, the study's prompts do not
    moved = load(task1[5] / "metrics.json")
    assert moved["provenance"]["box_jitter"] == 5
    assert moved["prompts"]["jittered_box"]["mDice"] != metrics["prompts"]["jittered_box"]["mDice"]
    for prompt in ("bound_box", "one_central_point"):
        assert moved["prompts"][prompt] == metrics["prompts"][prompt]
    assert "| jittered box |" in (task1[0] / "table1.md").read_text()  # a Table 1 row, when asked for


def test_metrics_schema_curves_and_noc_ranges(interactive):
    out = interactive / "interactive"
    m = load(out / "metrics.json")
    for key in ("model", "checkpoint", "data", "split", "finetuned", "click_rule", "mask_input", "starts",
                "provenance", "box_robustness"):
        assert key in m, key
    assert m["click_rule"] == "center" and m["mask_input"] is True and m["finetuned"] is None
    assert m["provenance"]["seed"] == 0 and m["provenance"]["checkpoint_sha256"]
    assert list(m["starts"]) == STARTS
    for start, s in m["starts"].items():
        assert len(s["dice_per_click"]) == CLICKS + 1
        assert set(s["noc"]) == {"85", "90"}
        assert all(0 <= v <= CLICKS for v in s["noc"].values())
        assert s["noc"]["85"] <= s["noc"]["90"]
        assert s["organs"]
        for organ in s["organs"].values():
            assert len(organ["dice_per_click"]) == CLICKS + 1
            assert set(organ["noc"]) == {"85", "90"}
            assert all(0 <= v <= CLICKS for v in organ["noc"].values())
            assert all(0 <= d <= 1 for d in organ["dice_per_click"])
        # one convention at the top: mean over organs, for the curve and for NoC
        assert s["dice_per_click"][-1] == pytest.approx(
            sum(o["dice_per_click"][-1] for o in s["organs"].values()) / len(s["organs"]))
        assert s["noc"]["90"] == pytest.approx(sum(o["noc"]["90"] for o in s["organs"].values()) / len(s["organs"]))
    # correction clicks help the point start, which starts far from the organ's shape
    point = m["starts"]["one_central_point"]["dice_per_click"]
    assert point[-1] > point[0]
    for name in ("table_interactive.md", "per_sample.csv", "config.json"):
        assert (out / name).is_file(), name
    for start in STARTS:
        assert (out / f"dice_vs_clicks_{start}.png").stat().st_size > 0
        assert (out / f"rounds_{start}.png").stat().st_size > 0
    table = (out / "table_interactive.md").read_text()
    assert "NoC@90" in table and "Box robustness" in table and f"mDice@{CLICKS}" in table
    with open(out / "per_sample.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(s["n"] for s in m["starts"].values())
    assert all(0 <= int(r["clicks_made"]) <= CLICKS for r in rows)


def test_round_zero_is_task1_and_jitter_zero_row_is_task1_bound_box(interactive, task1):
    m = load(interactive / "interactive" / "metrics.json")
    t1 = load(task1[0] / "metrics.json")
    assert m["samples"]["n"] == m["samples"]["of"] == sum(o["n"] for o in t1["prompts"]["bound_box"]["organs"].values())
    jitters = m["box_robustness"]["jitters"]
    assert list(jitters) == ["0", "5", "20"]
    assert jitters["0"]["mDice"] == t1["prompts"]["bound_box"]["mDice"]  # same code, same batches: exact
    assert jitters["20"]["mDice"] < jitters["0"]["mDice"]  # a box 20 px off on a 96 px slice hurts
    for start in STARTS:  # round 0 decodes Task 1's draw of the start prompt (single mask)
        assert m["starts"][start]["dice_per_click"][0] == pytest.approx(t1["prompts"][start]["mDice"], abs=1e-6)


def test_report_has_the_interactive_section(interactive):
    report = make_report.build_report(interactive)
    assert "## Interactive segmentation" in report
    assert "dice_vs_clicks_bound_box.png" in report and "NoC@85" in report
    assert "interactive_task1.py --preset quick" in make_report.build_report(interactive.parent / "nothing_here")


def test_random_rule_is_seeded_and_finetuned_auto_says_what_it_used(tiny_study):
    runs = []
    for name in ("a", "b"):
        results = tiny_study["base"] / f"it_random_{name}"
        assert interactive_task1.main(script_args(
            tiny_study, results, "--start", "one_central_point", "--clicks", 2, "--click-rule", "random",
            "--samples-per-organ", 1, "--jitters", "none", "--finetuned", "auto",
            "--finetuned-dir", tiny_study["base"] / "no_runs_here")) == 0
        runs.append(load(results / "interactive_finetuned" / "metrics.json"))
    a, b = runs
    assert a["starts"] == b["starts"]
    assert a["click_rule"] == "random" and a["box_robustness"] is None
    assert a["samples"]["n"] == len(a["starts"]["one_central_point"]["organs"])  # one per organ
    assert "pre-trained decoder: no run" in a["starts"]["one_central_point"]["decoder"]
    assert a["finetuned"]["choice"] == "auto" and a["finetuned"]["decoders"]["one_central_point"] is None


@pytest.mark.parametrize("flags, message", [(["--jitters", "5,x"], "--jitters"),
                                            (["--start", "bound_box,laser"], "argument --start: unknown prompt type"),
                                            (["--refine", "nearby"], "argument --refine: invalid choice")])
def test_bad_flags_say_what_to_do(tiny_study, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage and exit 2, like every bad flag value
        interactive_task1.main(script_args(tiny_study, tiny_study["base"] / "it_bad", *flags))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_compare_refine_the_jittered_start_and_the_click_response(tiny_study):
    results = tiny_study["base"] / "it_refine"
    assert interactive_task1.main(script_args(
        tiny_study, results, "--start", "bound_box,jittered_box", "--box-jitter", 5, "--clicks", 2,
        "--samples-per-organ", 1, "--jitters", "0,5", "--compare-refine", "--refine-window", 16)) == 0
    m = load(results / "interactive" / "metrics.json")
    assert m["refine"] == {"mode": "global"}
    for start in ("bound_box", "jittered_box"):
        s, local = m["starts"][start], m["refine_compared"][start]
        assert local["refine"] == {"mode": "local", "window": 16, "growth": 1.4}
        assert local["dice_per_click"][0] == s["dice_per_click"][0]  # round 0 has nothing to merge
        r = s["click_response"]
        assert 0 < r["rounds"] <= 2 * s["n"] and 0.0 <= r["corrected_share"] <= 1.0
    # the 5 px row of the jitter table is the jittered start's round 0, taken, not decoded again
    five = m["box_robustness"]["jitters"]["5"]
    assert five["mDice"] == m["starts"]["jittered_box"]["dice_per_click"][0] and "round 0" in five["source"]
    assert m["box_robustness"]["jitters"]["0"]["mDice"] == m["starts"]["bound_box"]["dice_per_click"][0]
    report = make_report.build_report(results)
    assert "The click response" in report and "| zero-shot | jittered box |" in report


def test_a_bad_refinement_growth_is_one_line_before_loading(tiny_study, capsys):
    from utils.scaffold.boundary import run_script

    code = run_script(interactive_task1.main, [str(a) for a in script_args(
        tiny_study, tiny_study["base"] / "it_bad2", "--refine", "local", "--refine-growth", "1.0")])
    err = capsys.readouterr().err
    assert code == 1 and "growth must be > 1" in err and "Traceback" not in err
