"""finetune_interactive.py end to end on the tiny phantom store, and the interactive decoder's way into the
evaluation scripts (--finetuned interactive) and the report.

Oracles: the training loop's own uninterrupted run (resume), the run key's definition (one digest per
identity), the checkpoint kinds (utils.core.checkpoints), Dice AUC's definition (the mean of the curve)."""
import json
import shutil
from types import SimpleNamespace

import pytest
from conftest import script_args

import finetune_interactive
import interactive_task1
import make_report
import segmentation_task1
from utils.core.checkpoints import INTERACTIVE, checkpoint_kind, load_checkpoint
from utils.scaffold.boundary import run_script

TINY = ["--epochs", 1, "--samples-per-epoch", 8, "--rounds", 1, "--batch-size", 4, "--monitor-per-organ", 1,
        "--monitor-clicks", 1]
EVAL = ["--clicks", 2, "--samples-per-organ", 1, "--jitters", "0"]


def load(path):
    return json.loads(path.read_text())


def train_args(study, base, *extra):
    return script_args(study, base / "results", "--checkpoint-dir", base / "runs", *TINY, *extra)


@pytest.fixture(scope="module")
def trained(tiny_study):
    base = tiny_study["base"] / "fi"
    assert finetune_interactive.main(train_args(tiny_study, base)) == 0
    return base


def the_run(base):
    (run,) = (base / "runs" / "lite_medsam" / "interactive").glob("run-*")
    return run


def test_the_run_is_keyed_kind_checked_and_chosen_on_training_samples(trained):
    metrics = load(trained / "results" / "interactive_training" / "metrics.json")
    run = the_run(trained)
    assert metrics["run"]["key"] == run.name[len("run-"):] and metrics["checkpoint_path"] == str(run / "best.pt")
    state = load_checkpoint(run / "best.pt")
    assert checkpoint_kind(state) == INTERACTIVE
    assert set(k.split(".", 1)[0] for k in state["model"]) == {"prompt_encoder", "mask_decoder"}
    assert metrics["settings"]["interactive"] == {"rounds": 1, "box_fraction": 0.5, "box_jitter": 10,
                                                  "mask_feedback": 0.5, "loss": "dice", "negative_share": None,
                                                  "click_sampling": "uniform", "truth_click_share": 0.0,
                                                  "no_click_rounds": 0, "random_rounds": False,
                                                  "round_weighting": "flat", "click_loss_weight": 0.0,
                                                  "click_radius": 5}
    # the monitor scores the training split (never the validation volumes the report scores)
    assert metrics["split"] == "train" and metrics["provenance"]["split"] == "train"
    assert 0 < metrics["monitor_samples"] <= 13 and metrics["training_samples"] > metrics["monitor_samples"]
    best = metrics["monitor_at_best"]
    auc = [sum(best[f"{s}_dice_per_click"]) / len(best[f"{s}_dice_per_click"]) for s in ("bound_box", "one_central_point")]
    assert best["monitor_dice_auc"] == pytest.approx(sum(auc) / 2)
    assert (trained / "results" / "interactive_training" / "curves.png").is_file()


def test_resume_continues_to_the_curves_of_an_uninterrupted_run(tiny_study, trained, tmp_path):
    shutil.copytree(trained / "runs", tmp_path / "resumed" / "runs")
    assert finetune_interactive.main(train_args(tiny_study, tmp_path / "resumed", "--epochs", 2, "--resume")) == 0
    assert finetune_interactive.main(train_args(tiny_study, tmp_path / "straight", "--epochs", 2)) == 0
    resumed = load(the_run(tmp_path / "resumed") / "history.json")
    straight = load(the_run(tmp_path / "straight") / "history.json")
    assert the_run(tmp_path / "resumed").name == the_run(tmp_path / "straight").name
    assert resumed["epoch"] == straight["epoch"] == [1, 2]
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], abs=1e-5)
    assert [v["monitor_dice_auc"] for v in resumed["val"]] == pytest.approx(
        [v["monitor_dice_auc"] for v in straight["val"]], abs=1e-5)


def test_the_run_key_changes_with_each_interactive_hyperparameter():
    from utils.scaffold.runs import run_key
    from utils.train.fastpath import FastPath

    exp = SimpleNamespace(model=SimpleNamespace(name="lite_medsam", checkpoint_sha256="ab"), store=SimpleNamespace(key="s"))
    base = finetune_interactive.parse_args([])

    def key(**changed):
        args = SimpleNamespace(**dict(vars(base), **changed))
        return run_key(finetune_interactive.run_identity(args, exp, finetune_interactive.session_settings(args),
                                                         FastPath(), {"init": args.init}))

    keys = [key(), key(rounds=2), key(box_fraction=1.0), key(box_jitter=0), key(mask_feedback=0.0),
            key(loss="dice_bce"), key(init="task2"), key(optimizer="sgd"), key(learning_rate=1e-3),
            key(batch_size=4), key(seed=1)]
    assert len(set(keys)) == len(keys)
    assert key(epochs=99) == key()  # the epoch count is not part of the run (--resume --epochs N extends it)
    from utils.train.interactive import LOSSES

    assert finetune_interactive.LOSSES == LOSSES


def test_interactive_task1_scores_it_on_the_same_protocol_as_every_decoder(tiny_study, trained):
    results = trained / "results"
    flags = ["--interactive-dir", trained / "runs", *EVAL]
    assert interactive_task1.main(script_args(tiny_study, results, "--finetuned", "interactive", "--compare-mask-input",
                                              *flags)) == 0
    assert interactive_task1.main(script_args(tiny_study, results, *flags)) == 0  # zero-shot, for the report
    m = load(results / "interactive_trained" / "metrics.json")
    run = the_run(trained).name[len("run-"):]
    assert {d["run_key"] for d in m["finetuned"]["decoders"].values()} == {run}
    for start in ("bound_box", "one_central_point"):
        s = m["starts"][start]
        assert s["dice_auc"] == pytest.approx(sum(s["dice_per_click"]) / len(s["dice_per_click"]))
        other = m["mask_input_compared"][start]
        assert m["mask_input"] is True and other["mask_input"] is False
        assert other["dice_per_click"][0] == s["dice_per_click"][0]  # round 0 has no mask input either way
    assert m["box_robustness"]["kind"] == "interactive decoder"
    assert segmentation_task1.main(script_args(tiny_study, results, "--finetuned", "interactive", "--interactive-dir",
                                               trained / "runs", "--prompts", "bound_box,one_central_point",
                                               "--overlays", "0")) == 0
    t1 = load(results / "task1_trained" / "metrics.json")
    # the jitter-0 row and round 0 of the box start are the same samples, prompts and decoder
    assert m["starts"]["bound_box"]["dice_per_click"][0] == pytest.approx(m["box_robustness"]["jitters"]["0"]["mDice"])
    assert {d["run_key"] for d in t1["provenance"]["finetuned"].values()} == {run}
    report = make_report.build_report(results)
    assert "### The decoders side by side" in report and "interactive decoder, mask input off" in report
    assert "How the interactive decoder was trained" in report
    from utils.report.decoders import prompts_compared

    assert "interactive decoder (one for all)" in prompts_compared(t1, None, t1)
    assert (results / "interactive_compared" / "dice_vs_clicks_bound_box.png").is_file()


def test_finetuned_interactive_without_a_run_is_one_error_naming_the_command(tiny_study, tmp_path, capsys):
    code = run_script(interactive_task1.main, script_args(tiny_study, tmp_path, "--finetuned", "interactive",
                                                          "--interactive-dir", tmp_path / "none", *EVAL))
    assert code == 1 and "finetune_interactive.py" in capsys.readouterr().err
    code = run_script(finetune_interactive.main, train_args(tiny_study, tmp_path, "--init", "task2", "--finetuned-dir",
                                                            tmp_path / "none"))
    assert code == 1 and "finetune_task2.py --prompts bound_box" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:  # a bad choice is argparse's exit 2, before anything runs
        finetune_interactive.parse_args(["--optimizer", "rmsprop"])
    assert bad.value.code == 2
