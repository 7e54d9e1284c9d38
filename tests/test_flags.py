"""utils.scaffold.flags: the shared flags in their groups, the declaration order the results depend on,
defaults at the repository root, and a script taking only the groups it needs (the baselines)."""
from __future__ import annotations

from pathlib import Path

import pytest

import train_baseline
from utils.models.sam import CHECKPOINT_DIR
from utils.scaffold.config import new_parser
from utils.scaffold.flags import (
    COMMON_ORDER,
    add_data_args,
    add_finetuned_args,
    add_run_args,
    new_task_parser,
)

REPO = Path(__file__).resolve().parent.parent


def groups(parser):
    """{group title: [option strings of its flags]} (flags without a group under 'options')."""
    return {g.title: [a.option_strings[0] for a in g._group_actions] for g in parser._action_groups
            if g._group_actions}


def test_the_common_flags_are_grouped_data_sam_decoder_run():
    parser = new_task_parser(None)
    add_finetuned_args(parser, default="none")
    assert groups(parser) == {
        "options": ["-h", "--debug"],
        "data": ["--slices", "--split"],
        "SAM model": ["--model", "--checkpoint", "--encoder-precision", "--cache-dir", "--encode-batch"],
        "decoder": ["--precision", "--finetuned", "--finetuned-dir", "--interactive-dir", "--allow-other-data"],
        "run": ["--results", "--seed", "--device", "--no-progress"],
    }
    help_text = parser.format_help()
    assert help_text.index("\ndata:") < help_text.index("\nSAM model:") < help_text.index("\ndecoder:") \
        < help_text.index("\nrun:")


def test_declaration_order_is_the_one_results_were_written_with():
    # argparse keeps it in the namespace, so in config.json and in every checkpoint's bytes
    args = new_task_parser(None).parse_args([])
    assert list(vars(args)) == [flag[2:].replace("-", "_") for flag in COMMON_ORDER]
    assert COMMON_ORDER == ("--slices", "--model", "--checkpoint", "--split", "--results", "--seed", "--device",
                            "--precision", "--encoder-precision", "--cache-dir", "--encode-batch", "--no-progress")
    no_split = new_task_parser(None, split=None).parse_args([])
    assert "split" not in vars(no_split)


def test_defaults_are_folders_of_the_repository_not_of_utils():
    parser = new_task_parser(None)
    add_finetuned_args(parser, default="auto")
    args = parser.parse_args([])
    assert args.slices == REPO / "data" / "slices" and args.results == REPO / "results"
    assert args.cache_dir == REPO / "data" / "embeddings"
    assert args.finetuned_dir == REPO / "checkpoints" / "finetuned" and args.finetuned == "auto"
    assert CHECKPOINT_DIR == REPO / "checkpoints"
    assert args.split == "val" and args.seed == 0 and args.device == "auto" and args.precision == "fp32"


def test_a_script_takes_only_the_groups_it_needs(capsys):
    parser = new_parser(None)
    add_data_args(parser, split="all", split_help="which samples")
    add_run_args(parser, seed_help="the seed")
    args = parser.parse_args(["--seed", "3", "--no-progress"])
    assert vars(args) == {"slices": REPO / "data" / "slices", "split": "all", "results": REPO / "results",
                          "seed": 3, "device": "auto", "no_progress": True}
    assert "which samples" in parser.format_help() and "the seed" in parser.format_help()
    for sam_flag in ("--model", "--cache-dir", "--precision"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([sam_flag, "x"])
        assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--seed", "-1"])
    assert exit_info.value.code == 2 and "--seed: -1 is out of range" in capsys.readouterr().err


def test_train_baseline_has_the_data_and_run_groups_and_no_sam_flags(capsys):
    args = train_baseline.parse_args(["--preset", "quick"])
    assert [k for k in vars(args)][:9] == ["arch", "slices", "split", "results", "checkpoint_dir", "seed", "device",
                                           "resume", "no_progress"]  # its order before the groups
    assert args.slices == REPO / "data" / "slices" and args.checkpoint_dir == REPO / "checkpoints" / "baseline"
    with pytest.raises(SystemExit):
        train_baseline.parse_args(["--help"])
    help_groups = [line for line in capsys.readouterr().out.splitlines() if line.endswith(":") and " " not in line]
    assert help_groups[:3] == ["options:", "data:", "run:"]
    with pytest.raises(SystemExit) as exit_info:
        train_baseline.parse_args(["--model", "vit_b"])
    assert exit_info.value.code == 2
