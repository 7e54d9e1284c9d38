"""Embeddings of one CT's slices without a slice store or a cache folder: each slice encoded the first time a
decoder asks for it, kept in memory for the rest of the run (``segment_volume.py``: propagation visits only
the slices an organ reaches, so most of a long CT is never encoded). :meth:`VolumeEmbeddings.reuse` takes
the slices a slice store's embedding cache already holds (``segment_volume.py --embeddings-from``).

:class:`VolumeEmbeddings` is an :class:`utils.embeddings.cache.EmbeddingReader` as far as
:class:`utils.inference.decoder.CacheDecoder` reads one: ``model``, ``index.shape(row)`` and
``embeddings(rows, device)``, with rows = the display stack's slice indices z.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from utils.embeddings.encoding import encode_images
from utils.models.sam import SamModel


class _SliceShapes:
    def __init__(self, images: np.ndarray):
        self.images = images

    def shape(self, row: int) -> tuple[int, int]:
        return tuple(self.images.shape[1:])


class VolumeEmbeddings:
    """float32 (N, 256, 64, 64) embeddings of display slices ``images`` (Z, H, W) in [0, 1], encoded on first
    use in batches of ``batch_size`` (the encoder at ``encoder_precision``). ``n_encoded`` counts them."""

    def __init__(self, model: SamModel, images: np.ndarray, encoder_precision: str = "fp32", batch_size: int = 4):
        self.model, self.images = model, images
        self.encoder_precision, self.batch_size = encoder_precision, max(1, int(batch_size))
        self.index = _SliceShapes(images)
        self._stored: dict[int, torch.Tensor] = {}
        self._reused: set[int] = set()

    @property
    def n_encoded(self) -> int:
        return len(self._stored) - len(self._reused)

    @property
    def n_reused(self) -> int:
        return len(self._reused)

    def reuse(self, cache) -> int:
        """Take, from ``cache`` (an :class:`utils.embeddings.cache.EmbeddingCache` of this model and encoder
        precision: its signature says so), the embedding of every slice whose image is bit for bit one of this
        CT's display slices (a store cut from the same file holds exactly these pixels), so that those slices
        are not encoded again. The cache keeps embeddings in float16: a reused slice's embedding is that
        rounding of what encoding here would give. Returns how many slices are now taken from the cache."""
        wanted: dict[bytes, list[int]] = {}
        for z in range(len(self.images)):
            wanted.setdefault(np.ascontiguousarray(self.images[z], np.float32).tobytes(), []).append(z)
        for row in cache.encoded_rows():
            image = np.ascontiguousarray(cache.view(row)[0], np.float32)
            if image.shape != self.images.shape[1:]:
                continue
            for z in wanted.pop(image.tobytes(), []):
                self._stored[z] = cache.embeddings([row])[0]
                self._reused.add(z)
        return self.n_reused

    @torch.no_grad()
    def _encode(self, rows: list[int]) -> None:
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            batch = torch.stack([self.model.prepare_image(self.images[z]) for z in chunk]).to(self.model.device)
            for z, embedding in zip(chunk, encode_images(self.model, batch, self.encoder_precision)):
                self._stored[z] = embedding.cpu()

    def embeddings(self, rows: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        rows = [int(r) for r in rows]
        for z in rows:
            if not 0 <= z < len(self.images):
                raise IndexError(f"slice {z} is outside the volume's 0..{len(self.images) - 1}")
        self._encode(sorted(set(rows) - set(self._stored)))
        return torch.stack([self._stored[z] for z in rows]).to(device)
