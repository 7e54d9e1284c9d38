"""Prompt encoding and mask decoding in batches, from cached embeddings.

Upstream ``MaskDecoder.predict_masks`` ``repeat_interleave``s its image embedding once per prompt set:
it expects ONE image per call with N prompts. Passing B images with B prompts there would make B*B
pairs. :func:`predict_masks_paired` is the same computation with prompt ``i`` paired to embedding
``i`` (the caller gathers each prompt's embedding), so one call can mix prompts from many slices;
for one image it equals upstream to float rounding (tested against ``SamPredictor``): its transformer is
:func:`two_way_transformer`, upstream's computed with less memory traffic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

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


def _attend(attention: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Upstream ``Attention.forward`` after its q/k/v projections: heads, scaled dot-product, out_proj."""
    b, heads = q.shape[0], attention.num_heads

    def separate(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, x.shape[1], heads, x.shape[2] // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(separate(q), separate(k), separate(v))
    return attention.out_proj(out.transpose(1, 2).reshape(b, q.shape[1], -1))


def _project_with_pe(linear: torch.nn.Linear, keys: torch.Tensor, key_pe: torch.Tensor) -> torch.Tensor:
    """``linear(keys + key_pe)`` for N prompts' keys (N, L, C) and ONE positional encoding (1, L, C): by
    linearity (W(x + p) + b = (Wx + b) + Wp) the encoding is projected once, not added to every prompt's keys."""
    return linear(keys).add_(key_pe @ linear.weight.t())


def two_way_transformer(transformer: torch.nn.Module, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                        point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream ``TwoWayTransformer.forward`` (with its ``TwoWayAttentionBlock``s) computed with less memory
    traffic, the same weights and the same result to float rounding (tested against ``SamPredictor``).

    image_embedding (N, C, h, w); image_pe (1, C, h, w), shared by all N; point_embedding (N, T, C). On a
    CPU, where moving the N x 4096 x 256 image tokens dominates, three changes make the mask decoder ~1.25x
    faster (benchmarks/run.py --sections decoder): the tokens are laid out once (upstream's permuted view
    was copied again by every projection), the positional encoding is projected once per attention
    (:func:`_project_with_pe`) instead of added to every prompt's tokens twice per block, and attention runs
    as ``F.scaled_dot_product_attention``. Returns (queries (N, T, C), keys (N, h*w, C)), as upstream.
    """
    keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
    key_pe = image_pe[:1].flatten(2).transpose(1, 2).contiguous()
    queries = point_embedding
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        to_image = layer.cross_attn_token_to_image
        queries = queries + _attend(to_image, to_image.q_proj(queries + point_embedding),
                                    _project_with_pe(to_image.k_proj, keys, key_pe), to_image.v_proj(keys))
        queries = layer.norm2(queries)
        queries = layer.norm3(queries + layer.mlp(queries))
        to_token = layer.cross_attn_image_to_token
        attended = _attend(to_token, _project_with_pe(to_token.q_proj, keys, key_pe),
                           to_token.k_proj(queries + point_embedding), to_token.v_proj(queries))
        keys = layer.norm4(attended.add_(keys))
    final = transformer.final_attn_token_to_image
    queries = queries + _attend(final, final.q_proj(queries + point_embedding),
                                _project_with_pe(final.k_proj, keys, key_pe), final.v_proj(keys))
    return transformer.norm_final_attn(queries), keys


def predict_masks_paired(
    decoder: torch.nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream ``MaskDecoder.predict_masks`` with embedding i paired to prompt i (no repeat), its transformer
    run by :func:`two_way_transformer`.

    image_embeddings (N, C, h, w); image_pe (1, C, h, w); sparse (N, T, C); dense (N, C, h, w).
    Returns masks (N, num_mask_tokens, 4h, 4w) logits and iou_pred (N, num_mask_tokens).
    """
    n = sparse_prompt_embeddings.size(0)
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings), dim=1)
    src = image_embeddings + dense_prompt_embeddings
    b, c, h, w = src.shape
    hs, src = two_way_transformer(decoder.transformer, src, image_pe, tokens)
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
