"""Ranks for tests/test_distributed.py: started with torch.multiprocessing (spawn), gloo on the CPU.

Nothing here imports the suite at module level: a spawned rank imports this module first, then sets
torchrun's environment variables, and only then imports the scripts.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, args: tuple, nprocs: int = 2, timeout: float = 480.0) -> None:
    """Run ``fn(rank, *args)`` on ``nprocs`` spawned ranks; raise if one fails or the deadline passes."""
    context = torch.multiprocessing.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):  # raises (and terminates the others) when a rank fails
            if time.monotonic() > deadline:
                raise TimeoutError(f"ranks still running after {timeout:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


def become_rank(rank: int, world: int, port: int) -> None:
    """The environment torchrun gives a rank, one thread per rank (2 ranks share 2 cores)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TQDM_DISABLE="1",
                      SAM_BTCV_DEFAULT_MALLOC="1")  # glibc defaults: two ranks' memory stays small on CI
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning, module="timm")


# ------------------------------------------------------------------------------- a stub image encoder
class StubEncoder(torch.nn.Module):
    """(N, 3, S, S) -> (N, C, h, w): average pooling + a seeded 1x1 convolution; cheap and deterministic."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.size = size
        self.weight = torch.nn.Parameter(torch.randn(channels, 3, 1, 1, generator=generator))

    def forward(self, x):
        return torch.nn.functional.conv2d(torch.nn.functional.adaptive_avg_pool2d(x, self.size), self.weight)


class StubModel:
    """What EmbeddingCache needs of a SamModel, with small rows (8, 16, 16): for cache-mechanics tests."""

    name = "stub"
    checkpoint_sha256 = "0" * 64
    preprocessing = "stub: image repeated to 3 channels, 64x64 nearest"
    device = torch.device("cpu")

    def __init__(self):
        self.sam = SimpleNamespace(prompt_encoder=SimpleNamespace(embed_dim=8, image_embedding_size=(16, 16)),
                                   image_encoder=StubEncoder(8, 16))

    def prepare_image(self, image):
        x = torch.as_tensor(image, dtype=torch.float32)
        x = x if x.ndim == 3 else x[..., None].expand(*x.shape, 3)
        return torch.nn.functional.interpolate(x.permute(2, 0, 1)[None], size=(64, 64))[0]


def fill_rank(rank: int, world: int, port: int, slices: str, root: str, batch: int, die_after: int) -> None:
    """One rank of a cache fill; rank 1 exits abruptly after ``die_after`` writes when that is > 0."""
    become_rank(rank, world, port)
    from utils.core import distributed
    from utils.data.slice_store import SliceStore
    from utils.embeddings.cache import EmbeddingCache

    distributed.init()
    cache = EmbeddingCache(StubModel(), SliceStore(slices), root=root)
    if die_after and rank == 1:
        write, writes = cache.storage.write, []

        def write_then_die(*args, **kwargs):
            write(*args, **kwargs)
            writes.append(1)
            if len(writes) >= die_after:
                os._exit(3)  # killed midway: no cleanup, no barrier

        cache.storage.write = write_then_die
    cache.ensure(batch_size=batch, progress=False)
    assert cache.storage.done.all()
    torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------- scripts on ranks
def guard_writes(allowed: Path) -> list:
    """Make every file write of the suite outside ``allowed`` (the cache) fail loudly on this rank."""
    import contextlib

    import utils.core.io

    original = utils.core.io.atomic_path
    refused: list = []

    @contextlib.contextmanager
    def refuse(path):
        if not Path(path).resolve().is_relative_to(allowed.resolve()):
            refused.append(str(path))
            raise AssertionError(f"rank {os.environ['RANK']} wrote {path}: only rank 0 writes files")
        with original(path) as tmp:
            yield tmp

    utils.core.io.atomic_path = refuse  # before the modules that import it by name are imported
    return refused


def scripts_rank(rank: int, world: int, port: int, calls: list, cache: str, workdir: str) -> None:
    """Run ``calls`` [(module name, argv)] as torchrun would on this rank; rank > 0 may write into the cache only."""
    become_rank(rank, world, port)
    import importlib

    if rank != 0:
        guard_writes(Path(cache))
        folder = Path(workdir) / f"rank{rank}"
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
    for module_name, argv in calls:
        code = importlib.import_module(module_name).main(argv)
        assert code == 0, f"{module_name} exited {code} on rank {rank}"
    torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------- items dealt to ranks
def deal_rank(rank: int, world: int, port: int, out: str) -> None:
    """distributed.deal over three items on this rank: what each rank got back, and who computed what."""
    become_rank(rank, world, port)
    import json

    from utils.core import distributed

    distributed.init()
    result = distributed.deal(lambda item: {"item": item, "by_rank": rank, "world_inside": distributed.world_size()},
                              ["a", "b", "c"])
    Path(out, f"rank{rank}.json").write_text(json.dumps(list(result.items())))
    torch.distributed.destroy_process_group()
