"""Prompt encoding and mask decoding in batches, from cached embeddings.

Upstream ``MaskDecoder.predict_masks`` ``repeat_interleave``s its image embedding once per prompt set:
it expects ONE image per call with N prompts. Passing B images with B prompts there would make B*B
pairs. :func:`predict_masks_paired` is the same computation with prompt ``i`` paired to embedding
``i`` (the caller gathers each prompt's embedding), so one call can mix prompts from many slices;
for one image it equals upstream exactly (tested against ``SamPredictor``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from utils.inference.prompts import Prompt
from utils.models.sam import SamModel


def prompt_inputs(
    model: SamModel, prompts: Sequence[Prompt], original_sizes: Sequence[tuple[int, int]]
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None]:
    """Stack N prompts of one kind into the prompt encoder's inputs, in encoder-input pixels.

    Returns (points, boxes): points = (coords float32 (N, P, 2), labels int64 (N, P)) or None;
    boxes = float32 (N, 4) XYXY or None. A prompt with a box and points (a box start plus correction
    clicks) gives both, as ``SamPredictor.predict(point_coords=..., box=...)`` does. All N prompts must
    be of one kind: all with a box or none, and all with the same number of points (P may be 0: no points).
    """
    device = model.device
    has_box = prompts[0].box is not None
    n_points = 0 if prompts[0].points is None else len(prompts[0].points)
    for p in prompts:
        if (p.box is not None) != has_box or (0 if p.points is None else len(p.points)) != n_points:
            raise ValueError("prompts decoded together must be of one kind: all with a box or none, and all "
                             "with the same number of points; decode the others in a separate batch")
    boxes = points = None
    if has_box:
        boxes = torch.as_tensor(
            np.stack([model.transform_boxes(p.box[None], s)[0] for p, s in zip(prompts, original_sizes)]),
            device=device)
    if n_points:
        coords = np.stack([model.transform_coords(p.points, s) for p, s in zip(prompts, original_sizes)])
        labels = np.stack([p.labels for p in prompts])
        points = (torch.as_tensor(coords, device=device), torch.as_tensor(labels, device=device))
    if boxes is None and points is None:
        raise ValueError("a prompt needs points or a box")
    return points, boxes


def predict_masks_paired(
    decoder: torch.nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream ``MaskDecoder.predict_masks`` with embedding i paired to prompt i (no repeat).

    image_embeddings (N, C, h, w); image_pe (1, C, h, w); sparse (N, T, C); dense (N, C, h, w).
    Returns masks (N, num_mask_tokens, 4h, 4w) logits and iou_pred (N, num_mask_tokens).
    """
    n = sparse_prompt_embeddings.size(0)
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings), dim=1)
    src = image_embeddings + dense_prompt_embeddings
    pos_src = image_pe.expand(n, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + decoder.num_mask_tokens), :]
    src = src.transpose(1, 2).reshape(b, c, h, w)
    upscaled = decoder.output_upscaling(src)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, decoder.iou_prediction_head(iou_token_out)


def decode(
    model: SamModel,
    embeddings: torch.Tensor,
    prompts: Sequence[Prompt],
    original_sizes: Sequence[tuple[int, int]],
    multimask_output: bool = False,
    prompt_encoder: torch.nn.Module | None = None,
    mask_decoder: torch.nn.Module | None = None,
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-res mask logits for N prompts, each paired with its own embedding.

    embeddings: float32 (N, 256, 64, 64) (or (1, ...) shared by all N prompts). All prompts must be
    of one kind (see :func:`prompt_inputs`). ``multimask_output`` picks, per prompt, the
    best of SAM's three masks by predicted IoU (as SAM's automatic mode does); otherwise the single
    mask output. ``prompt_encoder`` / ``mask_decoder`` default to the model's (pass fine-tuned copies).
    ``mask_input``: optional float (N, 1, 256, 256) low-res logits, typically a previous call's output
    for the same prompts (SAM's iterative refinement), given to the prompt encoder as ``masks=``; as
    ``SamPredictor.predict(mask_input=...)`` with its (1, 256, 256) array.
    Returns (low-res logits (N, 1, 256, 256), predicted IoU (N,)).
    """
    points, boxes = prompt_inputs(model, prompts, original_sizes)
    return decode_inputs(embeddings, points, boxes, multimask_output, prompt_encoder or model.sam.prompt_encoder,
                         mask_decoder or model.sam.mask_decoder, mask_input)


def decode_inputs(
    embeddings: torch.Tensor,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    multimask_output: bool,
    prompt_encoder: torch.nn.Module,
    mask_decoder: torch.nn.Module,
    mask_input: torch.Tensor | None = None,
    paired=predict_masks_paired,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`decode` from prompt-encoder inputs already made by :func:`prompt_inputs` (the training
    fast path makes them ahead, in a background thread). ``paired`` may be a compiled
    :func:`predict_masks_paired`. Same returns as :func:`decode`."""
    if mask_input is not None:
        expected = (len(points[0]) if points is not None else len(boxes), 1, *prompt_encoder.mask_input_size)
        if tuple(mask_input.shape) != expected:
            raise ValueError(f"mask_input must be low-res logits of shape {expected} (one per prompt), "
                             f"got {tuple(mask_input.shape)}")
        mask_input = mask_input.to(device=embeddings.device, dtype=torch.float32)
    sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    n = sparse.size(0)
    if embeddings.size(0) not in (1, n):
        raise ValueError(f"{embeddings.size(0)} embeddings for {n} prompts: pass one, or one per prompt")
    masks, iou = paired(
        mask_decoder, embeddings.expand(n, -1, -1, -1), prompt_encoder.get_dense_pe(), sparse, dense
    )
    if multimask_output:
        masks, iou = masks[:, 1:], iou[:, 1:]
        best = iou.argmax(dim=1)
        pick = torch.arange(n, device=masks.device)
        return masks[pick, best][:, None], iou[pick, best]
    return masks[:, :1], iou[:, 0]
