"""The training fast path of Tasks 2 and 3: what each switch does, per device, and how it is recorded.

The exact path is the study's: the forward pass at ``--precision`` (fp32 by default), eager PyTorch,
each batch's prompts, targets and embeddings made inside the step. The fast path changes *how* a step
is computed, never which samples, prompts or targets it sees:

- ``train_precision``: autocast of the training forward pass only (validation keeps ``--precision``):
  bf16 on a CPU; fp16 with a :class:`torch.amp.GradScaler` on a GPU (bf16 there needs no scaler).
  ``same`` = ``--precision`` (the exact path). ``auto`` = fp16 on a GPU; on a CPU bf16 only where it
  has AMX (:func:`utils.core.precision.cpu_has_amx`), else ``--precision``: without AMX bf16 is slower.
- ``compile``: ``torch.compile`` of the paired decoder (:func:`utils.inference.decoding.predict_masks_paired`);
  a failure at compile or first-call time falls back to eager and says so (:class:`CompiledOrEager`).
  ``auto`` = on for CUDA, off on a CPU (there its compile time, ~1 min per prompt type, is longer
  than a quick preset's whole training; benchmarks/run.py --sections training measures both).
- ``prefetch``: the next batch's inputs (labels -> targets, prompts -> prompt-encoder tensors,
  embeddings) are prepared in a background thread while the current step runs (:func:`batches`).
  Samples within a batch are always grouped by slice, so each slice's label and embedding is read
  once per step; the loss is a mean over samples, so grouping does not change it.
- ``resident``: the whole embedding cache is copied once to the GPU (fp16, as stored) when it fits in
  half of the free memory; otherwise embeddings come through pinned memory from the background thread.
- ``largest_batch``: on a GPU, the largest power-of-two batch (<= 1024) whose step fits, with the
  learning rate scaled by :func:`scaled_lr` (linear for SGD, square root for Adam).

Every resolved setting goes into the run identity (:mod:`utils.scaffold.runs`) and the results' config.
"""
from __future__ import annotations

import math
import queue
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from utils.core.precision import PRECISIONS, cpu_has_amx

TRAIN_PRECISIONS = ("same", "auto", *PRECISIONS)
SWITCH = ("auto", "on", "off")


@dataclass(frozen=True)
class FastPath:
    """Resolved training settings (no 'auto' left); ``record()`` goes into run identities and results."""

    train_precision: str = "fp32"
    compile: bool = False
    prefetch: bool = False
    resident: bool = False
    grad_scaler: bool = False

    @property
    def exact(self) -> bool:
        return not (self.compile or self.prefetch or self.resident or self.grad_scaler)

    def record(self) -> dict:
        return asdict(self)


def resolve(device: torch.device, precision: str, train_precision: str = "same", compile: str = "off",
            prefetch: str = "off", resident: str = "off", cache_bytes: int = 0) -> FastPath:
    """Turn the flags (auto|on|off, same|auto|fp32|bf16|fp16) into one :class:`FastPath` for ``device``."""
    cuda = torch.device(device).type == "cuda"
    if train_precision not in TRAIN_PRECISIONS:
        raise ValueError(f"--train-precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {train_precision!r}")
    for name, value in (("compile", compile), ("prefetch", prefetch), ("resident", resident)):
        if value not in SWITCH:
            raise ValueError(f"--{name} must be one of {', '.join(SWITCH)}, got {value!r}")
    cpu_auto = "bf16" if cpu_has_amx() else precision
    tp = {"same": precision, "auto": "fp16" if cuda else cpu_auto}.get(train_precision, train_precision)
    if tp == "fp16" and not cuda:
        raise ValueError("--train-precision fp16 is for GPUs; on a CPU use bf16")
    on = {"on": True, "off": False}
    use_compile = cuda if compile == "auto" else on[compile]
    use_prefetch = cuda if prefetch == "auto" else on[prefetch]
    use_resident = (cuda and fits_on_device(cache_bytes, device)) if resident == "auto" else on[resident]
    return FastPath(tp, use_compile, use_prefetch, use_resident, grad_scaler=(tp == "fp16" and cuda))


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """True when ``nbytes`` take at most half of the GPU's free memory (always False on a CPU)."""
    if torch.device(device).type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 2


def grad_scaler(fast: FastPath, device: torch.device):
    """A GradScaler for fp16 training on a GPU, else None (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(torch.device(device).type) if fast.grad_scaler else None


class CompiledOrEager:
    """``torch.compile(fn)``, falling back to ``fn`` (once, with a printed reason) if compiling or its
    first call fails: a platform without a working compiler trains at eager speed instead of stopping."""

    def __init__(self, fn: Callable, enabled: bool = True, **compile_kwargs):
        self.eager = fn
        self.note = "eager (compile off)"
        self.fn = fn
        if enabled:
            try:
                self.fn = torch.compile(fn, **compile_kwargs)
                self.note = "torch.compile"
            except Exception as exc:  # noqa: BLE001 - any failure means eager
                self._fallback(exc)

    def _fallback(self, exc: Exception) -> None:
        self.fn = self.eager
        self.note = f"eager (torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        print(f"note: {self.note}; training continues without compile")

    def __call__(self, *args, **kwargs):
        if self.fn is self.eager:
            return self.eager(*args, **kwargs)
        try:
            return self.fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)
            return self.eager(*args, **kwargs)


class ResidentEmbeddings:
    """Every row of an embedding cache held in one device tensor (float16, as the cache stores them).

    ``gather(rows)`` returns float32 (N, 256, 64, 64), bit-identical to ``cache.embeddings(rows)``
    (float16 -> float32 -> float16 is exact). ``cache``: any :class:`utils.embeddings.cache.EmbeddingReader`.
    """

    def __init__(self, cache, device: torch.device, chunk: int = 64):
        n = len(cache)
        parts = [cache.embeddings(list(range(s, min(s + chunk, n))), device).to(torch.float16)
                 for s in range(0, n, chunk)]
        self.table = torch.cat(parts) if parts else torch.zeros(0, 256, 64, 64, dtype=torch.float16, device=device)
        self.device = torch.device(device)

    def gather(self, rows: Sequence[int]) -> torch.Tensor:
        return self.table[torch.as_tensor(np.asarray(rows), device=self.device)].float()


def slice_grouped(samples: Sequence[tuple]) -> list[tuple]:
    """The batch's samples ordered by (cache id, row): each slice's samples together (stable)."""
    return sorted(samples, key=lambda s: tuple(s[:-1]))


def batches(samples: Sequence, order: np.ndarray, batch_size: int, epoch: int,
            prepare: Callable[[list, int], Any] | None = None, background: bool = False) -> Iterator:
    """The epoch's batches in ``order``; with ``prepare``, each as ``prepare(batch, epoch)``, made one
    batch ahead in a background thread when ``background`` (exceptions re-raised in the caller)."""
    raw = ([samples[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size))
    if prepare is None:
        yield from raw
        return
    if not background:
        for batch in raw:
            yield prepare(batch, epoch)
        return
    yield from _background(prepare(b, epoch) for b in raw)


_DONE = object()


def _background(items: Iterable, depth: int = 2) -> Iterator:
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((item, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((None, exc))
        q.put((_DONE, None))

    thread = threading.Thread(target=work, daemon=True, name="prepare-batches")
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


def scaled_lr(lr: float, base_batch: int, batch: int, optimizer: str) -> float:
    """The learning rate for ``batch`` given one tuned at ``base_batch``: linear scaling for SGD
    (Goyal et al. 2017), square-root scaling for Adam (its update is normalised per parameter)."""
    ratio = batch / base_batch
    return lr * (ratio if optimizer.lower() == "sgd" else math.sqrt(ratio))


def largest_batch(fits: Callable[[int], bool], start: int, limit: int = 1024) -> int:
    """The largest batch in start, 2*start, 4*start ... <= limit for which ``fits(batch)`` is True
    (``fits`` runs one training step and returns False on out-of-memory); ``start`` if none larger fits."""
    best, batch = start, start * 2
    while batch <= limit and fits(batch):
        best, batch = batch, batch * 2
    return best


def cuda_step_fits(step: Callable[[int], None]) -> Callable[[int], bool]:
    """Wrap ``step(batch)`` into ``fits(batch)`` for :func:`largest_batch`: False on CUDA out-of-memory."""
    def fits(batch: int) -> bool:
        try:
            step(batch)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()
    return fits
