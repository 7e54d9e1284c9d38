"""Filling a cache: the frozen image encoder run over the rows not yet stored, resumable and distributed."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from utils.core import distributed
from utils.core.precision import autocast
from utils.data.samples import SampleIndex
from utils.embeddings.storage import EmbeddingStorage
from utils.models.sam import SamModel


def encode_images(model: SamModel, images: torch.Tensor, encoder_precision: str) -> torch.Tensor:
    """float32 (N, 256, 64, 64) image embeddings of preprocessed (N, 3, S, S) ``images`` on the model's
    device (``model.prepare_image``), the encoder at ``encoder_precision`` (``--encoder-precision``)."""
    with autocast(images.device, encoder_precision):
        return model.sam.image_encoder(images).float()


def encode_missing(model: SamModel, index: SampleIndex, storage: EmbeddingStorage, encoder_precision: str,
                   rows: Sequence[int] | None = None, batch_size: int = 8, progress: bool = True) -> int:
    """Encode every row of ``rows`` (default: all of ``index``) not yet in ``storage``; returns how many it encoded.

    Rows are encoded in fixed blocks of ``batch_size`` consecutive rows of sorted ``rows``, so a row is
    always encoded in the same batch, whoever encodes it and however often the fill was interrupted.
    Under torchrun this is collective: rank 0 lists the blocks still missing, they are dealt to the
    ranks (:func:`utils.core.distributed.shard`), each rank writes its own rows of the one memory-mapped
    storage, and all ranks return after a barrier with the whole cache (the total encoded by all ranks).
    Rows another process finishes meanwhile are skipped (``done`` is re-read before each batch).
    Augmented rows are stored with their labels (uint8 (H, W)), made with their images.
    """
    from tqdm import tqdm

    wanted = sorted({int(r) for r in (range(len(index)) if rows is None else rows)})
    blocks = [wanted[i : i + batch_size] for i in range(0, len(wanted), batch_size)]
    storage.refresh()
    todo = distributed.shard(distributed.broadcast([b for b in blocks if storage.missing(b)]))
    encoded = 0
    bar = tqdm(total=sum(len(b) for b in todo), desc=f"encoding ({model.name}, {index.kind})", unit="slice",
               disable=not progress or not todo)
    for block in todo:
        storage.refresh()
        chunk = storage.missing(block)
        if chunk:
            views = [index.view(row) for row in chunk]
            with torch.inference_mode():
                batch = torch.stack([model.prepare_image(image) for image, _ in views])
                out = encode_images(model, batch.to(model.device, non_blocking=True), encoder_precision)
            labels = np.stack([label for _, label in views]) if index.kind == "aug" else None
            storage.write(chunk, out.to(torch.float16).cpu().numpy(), labels)
            encoded += len(chunk)
        bar.update(len(block))
    bar.close()
    if distributed.is_distributed():
        distributed.barrier()  # every rank's rows are on disk and marked
        storage.refresh()
        encoded = int(distributed.all_sum([encoded])[0])
    return encoded
