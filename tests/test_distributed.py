"""torch.distributed (utils/core/distributed.py) on the CPU: 2 gloo ranks started with torch.multiprocessing.

Each comparison is against one plain process with the same settings: the cache bytes, Task 1's
numbers, Task 2's curves and weights; and the rank other than 0 writes no file. Embeddings come from
a stub image encoder (a seeded pooling + 1x1 convolution) so the file stays within about a minute and
a half on 2 cores; the decoders, prompts, losses and loops are the suite's own.
"""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import script_args
from dist_helpers import StubEncoder, StubModel, deal_rank, fill_rank, free_port, scripts_rank, spawn

import finetune_task2
import segmentation_task1

PROMPT = "one_central_point"
# Global batch 16 split 8 + 8 over 2 ranks, against 16 in one process; the same run key for both.
TASK2 = ["--preset", "quick", "--prompts", PROMPT, "--aug-views", "0", "--epochs", "2", "--samples-per-epoch", "32",
         "--batch-size", "16", "--val-samples", "0", "--learning-rate", "0.01", "--train-precision", "same"]
TASK1 = ["--prompts", f"{PROMPT},bound_box", "--overlays", "0"]
WEIGHT_TOLERANCE = 1e-5  # max |w_2ranks - w_1process| after 4 SGD steps: float summation order only


@pytest.fixture(scope="module")
def stub_study(tmp_path_factory):
    """The tiny phantom store (tests/conftest.py's pattern) and a LiteMedSAM cache filled by a stub encoder."""
    from synthetic import write_tiny_phantom

    from utils.data.slice_store import SliceStore, build_store
    from utils.embeddings.cache import EmbeddingCache
    from utils.models.sam import load_model

    base = tmp_path_factory.mktemp("dist_study")
    build_store(write_tiny_phantom(base / "phantom"), base / "slices", progress=False)
    store = SliceStore(base / "slices")
    model = load_model("lite_medsam")
    model.sam.image_encoder = StubEncoder(256, 64)  # the cache key stays LiteMedSAM's: the scripts find it
    EmbeddingCache(model, store, root=base / "cache").ensure(progress=False)
    return {"base": base, "slices": base / "slices", "cache": base / "cache", "store": store}


def folder_bytes(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def only_folder(root: Path) -> Path:
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == 1, folders
    return folders[0]


def test_cache_filled_by_two_ranks_is_byte_identical_and_resumes_after_a_killed_rank(stub_study):
    from utils.embeddings.cache import EmbeddingCache

    base, slices = stub_study["base"], str(stub_study["slices"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: thread count changes float reductions in real encoders
    try:
        reference = EmbeddingCache(StubModel(), stub_study["store"], root=base / "fill1")
        assert reference.ensure(batch_size=2, progress=False) == len(reference)
    finally:
        torch.set_num_threads(threads)
    expected = folder_bytes(reference.path)
    assert set(expected) == {"embeddings.npy", "done.npy", "signature.json"}

    spawn(fill_rank, (2, free_port(), slices, str(base / "fill2"), 2, 0))
    assert folder_bytes(only_folder(base / "fill2")) == expected

    killed = base / "fill_killed"
    with pytest.raises(Exception, match="exit code 3|exited with exit code"):
        spawn(fill_rank, (2, free_port(), slices, str(killed), 2, 1))  # rank 1 dies after its first block
    done = np.load(only_folder(killed) / "done.npy")
    assert 0 < done.sum() < len(done)  # interrupted midway, rank 1's first block kept
    spawn(fill_rank, (2, free_port(), slices, str(killed), 2, 0))  # restarted: fills only what is missing
    assert folder_bytes(only_folder(killed)) == expected


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_two_ranks_match_one_process_in_task1_and_task2_and_only_rank0_writes(stub_study, tmp_path, monkeypatch):
    from utils.scaffold.runs import load_checkpoint

    monkeypatch.setenv("SAM_BTCV_DEFAULT_MALLOC", "1")  # this process and 2 ranks hold 3 models: keep memory small

    runs = {}
    for name in ("one", "two"):
        results, ckpt = tmp_path / name / "results", tmp_path / name / "ckpt"
        runs[name] = {"results": results, "ckpt": ckpt,
                      "calls": [("segmentation_task1", script_args(stub_study, results, *TASK1)),
                                ("finetune_task2", script_args(stub_study, results, *TASK2, "--checkpoint-dir", ckpt))]}
    one = runs["one"]
    assert segmentation_task1.main(one["calls"][0][1]) == 0
    assert finetune_task2.main(one["calls"][1][1]) == 0
    two = runs["two"]
    spawn(scripts_rank, (2, free_port(), two["calls"], str(stub_study["cache"]), str(tmp_path / "workdirs")))

    # Task 1: the same numbers, the same per-sample rows, from the gathered shards
    m1 = json.loads((one["results"] / "task1" / "metrics.json").read_text())
    m2 = json.loads((two["results"] / "task1" / "metrics.json").read_text())
    assert m2["prompts"] == m1["prompts"]
    assert m2["n_slices"] == m1["n_slices"] and m2["timing"]["decoded_prompts"] == m1["timing"]["decoded_prompts"]
    assert read_csv(two["results"] / "task1" / "per_slice.csv") == read_csv(one["results"] / "task1" / "per_slice.csv")

    # Task 2: DDP over a global batch of 16 = one process with batch 16, up to float summation order
    h1 = json.loads((one["results"] / "task2" / PROMPT / "history.json").read_text())
    h2 = json.loads((two["results"] / "task2" / PROMPT / "history.json").read_text())
    assert h2["epoch"] == h1["epoch"] == [1, 2]
    assert h2["train_loss"] == pytest.approx(h1["train_loss"], abs=1e-5)
    assert h2["train_dice"] == pytest.approx(h1["train_dice"], abs=1e-5)
    assert h2["val_dice"] == pytest.approx(h1["val_dice"], abs=1e-5)
    assert h2["best_epoch"] == h1["best_epoch"]
    assert h1["train_loss"][1] != h1["train_loss"][0]  # it trained: the comparison is not of two untouched models
    run1, run2 = (Path(r["ckpt"]) / "lite_medsam" / PROMPT for r in (one, two))
    assert sorted(p.name for p in run2.iterdir()) == sorted(p.name for p in run1.iterdir())  # same run key
    for name in ("best.pt", "last.pt"):
        w1 = load_checkpoint(only_folder(run1) / name)["model"]
        w2 = load_checkpoint(only_folder(run2) / name)["model"]
        assert w1.keys() == w2.keys()
        worst = max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1)
        assert worst <= WEIGHT_TOLERANCE, f"{name}: weights differ by {worst}"
    assert (two["results"] / "task2" / "metrics.json").is_file()

    # rank 1 wrote nothing: its writes would have raised (dist_helpers.guard_writes), its folder is empty
    assert list((tmp_path / "workdirs" / "rank1").iterdir()) == []


def test_items_dealt_to_two_ranks_are_each_run_alone_by_one_rank_and_every_rank_gets_all(tmp_path):
    """finetune_task2.py --parallel prompts: each prompt type trained by one rank alone, every outcome everywhere."""
    spawn(deal_rank, (2, free_port(), str(tmp_path)), timeout=120.0)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got[0] == got[1]  # every rank, every item, in the order given
    assert [(item, r["by_rank"], r["world_inside"]) for item, r in got[0]] == [("a", 0, 1), ("b", 1, 1), ("c", 0, 1)]


def test_single_process_is_a_no_op():
    """Under plain python: rank 0 of 1, nothing sharded, the step untouched, errors raised as they are."""
    from utils.core import distributed

    assert not distributed.launched() or os.environ.get("WORLD_SIZE") == "1"
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard([3, 1, 2]) == [3, 1, 2] and distributed.gather("x") == ["x"]
    assert distributed.map_batches(lambda b: sum(b), [[1, 2], [3]]) == [3, 3]
    assert list(distributed.deal(lambda p: p * 2, ["b", "a"]).items()) == [("b", "bb"), ("a", "aa")]

    def step(batch, epoch):
        return batch

    assert distributed.data_parallel_step(torch.nn.Linear(1, 1), step) is step
    with pytest.raises(ValueError, match="boom"):
        distributed.main_then_share(lambda: (_ for _ in ()).throw(ValueError("boom")))
    with distributed.solo():
        assert distributed.world_size() == 1


def test_run_study_launches_task_stages_with_torchrun():
    import run_study

    command = run_study.torchrun_command(2, "finetune_task2.py", ["--preset", "quick"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[-3:] == [str(Path(run_study.__file__).parent / "finetune_task2.py"), "--preset", "quick"]
    with pytest.raises(SystemExit) as exit_info:  # a bad flag value: argparse's exit 2
        run_study.main(["--phantom", "--nproc", "0"])
    assert exit_info.value.code == 2
