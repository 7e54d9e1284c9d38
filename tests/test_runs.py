"""Runs that cannot lie: flags that do what they say, keyed run folders, checked resume and hand-offs."""
import json
from dataclasses import replace

import pytest
import torch
from conftest import script_args

import classify_train_task3
import finetune_task2
import segmentation_task1
from utils.core.checkpoints import TASK3, load_checkpoint
from utils.core.errors import CheckpointError
from utils.scaffold.boundary import run_script
from utils.scaffold.runs import Run, RunMismatch, find_handoff, open_run, run_key
from utils.train.loop import LoopConfig, StepResult, run_training

# ------------------------------------------------------------------------------------------ flags


@pytest.mark.parametrize("spelling", [["--learning-rate", "0.05"], ["--learning-rate=0.05"]])
def test_typed_flag_beats_the_preset_in_every_spelling(spelling):
    args = finetune_task2.parse_args(["--preset", "quick", *spelling])
    assert args.learning_rate == 0.05
    assert args.epochs == finetune_task2.PRESETS["quick"]["epochs"]  # untyped: the preset's
    assert "learning_rate" in args.typed_flags


def test_typed_boolean_and_epochs_beat_the_preset():
    args = finetune_task2.parse_args(["--preset", "quick", "--epochs=7"])
    assert args.epochs == 7


@pytest.mark.parametrize("argv, message", [
    (["--learning", "0.05"], "unrecognized arguments: --learning"),
    (["--learning=0.05"], "unrecognized arguments: --learning=0.05"),
    (["--epoch", "7"], "unrecognized arguments: --epoch"),
    (["--epochs", "0"], "--epochs: 0 is out of range: must be > 0"),
    (["--epochs", "-1"], "--epochs: -1 is out of range: must be > 0"),
    (["--batch-size", "-4"], "--batch-size: -4 is out of range: must be > 0"),
    (["--batch-size", "0"], "--batch-size: 0 is out of range: must be > 0"),
    (["--learning-rate", "0"], "--learning-rate: 0 is out of range: must be > 0"),
    (["--momentum", "1.5"], "--momentum: 1.5 is out of range: must be in [0, 1)"),
    (["--samples-per-epoch", "-3"], "--samples-per-epoch: -3 is out of range: must be >= 0"),
    (["--seed", "-1"], "--seed: -1 is out of range: must be >= 0"),
    (["--split", "train"], "unrecognized arguments: --split"),  # training scripts choose their own splits
    (["--preset", "fast"], "--preset must be one of paper, quick"),
])
@pytest.mark.parametrize("script", [finetune_task2, classify_train_task3])
def test_bad_flags_are_argparse_errors(script, argv, message, capsys):
    if script is classify_train_task3 and argv[0] == "--momentum":
        argv, message = ["--decode-batch", "-2"], "--decode-batch: -2 is out of range: must be >= 0"
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--preset", "quick", *argv] if argv[0] != "--preset" else argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_task1_multimask_help_says_the_study_uses_the_single_mask(capsys):
    with pytest.raises(SystemExit):
        segmentation_task1.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--multimask" in help_text and "the study uses the single mask" in help_text


# ------------------------------------------------------------------------------------------ run folders


def identity(**changes):
    base = {"task": "task2", "model": "lite_medsam", "checkpoint_sha256": "abc", "store_key": "S1",
            "prompt": "bound_box", "seed": 0, "precision": "fp32", "encoder_precision": "fp32",
            "learning_rate": 0.01, "batch_size": 16}
    return dict(base, **changes)


def test_different_settings_get_different_folders_and_same_settings_the_same(tmp_path):
    a, _ = open_run(tmp_path, identity(), resume=False)
    b, _ = open_run(tmp_path, identity(learning_rate=0.05), resume=False)
    assert a.path != b.path and a.key == run_key(identity())
    assert (tmp_path / "latest").read_text().strip() == b.path.name
    assert json.loads((a.path / "run.json").read_text())["identity"] == identity()


@pytest.mark.parametrize("field, value", [("learning_rate", 0.05), ("store_key", "S2")])
def test_resume_with_other_settings_refuses_and_names_the_field(tmp_path, field, value):
    run, _ = open_run(tmp_path, identity(), resume=False)
    torch.save({"epoch": 0}, run.last)
    with pytest.raises(RunMismatch, match=rf"differs in: {field}: {identity()[field]!r} \(that run\) vs {value!r} \(now\)"):
        open_run(tmp_path, identity(**{field: value}), resume=True)
    again, note = open_run(tmp_path, identity(), resume=True)
    assert again == run and note.startswith("resuming")


def test_a_new_run_never_reports_an_old_runs_checkpoints(tmp_path):
    run, _ = open_run(tmp_path, identity(), resume=False)
    torch.save({"epoch": 9}, run.best)
    fresh, note = open_run(tmp_path, identity(), resume=False)
    assert fresh.path == run.path and not fresh.best.exists() and "starting over" in note


def _tiny_loop(run: Run, epochs: int, resume: bool):
    torch.manual_seed(0)
    module = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    data = [torch.tensor([i / 8, 1.0]) for i in range(8)]

    def step(batch, epoch):
        x = torch.stack(batch)
        loss = ((module(x)[:, 0] - x[:, 0] * 0.5) ** 2).mean()
        return StepResult(loss=loss, metric_sum=0.0, count=len(batch))

    config = LoopConfig(epochs=epochs, batch_size=4, samples_per_epoch=0, seed=0, monitor="score", run=run,
                        progress=False)
    return run_training(module, optimizer, data, step, lambda epoch: {"score": -float(epoch)}, config, resume)


def test_resume_trains_only_the_missing_epochs_and_refuses_fewer(tmp_path):
    run, _ = open_run(tmp_path, identity(), resume=False)
    history, trained = _tiny_loop(run, 1, resume=False)
    assert trained == 1
    history, trained = _tiny_loop(run, 3, resume=True)
    assert trained == 2 and history["epoch"] == [1, 2, 3]  # seconds per epoch divide by these 2
    full_run, _ = open_run(tmp_path / "full", identity(), resume=False)
    full, _ = _tiny_loop(full_run, 3, resume=False)
    assert full["train_loss"] == history["train_loss"]
    with pytest.raises(RunMismatch, match="already has 3 epochs"):
        _tiny_loop(run, 2, resume=True)


def _tiny_parts(diverge: bool = False):
    torch.manual_seed(0)
    module = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    data = [torch.tensor([i / 8, 1.0]) for i in range(8)]

    def step(batch, epoch):
        loss = ((module(torch.stack(batch))[:, 0] - 0.5) ** 2).mean()
        return StepResult(loss=loss * float("nan") if diverge else loss, metric_sum=0.0, count=len(batch))

    return module, optimizer, data, step


def test_train_in_run_times_the_loop_and_a_resume_with_nothing_left_trains_nothing(tmp_path, capsys):
    from utils.scaffold.training import open_training_run, train_in_run

    run = open_training_run(tmp_path, identity(), resume=False)
    assert str(run.path) in capsys.readouterr().out  # open_run's note, said
    config = LoopConfig(epochs=2, batch_size=4, samples_per_epoch=0, seed=0, monitor="score", run=run, progress=False)
    trained = train_in_run("bound_box", *_tiny_parts(), lambda epoch: {"score": 0.0}, config, resume=False)
    assert trained.epochs == 2 and trained.history["epoch"] == [1, 2] and run.best.is_file()
    assert trained.seconds > 0 and trained.cpu_seconds > 0
    assert trained.seconds_per_epoch == round(trained.seconds / 2, 2)
    again = train_in_run("bound_box", *_tiny_parts(), lambda epoch: {"score": 0.0}, config, resume=True)
    assert again.epochs == 0 and again.seconds_per_epoch is None and again.history["epoch"] == [1, 2]


def test_a_divergence_or_a_refused_resume_names_the_run_it_belongs_to(tmp_path):
    from utils.scaffold.training import open_training_run, train_in_run
    from utils.train.loop import TrainingDiverged

    run = open_training_run(tmp_path, identity(), resume=False)
    config = LoopConfig(epochs=1, batch_size=4, samples_per_epoch=0, seed=0, monitor="score", run=run, progress=False)
    with pytest.raises(TrainingDiverged, match=r"^unet: loss nan at epoch 1: training diverged"):
        train_in_run("unet", *_tiny_parts(diverge=True), lambda epoch: {"score": 0.0}, config, resume=False)
    train_in_run("unet", *_tiny_parts(), lambda epoch: {"score": 0.0}, replace(config, epochs=2), resume=False)
    with pytest.raises(RunMismatch, match=r"^Task 3 bound_box: .*already has 2 epochs"):
        train_in_run("Task 3 bound_box", *_tiny_parts(), lambda epoch: {"score": 0.0}, config, resume=True)


def test_a_fast_path_this_device_cannot_take_is_one_error_line(tiny_study, tmp_path, capsys):
    from utils.core.errors import SuiteError
    from utils.scaffold.training import fast_path

    with pytest.raises(SuiteError, match="--train-precision fp16 is for GPUs; on a CPU use bf16"):
        fast_path(torch.device("cpu"), "fp32", "fp16")
    code = run_script(finetune_task2.main, script_args(tiny_study, tmp_path, "--preset", "quick", "--prompts",
                                                       "bound_box", "--train-precision", "fp16"))
    assert code == 1 and capsys.readouterr().err.strip().splitlines() == [
        "error: --train-precision fp16 is for GPUs; on a CPU use bf16"]


# ------------------------------------------------------------------------------------------ hand-offs


def fake_task2_run(root, **changes):
    ident = identity(prompt="one_central_point", **changes)
    run, _ = open_run(root / ident["model"] / ident["prompt"], ident, resume=False)
    torch.save({"model": {}, "epoch": 2, "run": {"key": run.key, "identity": ident}}, run.best)
    return run


def test_auto_handoff_takes_only_a_run_for_the_same_model_and_data(tmp_path):
    wanted = {"model": "lite_medsam", "checkpoint_sha256": "abc", "store_key": "S1"}
    other = fake_task2_run(tmp_path, store_key="S2")
    handoff, why = find_handoff("auto", tmp_path, "one_central_point", wanted)
    assert handoff is None and "1 run(s) there were made for other data" in why
    same = fake_task2_run(tmp_path, learning_rate=0.02)
    handoff, why = find_handoff("auto", tmp_path, "one_central_point", wanted)
    assert handoff.run_key == same.key and same.key in why and handoff.epoch == 3
    with pytest.raises(RunMismatch, match=r"store_key: 'S2' \(that run\) vs 'S1' \(now\).*--allow-other-data"):
        find_handoff(str(other.path), tmp_path, "one_central_point", wanted)
    handoff, why = find_handoff(str(other.best), tmp_path, "one_central_point", wanted, allow_other_data=True)
    assert handoff.other_data and handoff.record["other_data"] and "OTHER data" in why


def test_auto_handoff_from_another_store_is_recorded_as_other_data(tmp_path):
    """--finetuned auto --finetuned-store (the 3-D stage): Task 2's run made on the store it names, recorded as
    trained on other data, exactly as that run's PATH with --allow-other-data would be."""
    wanted = {"model": "lite_medsam", "checkpoint_sha256": "abc", "store_key": "S1"}
    other = fake_task2_run(tmp_path, store_key="S2")
    handoff, why = find_handoff("auto", tmp_path, "one_central_point", wanted, search_store_key="S2")
    as_path, _ = find_handoff(str(other.best), tmp_path, "one_central_point", wanted, allow_other_data=True)
    assert handoff.record == as_path.record and handoff.other_data and "OTHER data" in why
    assert handoff.state["epoch"] == 2  # the checkpoint, read once, travels with the hand-off


def test_a_handoff_of_the_wrong_kind_is_refused_saying_what_it_is(tmp_path):
    wanted = {"model": "lite_medsam", "checkpoint_sha256": "abc", "store_key": "S1"}
    task2 = fake_task2_run(tmp_path)
    with pytest.raises(CheckpointError, match=r"given as --classifier\): this is a Task 2 decoder .*, not a Task 3"):
        find_handoff(str(task2.path), tmp_path, "one_central_point", wanted, kind=TASK3, flag="--classifier")
    with pytest.raises(CheckpointError, match=r"given as --classifier auto, found under .*: this is a Task 2"):
        find_handoff("auto", tmp_path, "one_central_point", wanted, kind=TASK3, flag="--classifier")
    assert find_handoff(str(task2.path), tmp_path, "one_central_point", wanted)[0].run_key == task2.key


def test_task3_refuses_a_task2_checkpoint_from_another_store(tiny_study, tmp_path, capsys):
    other = fake_task2_run(tmp_path, store_key="another-store", checkpoint_sha256="x")
    argv = script_args(tiny_study, tmp_path / "results", "--preset", "quick", "--finetuned", other.path)
    assert run_script(classify_train_task3.main, argv) == 1
    assert "trained for other data or weights" in capsys.readouterr().err


def test_task2_resume_with_a_changed_learning_rate_refuses(tiny_study, tmp_path, capsys):
    common = script_args(tiny_study, tmp_path / "results", "--preset", "quick", "--prompts", "bound_box",
                         "--samples-per-epoch", "8", "--batch-size", "8", "--val-samples", "8",
                         "--checkpoint-dir", tmp_path / "ckpt")
    assert finetune_task2.main(common + ["--epochs", "1", "--learning-rate", "0.01"]) == 0
    assert run_script(finetune_task2.main, common + ["--epochs", "2", "--learning-rate", "0.05", "--resume"]) == 1
    assert "learning_rate: 0.01 (that run) vs 0.05 (now)" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "results" / "task2" / "metrics.json").read_text())
    run = metrics["prompts"]["bound_box"]["run"]
    assert metrics["settings"]["learning_rate"] == 0.01 and run["key"] in run["folder"]
    state = load_checkpoint(metrics["prompts"]["bound_box"]["checkpoint"])
    assert state["run"]["identity"]["learning_rate"] == 0.01
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.01


def test_a_run_folder_its_latest_file_or_a_checkpoint_name_the_same_best_pt(tmp_path):
    from utils.scaffold.runs import run_checkpoint

    run = tmp_path / "lite_medsam" / "bound_box" / "run-abc123"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"")
    (run.parent / "latest").write_text("run-abc123\n")  # what open_run writes beside the newest run
    assert run_checkpoint(run) == run / "best.pt"
    assert run_checkpoint(run.parent / "latest") == run / "best.pt"
    assert run_checkpoint(run / "last.pt") == run / "last.pt"  # a file is taken as given (missing: named on load)
