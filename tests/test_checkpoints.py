"""utils.core.checkpoints: CPU reads with weights_only, and every checkpoint's kind told from the file itself."""
import pathlib
import re

import pytest
import torch

from utils.core.checkpoints import (
    BASELINE,
    KINDS,
    SAM,
    TASK2,
    TASK3,
    check_kind,
    checkpoint_kind,
    cpu_state,
    load_checkpoint,
    save_checkpoint,
)
from utils.core.errors import CheckpointError, SuiteError


def run_state(task, weights=None):
    """A checkpoint as run_training writes it, for a run of ``task``."""
    return {"model": weights or {"w": torch.ones(1)}, "epoch": 0, "config": {},
            "run": {"key": "k", "identity": {"task": task, "model": "lite_medsam"}}}


def test_checkpoints_load_with_weights_only(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.ones(2)}, "epoch": 0, "config": {"lr": 0.1, "name": "x", "none": None}})
    assert load_checkpoint(good)["epoch"] == 0
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "path": pathlib.Path("x")}, bad)  # arbitrary objects: refused, not unpickled
    with pytest.raises(CheckpointError, match=r"bad\.pt: not a readable suite checkpoint"):
        load_checkpoint(bad)


def test_a_missing_checkpoint_is_a_suite_error_and_still_a_file_not_found_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint here") as info:
        load_checkpoint(tmp_path / "nothing.pt")
    assert isinstance(info.value, SuiteError) and isinstance(info.value, FileNotFoundError)


def test_cpu_state_is_a_detached_copy():
    module = torch.nn.Linear(2, 1)
    state = cpu_state(module)
    state["weight"].add_(1.0)
    assert not torch.equal(state["weight"], module.weight.detach()) and not state["weight"].requires_grad


@pytest.mark.parametrize("task", [TASK2, TASK3, BASELINE])
def test_a_runs_checkpoint_says_its_kind_through_its_run_record(task):
    assert checkpoint_kind(run_state(task)) == task


@pytest.mark.parametrize("keys, kind", [
    (["image_encoder.patch_embed.w", "prompt_encoder.pe", "mask_decoder.iou"], SAM),  # model weights, bare
    (["prompt_encoder.pe", "classifier.head.w"], TASK3),
    (["prompt_encoder.pe", "mask_decoder.iou"], TASK2),
    (["model.0.conv.weight"], None),  # nothing says: the reader's own loading decides
])
def test_without_a_run_record_the_module_names_tell(keys, kind):
    weights = {k: torch.zeros(1) for k in keys}
    assert checkpoint_kind(weights) == kind
    assert checkpoint_kind({"state_dict": weights}) == kind  # SAM-style wrappers too


def test_the_wrong_kind_is_refused_saying_what_it_is_and_what_was_expected(tmp_path):
    said = rf"x\.pt \(given as --finetuned\): this is {re.escape(KINDS[TASK3])}, not {re.escape(KINDS[TASK2])}"
    with pytest.raises(CheckpointError, match=said):
        check_kind(run_state(TASK3), tmp_path / "x.pt", TASK2, "--finetuned")
    check_kind(run_state(TASK2), tmp_path / "x.pt", TASK2)  # the right kind passes
    check_kind({"w": torch.zeros(1)}, tmp_path / "x.pt", TASK2)  # an unknown kind passes


def test_load_model_refuses_a_runs_checkpoint_as_model_weights(tmp_path):
    from utils.models.sam import load_model

    path = tmp_path / "best.pt"
    save_checkpoint(path, run_state(TASK2, {"prompt_encoder.pe": torch.zeros(1), "mask_decoder.iou": torch.zeros(1)}))
    said = rf"given as --checkpoint\): this is {re.escape(KINDS[TASK2])}, not {re.escape(KINDS[SAM])}"
    with pytest.raises(CheckpointError, match=said):
        load_model("lite_medsam", path)


def test_the_same_state_saved_twice_has_the_same_digest(tmp_path):
    """Identical weights give an identical file wherever they are written (the results record its sha256)."""
    from utils.core.hashing import file_sha256

    state = run_state(TASK2, {"w": torch.arange(6.0).reshape(2, 3)})
    save_checkpoint(tmp_path / "a" / "best.pt", state)
    save_checkpoint(tmp_path / "b" / "other.pt", state)
    assert file_sha256(tmp_path / "a" / "best.pt") == file_sha256(tmp_path / "b" / "other.pt")
    assert torch.equal(load_checkpoint(tmp_path / "b" / "other.pt")["model"]["w"], state["model"]["w"])
