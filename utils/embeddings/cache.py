"""Image-encoder outputs, computed once per slice (and per augmented view), read by every task.

The image encoder is frozen in every task, so Tasks 1-3 read its embeddings from here instead of
running it. What a task reads is :class:`EmbeddingReader`: the model, the sample index (``index``:
which rows there are and their (row, organ) samples, :mod:`utils.data.samples`) and the embeddings of
rows. :class:`EmbeddingCache` is that reader over a keyed, memory-mapped folder
``data/embeddings/<model>-<kind>-<key>/`` (:mod:`utils.embeddings.storage`) named by its signature
(:mod:`utils.embeddings.signature`), filled by :meth:`EmbeddingCache.ensure`
(:mod:`utils.embeddings.encoding`), which resumes at the first row not written.

Kinds: ``base`` has one row per store slice; ``aug`` has ``views`` rows per training slice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from utils.core import distributed
from utils.data.augmentation import AugmentSpec
from utils.data.samples import SampleIndex
from utils.data.slice_store import SliceStore
from utils.embeddings.encoding import encode_missing
from utils.embeddings.signature import cache_signature
from utils.embeddings.storage import EmbeddingStorage
from utils.models.sam import SamModel

DEFAULT_CACHE_ROOT = Path(__file__).resolve().parent.parent.parent / "data" / "embeddings"


class EmbeddingReader:
    """What every task reads from a cache: ``model``, ``index`` (a :class:`utils.data.samples.SampleIndex`)
    and :meth:`embeddings` of rows; a row's label and view come from the index.

    A stand-in (the benchmarks' random embeddings) sets ``model`` and ``index`` and implements
    :meth:`embeddings`; everything else here follows from those."""

    model: SamModel
    index: SampleIndex

    def embeddings(self, rows: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 (len(rows), 256, 64, 64) embeddings of ``rows`` on ``device``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.index)

    def label(self, row: int) -> np.ndarray:
        """uint8 (H, W) label of ``row``."""
        return self.index.label(row)

    def view(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 (H, W) in [0, 1], label uint8 (H, W)) of ``row``, as the encoder saw it."""
        return self.index.view(row)


def _augmented_label_shape(index: SampleIndex) -> tuple[int, int]:
    store = index.store
    sizes = {store.label(i).shape for i in sorted({s for s, _ in index.sources})}
    if len(sizes) != 1:
        raise ValueError(f"{store.path}: augmented views need one slice size, the store has {sizes}")
    return next(iter(sizes))


class EmbeddingCache(EmbeddingReader):
    """One model's embeddings of one store (``augment=None``) or of its augmented training views.

    ``storage`` (:class:`utils.embeddings.storage.EmbeddingStorage`) is the folder at ``path``;
    ``signature`` the dict its key is made of."""

    def __init__(self, model: SamModel, store: SliceStore, augment: AugmentSpec | None = None,
                 root: str | Path = DEFAULT_CACHE_ROOT, encoder_precision: str = "fp32"):
        self.model = model
        self.encoder_precision = encoder_precision
        # Augmented labels are made with their images and kept with the embeddings: the index reads them there.
        self.index = SampleIndex(store, augment, stored_label=self._stored_label)
        self.signature = cache_signature(model, self.index, encoder_precision)
        prompt_encoder = model.sam.prompt_encoder
        row_shape = (prompt_encoder.embed_dim, *prompt_encoder.image_embedding_size)
        label_shape = _augmented_label_shape(self.index) if self.index.kind == "aug" else None
        with distributed.main_first():  # under torchrun, rank 0 creates the folder (signature, done) once
            self.storage = EmbeddingStorage(root, f"{model.name}-{self.index.kind}", self.signature, row_shape,
                                            label_shape)
        self.path = self.storage.path

    def _stored_label(self, row: int) -> np.ndarray:
        return self.storage.read_label(row)

    def ensure(self, rows: Sequence[int] | None = None, batch_size: int = 8, progress: bool = True) -> int:
        """Encode every row of ``rows`` (default: all) not yet in the cache; returns how many it encoded.
        Collective under torchrun; see :func:`utils.embeddings.encoding.encode_missing`."""
        return encode_missing(self.model, self.index, self.storage, self.encoder_precision, rows, batch_size,
                              progress)

    def encoded_rows(self) -> list[int]:
        """The rows already in the cache (what another script may read without encoding)."""
        rows = range(len(self.index))
        missing = set(self.storage.missing(rows))
        return [r for r in rows if r not in missing]

    def embeddings(self, rows: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 (len(rows), 256, 64, 64) embeddings on ``device``; every row must be encoded."""
        out = torch.from_numpy(self.storage.read(rows))
        if torch.device(device).type == "cuda":
            out = out.pin_memory()
        return out.to(device, non_blocking=True).float()
