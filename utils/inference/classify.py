"""Task 3's inference: class logits and predicted organs for (slice, organ) samples, from the
classifying mask decoder (``modified_classifier.ClassifyingMaskDecoder``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from utils.core import distributed
from utils.core.precision import autocast
from utils.embeddings.cache import EmbeddingReader
from utils.inference.batches import build_batch, gather_embeddings, group_by_size
from utils.inference.decoding import prompt_inputs


def class_inputs(cache: EmbeddingReader, samples: Sequence[tuple[int, int]], prompt_type: str, seed: int,
                 epoch: int = -1, resident=None) -> tuple:
    """(points, boxes, embeddings float32 (N, 256, 64, 64), targets int64 (N,) = organ label - 1) for N
    samples of one slice size, on the model's device: everything before the forward pass (no autograd,
    so the training fast path makes it ahead in a background thread). ``resident``: a
    :class:`utils.train.fastpath.ResidentEmbeddings` to gather from instead of the cache."""
    model = cache.model
    _, prompts, sizes = build_batch(cache, samples, prompt_type, seed, epoch)
    points, boxes = prompt_inputs(model, prompts, sizes)
    embeddings = resident.gather([r for r, _ in samples]) if resident else gather_embeddings(cache, samples)
    targets = torch.as_tensor([organ - 1 for _, organ in samples], device=embeddings.device)
    return points, boxes, embeddings, targets


def class_forward(classifier, prompt_encoder, inputs: tuple, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """(logits float32 (N, 13), targets) from :func:`class_inputs`' tuple, the forward at ``precision``."""
    points, boxes, embeddings, targets = inputs
    with autocast(embeddings.device, precision):
        sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=None)
        logits = classifier.classify(embeddings, prompt_encoder.get_dense_pe(), sparse, dense).float()
    return logits, targets


def class_logits(cache: EmbeddingReader, classifier, samples: Sequence[tuple[int, int]], prompt_type: str, seed: int,
                 epoch: int = -1, prompt_encoder=None, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """(logits float32 (N, 13), targets int64 (N,) = organ label - 1) for N samples of one slice size.

    The forward pass runs at ``precision`` (``--precision``), like every decoder pass of the suite.
    """
    return class_forward(classifier, prompt_encoder or cache.model.sam.prompt_encoder,
                         class_inputs(cache, samples, prompt_type, seed, epoch), precision)


@torch.inference_mode()
def predict_classes(cache: EmbeddingReader, classifier, samples: Sequence[tuple[int, int]], prompt_type: str,
                    seed: int = 0, batch_size: int = 32, precision: str = "fp32", prompt_encoder=None
                    ) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Predicted organ label (1..13) for every sample; returns (samples in prediction order, labels).

    Collective under torchrun (each rank predicts a share of the batches; every rank gets all labels)."""
    def predict(batch):
        logits, _ = class_logits(cache, classifier, batch, prompt_type, seed, prompt_encoder=prompt_encoder,
                                 precision=precision)
        return logits.argmax(1).cpu().numpy() + 1

    batches = list(group_by_size(cache, samples, batch_size))
    ordered = [sample for batch in batches for sample in batch]
    predicted = distributed.map_batches(predict, batches)  # under torchrun: batches dealt to ranks, gathered in order
    return ordered, np.concatenate(predicted) if predicted else np.zeros(0, int)
