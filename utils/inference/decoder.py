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

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from utils.core.precision import autocast
from utils.embeddings.cache import EmbeddingCache
from utils.inference.decoding import decode
from utils.inference.prompts import Prompt


def request_key(row: int, prompt: Prompt) -> tuple:
    """What decides a (cache row, prompt) request's answer: the row, the box, the points and their labels."""
    def values(array, kind):
        return None if array is None else tuple(np.asarray(array, dtype=kind).ravel().tolist())

    return int(row), values(prompt.box, np.float32), values(prompt.points, np.float32), values(prompt.labels, np.int64)


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

    :meth:`remember` makes :meth:`predict_rows` keep its answers (up to ``memo_mb``) and give a repeated
    (row, prompt) the kept answer instead of decoding it again: the 3-D protocols of one volume ask for many
    of the same prompts (clicks3d starts with exactly box3d's walk; box3d repeats propagate's until it stops).
    ``n_reused`` counts those answers; :meth:`forget` drops them (the 3-D stage does per volume).
    """

    def __init__(self, cache: EmbeddingCache, prompt_encoder: torch.nn.Module | None = None,
                 mask_decoder: torch.nn.Module | None = None, precision: str = "fp32",
                 multimask_output: bool = False):
        self.cache, self.model = cache, cache.model
        self.prompt_encoder = prompt_encoder or self.model.sam.prompt_encoder
        self.mask_decoder = mask_decoder or self.model.sam.mask_decoder
        self.precision, self.multimask_output = precision, multimask_output
        self.n_decoded = self.n_reused = 0
        self._memo: OrderedDict | None = None
        self._memo_bytes = self._memo_limit = 0

    def remember(self, memo_mb: float = 1024.0) -> None:
        """From now on, keep :meth:`predict_rows`' answers, the oldest dropped beyond ``memo_mb`` MiB."""
        self._memo, self._memo_bytes, self._memo_limit = OrderedDict(), 0, int(memo_mb * 2**20)

    def forget(self) -> None:
        """Drop the kept answers (and keep remembering, if :meth:`remember` was called)."""
        if self._memo is not None:
            self._memo.clear()
            self._memo_bytes = 0

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
        memo = self._memo
        keys = [request_key(row, prompt) for row, prompt in requests] if memo is not None else []
        answers: list = [None] * len(requests)
        todo, first = [], {}  # the requests to decode: each distinct one not kept yet, once
        for i in range(len(requests)):
            if memo is None:
                todo.append(i)
            elif keys[i] in memo:
                answers[i] = memo[keys[i]]
                memo.move_to_end(keys[i])
            elif keys[i] not in first:
                first[keys[i]] = i
                todo.append(i)
        self.n_reused += len(requests) - len(todo)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            rows = [requests[i][0] for i in chunk]
            logits, _, iou = self.predict(rows, [requests[i][1] for i in chunk],
                                          [self.cache.index.shape(r) for r in rows], with_iou=True)
            for i, answer in zip(chunk, zip(logits.cpu().numpy(), iou.cpu().tolist())):
                answers[i] = answer
                if memo is not None:
                    self._keep(keys[i], answer)
        for i, answer in enumerate(answers):
            if answer is None:  # a repeat within this call
                answers[i] = answers[first[keys[i]]]
        return [answer if with_iou else answer[0] for answer in answers]

    def _keep(self, key: tuple, answer: tuple[np.ndarray, float]) -> None:
        answer[0].flags.writeable = False  # one array answers every repeat: no caller may change it
        self._memo[key] = answer
        self._memo_bytes += answer[0].nbytes
        while self._memo_bytes > self._memo_limit and self._memo:
            self._memo_bytes -= self._memo.popitem(last=False)[1][0].nbytes

    def propagation_decoder(self, batch_size: int, feed_logits: bool = False):
        """``decode_rows`` for :mod:`utils.inference.segment3d` (propagation's decode_batch on cache rows):
        [:class:`utils.inference.propagation.Request`] -> [:class:`utils.inference.propagation.Answer`] (logits
        and predicted IoU). Without ``feed_logits`` the requests' mask inputs are ignored and answered by
        :meth:`predict_rows` (kept answers reused); with it (a ``+mask`` carry mode) by :meth:`predict_requests`,
        with the low-res logits too, never from the kept answers (a mask input makes each its own)."""
        from utils.inference.propagation import Answer

        if feed_logits:
            def decode_fed(requests):
                answers = self.predict_requests([(r.z, r.prompt, r.mask_input) for r in requests], batch_size,
                                                with_iou=True)
                return [Answer(logits, iou, low) for logits, iou, low in answers]

            return decode_fed

        def decode_plain(requests):
            answers = self.predict_rows([(r.z, r.prompt) for r in requests], batch_size, with_iou=True)
            return [Answer(logits, iou) for logits, iou in answers]

        return decode_plain

    def predict_requests(self, requests: Sequence[tuple[int, Prompt, torch.Tensor | None]], batch_size: int,
                         with_iou: bool = False) -> list[tuple]:
        """(float32 (H, W) logits, float32 (1, 256, 256) low-res logits) for each (cache row, prompt, mask
        input or None) request, in order; with ``with_iou``, (logits, predicted IoU float, low-res logits)
        each. Unlike :meth:`predict_rows`, requests may mix prompt kinds (a box
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
                logits, low, iou = self.predict([requests[i][0] for i in chunk], [requests[i][1] for i in chunk],
                                                [kind[2]] * len(chunk), masks, with_iou=True)
                for j, i in enumerate(chunk):
                    answer = (logits[j].cpu().numpy(), low[j].cpu())
                    out[i] = (answer[0], float(iou[j]), answer[1]) if with_iou else answer
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
