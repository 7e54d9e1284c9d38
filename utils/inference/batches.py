"""Batches of (cache row, organ) samples: their ground-truth masks, the prompt each gets (seeded per
sample) and their embeddings gathered from the cache (decoding them: ``utils.inference.decoder.CacheDecoder``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from utils.core.seeding import child_rng
from utils.embeddings.cache import EmbeddingReader
from utils.inference.decoder import slice_embeddings
from utils.inference.prompts import (
    DEFAULT_BOX_JITTER_PX,
    Prompt,
    make_prompt,
    prompt_type_id,
)


def sample_prompt(cache: EmbeddingReader, row: int, organ: int, mask: np.ndarray, prompt_type: str, seed: int,
                  epoch: int = -1, box_jitter: int = DEFAULT_BOX_JITTER_PX) -> Prompt:
    """The prompt for one (cache row, organ) sample; random draws depend only on these keys and seed.

    ``epoch`` >= 0 gives training a fresh draw per epoch; evaluation uses -1 (one fixed draw).
    ``box_jitter`` (slice px) is used by ``jittered_box`` only; the slice's pixel spacing (from the store) by
    ``propagated_box`` only.
    """
    index = cache.index
    store_index = index.store_index(row)
    return prompt_for(mask, prompt_type, seed, store_index, organ, index.view_id(row), epoch, box_jitter,
                      index.store.records[store_index].spacing)


def prompt_for(mask: np.ndarray, prompt_type: str, seed: int, store_index: int, organ: int, view: int = 0,
               epoch: int = -1, box_jitter: int = DEFAULT_BOX_JITTER_PX,
               spacing: tuple[float, float] | None = None) -> Prompt:
    """The prompt of (store slice, view, organ, type, epoch) for ``seed``: the one every path draws.

    ``box_jitter`` (``--box-jitter``, slice px) reaches ``jittered_box`` only, ``spacing`` ((row, column) mm)
    ``propagated_box`` only: the other types' draws do not depend on them.
    """
    rng = child_rng(seed, epoch + 1, store_index, view, organ, prompt_type_id(prompt_type))
    return make_prompt(mask, prompt_type, rng, box_jitter=box_jitter, spacing=spacing)


def build_batch(cache: EmbeddingReader, samples: Sequence[tuple[int, int]], prompt_type: str, seed: int,
                epoch: int = -1, box_jitter: int = DEFAULT_BOX_JITTER_PX):
    """(masks bool (N, H, W) tensor, prompts, original sizes) for N samples of one slice size.

    ``box_jitter``: slice px for ``jittered_box`` prompts (ignored by the other types)."""
    masks, prompts, sizes = [], [], []
    labels: dict[int, np.ndarray] = {}
    for row, organ in samples:
        if row not in labels:
            labels[row] = cache.label(row)
        mask = labels[row] == organ
        masks.append(mask)
        prompts.append(sample_prompt(cache, row, organ, mask, prompt_type, seed, epoch, box_jitter))
        sizes.append(mask.shape)
    return torch.from_numpy(np.stack(masks)), prompts, sizes


def gather_embeddings(cache: EmbeddingReader, samples: Sequence[tuple[int, int]]) -> torch.Tensor:
    """float32 (N, 256, 64, 64): each (cache row, organ) sample's slice embedding, each slice read from the
    cache once (``utils.inference.decoder.slice_embeddings``)."""
    return slice_embeddings(cache, [r for r, _ in samples])


def group_by_size(cache: EmbeddingReader, samples: Sequence[tuple[int, int]], batch_size: int):
    """Batches of at most ``batch_size`` samples, each batch of one slice size, in sample order."""
    batches: dict[tuple[int, int], list] = {}
    for sample in samples:
        bucket = batches.setdefault(cache.index.shape(sample[0]), [])
        bucket.append(sample)
        if len(bucket) == batch_size:
            yield batches.pop(cache.index.shape(sample[0]))
    for bucket in batches.values():
        if bucket:
            yield bucket
