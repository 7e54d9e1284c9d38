"""Image-encoder outputs, computed once per slice (and per augmented view), read by every task.

The image encoder is frozen in every task, so Tasks 1-3 read its embeddings from here instead of
running it. An :class:`EmbeddingCache` joins three pieces, each in its own module:

- :mod:`utils.embeddings.storage`: the keyed, memory-mapped folder
  ``data/embeddings/<model>-<kind>-<key>/`` whose signature covers everything the embeddings depend
  on: model, checkpoint digest, slice-store key, preprocessing (described, and a digest of its output
  on the first slice), encoder precision, augmentation, format version. A changed input means a new
  folder, never a stale read;
- :mod:`utils.embeddings.samples`: which rows there are (store slices, or augmented views of the training
  slices made by :mod:`utils.data.augmentation`) and the (row, organ) samples on them;
- the encoding loop itself (:meth:`EmbeddingCache.ensure`), which resumes at the first row not written.

Kinds: ``base`` has one row per store slice; ``aug`` has ``views`` rows per training slice.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from utils.core import distributed
from utils.core.hashing import short_digest
from utils.core.precision import autocast
from utils.data.augmentation import AugmentSpec
from utils.data.slice_store import SliceStore
from utils.embeddings.samples import SampleIndex
from utils.embeddings.storage import EmbeddingStorage
from utils.models.sam import SamModel

# 2: "precision" became "encoder_precision"; 3: "input_probe" (a digest of the preprocessed first slice)
CACHE_FORMAT_VERSION = 3
DEFAULT_CACHE_ROOT = Path(__file__).resolve().parents[2] / "data" / "embeddings"


def input_probe(model: SamModel, store: SliceStore) -> str:
    """Digest of the encoder input the model's preprocessing makes from the store's first slice.

    ``preprocessing`` in the signature only describes the code; this catches a change in what the code
    actually does (a new resize or normalisation) that its description did not follow. It costs one
    resize, and no encoder pass.
    """
    if len(store) == 0:
        return "empty"
    x = model.prepare_image(store.load(0)[0]).cpu().numpy().astype(np.float32)
    return short_digest(x.tobytes(), 16)


def _augmented_label_shape(store: SliceStore, index: SampleIndex) -> tuple[int, int]:
    sizes = {store.label(i).shape for i in sorted({s for s, _ in index.sources})}
    if len(sizes) != 1:
        raise ValueError(f"{store.path}: augmented views need one slice size, the store has {sizes}")
    return next(iter(sizes))


class EmbeddingCache:
    """One model's embeddings of one store (``augment=None``) or of its augmented training views."""

    def __init__(self, model: SamModel, store: SliceStore, augment: AugmentSpec | None = None,
                 root: str | Path = DEFAULT_CACHE_ROOT, encoder_precision: str = "fp32"):
        self.model = model
        self.store = store
        self.augment = augment
        self.encoder_precision = encoder_precision
        self.index = SampleIndex(store, augment)
        self.kind = self.index.kind
        self.signature = {
            "format_version": CACHE_FORMAT_VERSION,
            "model": model.name,
            "checkpoint_sha256": model.checkpoint_sha256,
            "store_key": store.key,
            "preprocessing": model.preprocessing,
            "input_probe": input_probe(model, store),
            "encoder_precision": encoder_precision,
            "dtype": "float16",
            "kind": self.kind,
            "augment": asdict(augment) if augment else None,
            "rows": len(self.index),
        }
        prompt_encoder = model.sam.prompt_encoder
        row_shape = (prompt_encoder.embed_dim, *prompt_encoder.image_embedding_size)
        label_shape = _augmented_label_shape(store, self.index) if self.kind == "aug" else None
        with distributed.main_first():  # under torchrun, rank 0 creates the folder (signature, done) once
            self.storage = EmbeddingStorage(root, f"{model.name}-{self.kind}", self.signature, row_shape, label_shape)
        if self.kind == "aug":
            self.index._stored_label = self.storage.read_label
        self.path = self.storage.path

    # ----------------------------------------------------------------------------------- encoding
    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        with autocast(batch.device, self.encoder_precision):
            return self.model.sam.image_encoder(batch).float()

    def ensure(self, rows: Sequence[int] | None = None, batch_size: int = 8, progress: bool = True) -> int:
        """Encode every row of ``rows`` (default: all) not yet in the cache. Returns how many it encoded.

        Rows are encoded in fixed blocks of ``batch_size`` consecutive rows of sorted ``rows``, so a row is
        always encoded in the same batch, whoever encodes it and however often the fill was interrupted.
        Under torchrun this is collective: rank 0 lists the blocks still missing, they are dealt to the
        ranks (:func:`utils.core.distributed.shard`), each rank writes its own rows of the one memory-mapped
        cache, and all ranks return after a barrier with the whole cache (the total encoded by all ranks).
        Rows another process finishes meanwhile are skipped (``done`` is re-read before each batch).
        """
        from tqdm import tqdm

        wanted = sorted({int(r) for r in (range(len(self.index)) if rows is None else rows)})
        blocks = [wanted[i : i + batch_size] for i in range(0, len(wanted), batch_size)]
        self.storage.refresh()
        todo = distributed.shard(distributed.broadcast([b for b in blocks if self.storage.missing(b)]))
        encoded = 0
        bar = tqdm(total=sum(len(b) for b in todo), desc=f"encoding ({self.model.name}, {self.kind})", unit="slice",
                   disable=not progress or not todo)
        for block in todo:
            self.storage.refresh()
            chunk = self.storage.missing(block)
            if chunk:
                views = [self.index.view(row) for row in chunk]
                with torch.inference_mode():
                    batch = torch.stack([self.model.prepare_image(image) for image, _ in views])
                    out = self._encode(batch.to(self.model.device, non_blocking=True))
                labels = np.stack([label for _, label in views]) if self.kind == "aug" else None
                self.storage.write(chunk, out.to(torch.float16).cpu().numpy(), labels)
                encoded += len(chunk)
            bar.update(len(block))
        bar.close()
        if distributed.is_distributed():
            distributed.barrier()  # every rank's rows are on disk and marked
            self.storage.refresh()
            encoded = int(distributed.all_sum([encoded])[0])
        return encoded

    # ----------------------------------------------------------------------------------- reading
    @property
    def done(self) -> np.ndarray:
        return self.storage.done

    def embeddings(self, rows: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 (len(rows), 256, 64, 64) embeddings; every row must be encoded."""
        out = torch.from_numpy(self.storage.read(rows))
        if torch.device(device).type == "cuda":
            out = out.pin_memory()
        return out.to(device, non_blocking=True).float()

    def __len__(self) -> int:
        return len(self.index)

    def rows_for(self, split: str) -> list[int]:
        return self.index.rows_for(split)

    def samples(self, rows: Sequence[int]) -> list[tuple[int, int]]:
        return self.index.samples(rows)

    def view(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.view(row)

    def label(self, row: int) -> np.ndarray:
        return self.index.label(row)

    def organs(self, row: int) -> dict[int, int]:
        return self.index.organs(row)

    def store_index(self, row: int) -> int:
        return self.index.store_index(row)

    def view_id(self, row: int) -> int:
        return self.index.view_id(row)
