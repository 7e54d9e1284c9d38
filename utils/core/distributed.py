"""Several processes on one job: ``torch.distributed`` as ``torchrun`` starts it (gloo on CPUs, NCCL on GPUs).

    torchrun --standalone --nproc_per_node=4 finetune_task2.py --preset paper      # 4 GPUs, one node

Under plain ``python`` (no ``RANK``/``WORLD_SIZE`` in the environment) every function here is the
single-process no-op: rank 0 of 1, ``shard`` returns everything, ``gather`` a one-element list, and no
process group is created, so every script runs exactly as before.

Under torchrun, :func:`init` (called by ``utils.scaffold.session.open_experiment``) joins the process group from
torchrun's environment variables; each rank uses ``cuda:LOCAL_RANK`` when the device is a GPU; ranks
other than 0 print nothing to stdout. What is split and how:

- work lists (cache rows, decoder batches) are dealt round-robin in fixed blocks (:func:`shard`,
  :func:`map_batches`), and results come back in the single-process order, so a gathered result is
  the one a single process computes;
- training (:func:`data_parallel_step`) wraps the module in ``DistributedDataParallel`` and splits
  each GLOBAL batch across ranks, weighting each rank's loss so the averaged gradient is the
  single-process batch gradient;
- files are written by rank 0 only (:func:`is_main`); every rank reads them after a :func:`barrier`.

Every collective here must be called by every rank in the same order; a script that calls one on
rank 0 only hangs until the process-group timeout (``SAM_BTCV_DIST_TIMEOUT_MIN``, default 30 min).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import sys
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
_solo = False  # inside solo(): this rank works alone (one prompt type per rank)


def launched() -> bool:
    """Whether this process was started by torchrun (or srun with its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init() -> bool:
    """Join the process group torchrun describes (once); returns whether this process is one of several ranks.

    Backend: gloo for CPU tensors and, when CUDA is present, NCCL for CUDA tensors. Without torchrun's
    variables: nothing happens (a single process).
    """
    if dist.is_available() and dist.is_initialized():
        return world_size() > 1
    if not launched():
        return False
    cuda = torch.cuda.is_available() and local_rank() < torch.cuda.device_count()
    if cuda:
        torch.cuda.set_device(local_rank())
    timeout = _dt.timedelta(minutes=float(os.environ.get("SAM_BTCV_DIST_TIMEOUT_MIN", "30")))
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
    if dist.get_rank() != 0:  # one voice: rank 0 prints; errors (stderr) still come from every rank
        sys.stdout = open(os.devnull, "w")
        os.environ["TQDM_DISABLE"] = "1"
    return world_size() > 1


def world_size() -> int:
    if _solo or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def rank() -> int:
    if _solo or not (dist.is_available() and dist.is_initialized()):
        return 0
    return dist.get_rank()


def global_rank() -> int:
    """This process's rank in the job, also inside :func:`solo` (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """Whether this process writes files: rank 0 (always true in a single process or inside solo())."""
    return rank() == 0


def device_for_rank(device: torch.device) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA device under torchrun (one GPU per rank); otherwise ``device``."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", local_rank())
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's items: every world_size-th, starting at its rank (deterministic; all of them in one process)."""
    return list(items)[rank() :: world_size()]


def gather(obj: Any) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, obj)
    return parts


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over ranks of a few numbers (float64 on the CPU)."""
    if not is_distributed():
        return [float(v) for v in values]
    total = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def map_batches(fn: Callable[[T], Any], batches: Sequence[T]) -> list:
    """``[fn(b) for b in batches]``, the batches dealt round-robin to the ranks; every rank gets every result,
    in batch order. Batches are not re-cut, so each result is the one a single process computes."""
    if not is_distributed():
        return [fn(b) for b in batches]
    mine = {i: fn(batches[i]) for i in range(rank(), len(batches), world_size())}
    merged: dict = {}
    for part in gather(mine):
        merged.update(part)
    return [merged[i] for i in range(len(batches))]


def deal(fn: Callable[[T], Any], items: Sequence[T]) -> dict:
    """``{item: fn(item)}`` in ``items``' order, the items dealt round-robin to the ranks and each rank running
    its share alone (:func:`solo`: no sharding, no DDP inside ``fn``); every rank gets every result. In one
    process: every item here. Items are hashable (prompt type names)."""
    if not is_distributed():
        return {item: fn(item) for item in items}
    share = shard(items)  # before solo(): inside it this rank is rank 0 of 1
    with solo():
        mine = {item: fn(item) for item in share}
    merged = {item: result for part in gather(mine) for item, result in part.items()}
    return {item: merged[item] for item in items}


def main_then_share(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on rank 0 only (it may write files) and return its result, or raise its exception, on every rank."""
    outcome: tuple = (None, None)
    if is_main():
        try:
            outcome = (fn(*args, **kwargs), None)
        except Exception as exc:  # re-raised on every rank, so no rank waits for a partner that failed
            outcome = (None, exc)
    result, error = broadcast(outcome)
    if error is not None:
        raise error
    return result


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. creates a shared folder), the others after it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Inside: this rank works alone (rank 0 of 1: no sharding, no DDP, it writes its own files)."""
    global _solo
    before, _solo = _solo, True
    try:
        yield
    finally:
        _solo = before


class _StepRunner(torch.nn.Module):
    """Lets DDP see a task's step as the module's forward pass (its hooks need one per backward)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, step, batch, epoch):
        result = step(batch, epoch)
        return result.loss, result


def data_parallel_step(module: torch.nn.Module, step: Callable):
    """``step`` (batch, epoch) -> StepResult, made data-parallel over the ranks; ``step`` itself in one process.

    The returned step takes the GLOBAL batch, runs ``step`` on this rank's share (:func:`shard`) through
    ``DistributedDataParallel(module)``, and returns a StepResult for the whole batch: the loss's value is
    the global batch loss, ``metric_sum``/``count`` are summed over ranks. ``step``'s loss must be a mean
    over its samples: each rank's loss is weighted by ``world * share / batch`` so that DDP's average of
    the ranks' gradients is the gradient of the single-process batch mean. A rank with no share (a last
    batch smaller than the world) runs one sample at weight 0, since every rank must join each backward.
    """
    if not is_distributed():
        return step
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    ddp = DistributedDataParallel(_StepRunner(module), device_ids=[device.index] if device.type == "cuda" else None,
                                  find_unused_parameters=True)  # a prompt type leaves some embeddings unused

    def sharded_step(batch, epoch):
        share = shard(batch)
        weight = world_size() * len(share) / len(batch)
        loss, result = ddp(step, share or list(batch[:1]), epoch)
        n = len(share)
        loss_sum, metric_sum, count = all_sum([float(loss.detach()) * n, result.metric_sum if n else 0.0, n])
        scaled = loss * weight
        global_loss = torch.as_tensor(loss_sum / count, dtype=scaled.dtype, device=scaled.device)
        # value: the global batch loss (logged, checked for divergence, equal on every rank); gradient: scaled's
        return dataclasses.replace(result, loss=scaled + (global_loss - scaled.detach()), metric_sum=metric_sum,
                                   count=int(count))

    return sharded_step
