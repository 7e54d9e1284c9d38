"""The one decoder over the embedding cache: segment-anything's ``SamPredictor``, for many slices at once.

``SamPredictor`` holds a model and one image's features (``set_image``) and decodes prompts for them
(``predict``, optionally with a previous low-res mask as ``mask_input``). :class:`CacheDecoder` holds a
model's cache and the prompt encoder + mask decoder to decode with (the model's own, or Task 2's
fine-tuned copies), the decoder precision and the single-/multi-mask choice, and decodes prompts for
cache rows: each prompt paired with its own slice's embedding, so one call mixes slices
(:func:`utils.inference.decoding.decode`, the paired primitive it calls).

Every mask Task 1, the interactive rounds and the 3-D protocols score comes from :meth:`CacheDecoder.decode`.
Prompts are in slice pixels (points (x, y) = (column, row), boxes XYXY), as in ``SamPredictor.predict``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from utils.core.precision import autocast
from utils.embeddings.cache import EmbeddingCache
from utils.inference.decoding import decode
from utils.inference.prompts import Prompt


def slice_embeddings(cache: EmbeddingCache, rows: Sequence[int]) -> torch.Tensor:
    """float32 (N, 256, 64, 64) on the cache model's device: the embedding of cache row ``rows[i]`` at i,
    each distinct slice read from the cache once."""
    unique, inverse = np.unique(rows, return_inverse=True)
    device = cache.model.device
    return cache.embeddings(unique, device)[torch.as_tensor(inverse, device=device)]


class CacheDecoder:
    """Prompts -> mask logits from cached slice embeddings (``SamPredictor.predict`` over the cache).

    cache: the model's :class:`utils.embeddings.cache.EmbeddingCache` (its ``model`` decodes);
    prompt_encoder / mask_decoder: None = the model's own (pass Task 2's fine-tuned copies);
    precision: the decoder's autocast (``--precision``: fp32, or the bf16/fp16 fast path);
    multimask_output: take SAM's best-IoU mask of three instead of the single-mask output.
    ``n_decoded`` counts the prompts decoded so far.
    """

    def __init__(self, cache: EmbeddingCache, prompt_encoder: torch.nn.Module | None = None,
                 mask_decoder: torch.nn.Module | None = None, precision: str = "fp32",
                 multimask_output: bool = False):
        self.cache, self.model = cache, cache.model
        self.prompt_encoder = prompt_encoder or self.model.sam.prompt_encoder
        self.mask_decoder = mask_decoder or self.model.sam.mask_decoder
        self.precision, self.multimask_output = precision, multimask_output
        self.n_decoded = 0

    def embeddings(self, rows: Sequence[int]) -> torch.Tensor:
        """float32 (N, 256, 64, 64) on the model's device: row i's slice embedding (:func:`slice_embeddings`)."""
        return slice_embeddings(self.cache, rows)

    @torch.no_grad()
    def decode(self, embeddings: torch.Tensor, prompts: Sequence[Prompt], sizes: Sequence[tuple[int, int]],
               mask_input: torch.Tensor | None = None, with_iou: bool = False) -> tuple[torch.Tensor, ...]:
        """(logits float32 (N, H, W) on the slice, low-res logits float32 (N, 1, 256, 256)) for N prompts.

        embeddings: float (N, 256, 64, 64), row i = prompt i's slice (or (1, ...) shared by all);
        prompts: N prompts of one kind (``utils.inference.decoding.prompt_inputs``); sizes: the slices'
        (H, W), all one size; mask_input: optional float (N, 1, 256, 256) low-res logits of a previous
        call for the same prompts (``SamPredictor.predict(mask_input=...)``). On the model's device.
        ``with_iou``: also return the predicted IoU float32 (N,) of each mask (SAM's IoU head), third.
        """
        with autocast(self.model.device, self.precision):
            low, iou = decode(self.model, embeddings, prompts, sizes, self.multimask_output, self.prompt_encoder,
                              self.mask_decoder, mask_input=mask_input)
        low = low.float()
        self.n_decoded += len(prompts)
        logits = self.model.postprocess(low, tuple(sizes[0]))[:, 0]
        return (logits, low, iou.float()) if with_iou else (logits, low)

    def predict(self, rows: Sequence[int], prompts: Sequence[Prompt], sizes: Sequence[tuple[int, int]],
                mask_input: torch.Tensor | None = None, with_iou: bool = False) -> tuple[torch.Tensor, ...]:
        """:meth:`decode` for N prompts on cache rows ``rows`` (row i = prompt i's slice, all one size)."""
        return self.decode(self.embeddings(rows), prompts, sizes, mask_input, with_iou)

    def predict_rows(self, requests: Sequence[tuple[int, Prompt]], batch_size: int, with_iou: bool = False) -> list:
        """float32 (H, W) logits for each (cache row, prompt) request, in order, decoded ``batch_size`` at a
        time; with ``with_iou``, (logits, predicted IoU float) each (what ``StopRules.min_predicted_iou``
        judges). Consecutive requests of one call must share a slice size and a prompt kind (one volume, one
        prompt type: what the 3-D protocols ask)."""
        out: list = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            rows = [row for row, _ in chunk]
            logits, _, iou = self.predict(rows, [p for _, p in chunk], [self.cache.index.shape(r) for r in rows],
                                          with_iou=True)
            logits = list(logits.cpu().numpy())
            out += list(zip(logits, iou.cpu().tolist())) if with_iou else logits
        return out

    def predict_requests(self, requests: Sequence[tuple[int, Prompt, torch.Tensor | None]], batch_size: int
                         ) -> list[tuple[np.ndarray, torch.Tensor]]:
        """(float32 (H, W) logits, float32 (1, 256, 256) low-res logits) for each (cache row, prompt, mask
        input or None) request, in order. Unlike :meth:`predict_rows`, requests may mix prompt kinds (a box
        alone, a box with k clicks) and slice sizes: they are grouped by kind, size and whether they carry a
        mask input (``SamPredictor.predict``'s ``mask_input``, (1, 256, 256) low-res logits), ``batch_size``
        at a time."""
        groups: dict[tuple, list[int]] = {}
        for i, (row, prompt, mask_input) in enumerate(requests):
            kind = (prompt.box is not None, 0 if prompt.points is None else len(prompt.points),
                    tuple(self.cache.index.shape(row)), mask_input is not None)
            groups.setdefault(kind, []).append(i)
        out: list = [None] * len(requests)
        for kind, indices in groups.items():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                masks = torch.stack([requests[i][2] for i in chunk]).to(self.model.device) if kind[3] else None
                logits, low = self.predict([requests[i][0] for i in chunk], [requests[i][1] for i in chunk],
                                           [kind[2]] * len(chunk), masks)
                for j, i in enumerate(chunk):
                    out[i] = (logits[j].cpu().numpy(), low[j].cpu())
        return out

    def round_decoder(self, embeddings: torch.Tensor, size: tuple[int, int]):
        """A ``utils.inference.rounds.DecodeRound`` over ``embeddings`` float (S, 256, 64, 64) (row i = sample
        i's slice; or (1, ...) shared by all) for slices of one ``size`` (H, W): decode_round(indices,
        prompts, mask_input) -> (logits (M, H, W), low-res logits (M, 1, 256, 256)), indices into the S rows."""
        def decode_round(indices, prompts, mask_input):
            chosen = embeddings if embeddings.size(0) == 1 else \
                embeddings[torch.as_tensor(np.asarray(indices), device=embeddings.device)]
            return self.decode(chosen, prompts, [tuple(size)] * len(prompts), mask_input)

        return decode_round

    def cache_rounds(self, rows: Sequence[int], size: tuple[int, int]):
        """:meth:`round_decoder` for S samples on cache ``rows`` of one slice ``size``: each slice read once,
        its embedding kept for every round (float32: 4 MiB per sample, so keep batches to tens of samples)."""
        return self.round_decoder(self.embeddings(rows), size)
