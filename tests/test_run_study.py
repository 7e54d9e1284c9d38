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
