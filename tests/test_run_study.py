"""run_study.py (make reproduce): the stages in their order, each one's command line accepted by its
script's own parser, and the interactive decoder trained before the stages that score it."""
from __future__ import annotations

import run_study


def stages(argv):
    return run_study.study_stages(run_study.parse_args(argv))


def test_every_stage_command_line_parses_with_its_own_script(tmp_path):
    for name, module, stage_args in stages(["--phantom", "--results", str(tmp_path / "results")]):
        args = module.parse_args(stage_args)  # a flag the script does not take exits 2 here
        assert args is not None, name


def test_the_interactive_decoder_is_trained_then_scored_on_both_protocols():
    listed = stages(["--phantom"])
    names = [name for name, _, _ in listed]
    order = ["task 2", "interactive", "interactive (fine-tuned)", "interactive training", "interactive (trained)",
             "task 1 (interactive decoder)", "task 3 train"]
    assert [n for n in names if n in order] == order
    by_name = {name: (module.__name__, stage_args) for name, module, stage_args in listed}
    assert by_name["interactive training"][0] == "finetune_interactive"
    for scored in ("interactive (trained)", "task 1 (interactive decoder)"):
        stage_args = by_name[scored][1]
        assert stage_args[stage_args.index("--finetuned") + 1] == "interactive"
    assert by_name["task 1 (interactive decoder)"][0] == "segmentation_task1"
    training_args = by_name["interactive training"][1]
    assert training_args[training_args.index("--preset") + 1] == "quick"
    paper = dict((n, a) for n, _, a in stages(["--phantom", "--preset", "paper"]))
    assert paper["interactive training"][paper["interactive training"].index("--preset") + 1] == "paper"
    for name in ("interactive", "interactive (fine-tuned)"):  # quick: box starts; the trained decoder: the preset's
        assert by_name[name][1][by_name[name][1].index("--start") + 1] == "bound_box,jittered_box"
        assert "--start" not in paper[name]
    assert "--start" not in by_name["interactive (trained)"][1]


def test_the_3d_stage_scores_every_decoder_then_segments_a_ct_without_labels():
    listed = stages(["--phantom"])
    names = [name for name, _, _ in listed]
    order = ["interactive training", "3-D store", "3-D zero-shot", "3-D fine-tuned", "3-D interactive decoder",
             "CT without labels: prompts", "CT without labels: segment"]
    assert [n for n in names if n in order] == order
    by_name = {name: stage_args for name, _, stage_args in listed}
    for name, choice in (("3-D zero-shot", "none"), ("3-D fine-tuned", "auto"), ("3-D interactive decoder",
                                                                                 "interactive")):
        assert by_name[name][by_name[name].index("--finetuned") + 1] == choice
        assert by_name[name][by_name[name].index("--prompts") + 1] == "bound_box"  # quick: the box protocols only
    store_3d = by_name["3-D store"]  # a whole upper abdomen (organs that begin and end), <= 5 mm apart
    assert store_3d[store_3d.index("--phantom-extent") + 1] == "abdomen"
    assert int(store_3d[store_3d.index("--phantom-slices") + 1]) >= 50
    segment = by_name["CT without labels: segment"]
    prompts = by_name["CT without labels: prompts"]
    assert segment[segment.index("--prompts") + 1] == prompts[prompts.index("--out") + 1]
    assert segment[segment.index("--image") + 1] == prompts[prompts.index("--image") + 1]
    assert "--score-against" in segment  # scored only afterwards, from the label file
    assert segment[segment.index("--embeddings-from") + 1] == store_3d[store_3d.index("--out") + 1]
    paper = {name: stage_args for name, _, stage_args in stages(["--phantom", "--preset", "paper"])}
    assert "--prompts" not in paper["3-D zero-shot"]  # the paper preset keeps segmentation_3d.py's prompts
    real = [n for n, _, _ in stages(["--data-root", "/data/btcv"])]
    assert "3-D interactive decoder" in real and "CT without labels: segment" not in real  # phantom only
