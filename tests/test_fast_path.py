"""The CPU fast path (--precision bf16: the decoder under bf16 autocast) must keep Task 1's accuracy."""
from conftest import script_args

import segmentation_task1
from utils.core.io import read_json
from utils.inference.prompts import STUDY_PROMPTS


def test_bf16_task1_mdice_within_0_005_of_fp32_for_every_prompt(tiny_study, tmp_path):
    mdice = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        argv = script_args(tiny_study, out, "--split", "all", "--precision", precision, "--overlays", 0)
        assert segmentation_task1.main(argv) == 0
        metrics = read_json(out / "task1" / "metrics.json")
        assert metrics["provenance"]["precision"] == precision
        mdice[precision] = {p: metrics["prompts"][p]["mDice"] for p in STUDY_PROMPTS}
    for prompt_type in STUDY_PROMPTS:
        assert abs(mdice["bf16"][prompt_type] - mdice["fp32"][prompt_type]) <= 0.005, (prompt_type, mdice)
