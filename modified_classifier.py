"""Task 3's model: segment-anything's MaskDecoder with a class token and a ``class_prediction_head``.

A learnable class token stands beside the IoU token and the mask tokens and goes through the same
two-way transformer with the prompt tokens; its output feeds ``class_prediction_head`` (an MLP like
the IoU head) that returns logits over the 13 BTCV organs.

The class token travels in its own pass through the transformer, with the same tokens as the mask
pass ([IoU, masks..., class, prompts]). So the mask and IoU outputs are exactly those of the wrapped
decoder for the same weights (a joint pass would let the class token's attention change them), while
the class token sees what it would see in a joint pass. Training the shared transformer for
classification still changes the masks through the shared weights: Task 3 reports that cost.
"""
from __future__ import annotations

import torch
from segment_anything.modeling.mask_decoder import MLP, MaskDecoder

from utils.core.organs import NUM_ORGANS
from utils.inference.decoding import predict_masks_paired, two_way_transformer


class ClassifyingMaskDecoder(torch.nn.Module):
    """Wraps a ``MaskDecoder``; adds ``class_token`` (1, C) and ``class_prediction_head`` (C -> 13)."""

    def __init__(self, decoder: MaskDecoder, num_classes: int = NUM_ORGANS, head_depth: int = 3,
                 head_hidden_dim: int = 256):
        super().__init__()
        self.decoder = decoder
        dim = decoder.transformer_dim
        self.class_token = torch.nn.Embedding(1, dim)
        self.class_prediction_head = MLP(dim, head_hidden_dim, num_classes, head_depth)

    def classify(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                 dense_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 13) for N prompts, each paired with its own embedding (N, C, h, w) or one (1, ...)."""
        d = self.decoder
        n = sparse_prompt_embeddings.size(0)
        output_tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight, self.class_token.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings), dim=1)
        src = image_embeddings.expand(n, -1, -1, -1) + dense_prompt_embeddings
        hs, _ = two_way_transformer(d.transformer, src, image_pe, tokens)
        return self.class_prediction_head(hs[:, 1 + d.num_mask_tokens, :])

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool = False):
        """(masks, iou_pred, class_logits): masks/iou exactly as the wrapped decoder's paired forward."""
        n = sparse_prompt_embeddings.size(0)
        masks, iou = predict_masks_paired(self.decoder, image_embeddings.expand(n, -1, -1, -1), image_pe,
                                          sparse_prompt_embeddings, dense_prompt_embeddings)
        picked = slice(1, None) if multimask_output else slice(0, 1)
        logits = self.classify(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        return masks[:, picked], iou[:, picked], logits

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What Task 3 trains: the two-way transformer, the class token and the class head."""
        return (list(self.decoder.transformer.parameters()) + list(self.class_token.parameters())
                + list(self.class_prediction_head.parameters()))

    def parameter_groups(self, learning_rate: float, head_learning_rate: float = 0.0) -> list[dict]:
        """Optimizer groups of :meth:`trainable_parameters`: the shared transformer at ``learning_rate``,
        the class token and head (new, Task 3's own) at ``head_learning_rate`` (0 = ``learning_rate``)."""
        head = list(self.class_token.parameters()) + list(self.class_prediction_head.parameters())
        return [{"params": list(self.decoder.transformer.parameters()), "lr": learning_rate},
                {"params": head, "lr": head_learning_rate or learning_rate}]

    def freeze_for_task3(self) -> None:
        """Freeze everything but :meth:`trainable_parameters` (the mask/IoU tokens and heads, upscaling)."""
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)


def classifier_module(prompt_encoder: torch.nn.Module, classifier: ClassifyingMaskDecoder) -> torch.nn.ModuleDict:
    """Task 3's checkpoint layout, ``{"prompt_encoder", "classifier"}``: what a classifier run trains and saves."""
    return torch.nn.ModuleDict({"prompt_encoder": prompt_encoder, "classifier": classifier})


def load_classifier(sam: torch.nn.Module, weights: dict, copy_weights: bool = False
                    ) -> tuple[ClassifyingMaskDecoder, torch.nn.Module]:
    """(classifier, prompt encoder) with a classifier run's ``weights`` (its checkpoint's ``"model"``), built on
    ``sam``'s own mask decoder and prompt encoder, or on copies of them (``copy_weights``: the model keeps its
    own weights, e.g. to segment with them beside the classifier). In eval mode, on the model's device."""
    import copy

    decoder, prompt_encoder = sam.mask_decoder, sam.prompt_encoder
    if copy_weights:
        decoder, prompt_encoder = copy.deepcopy(decoder), copy.deepcopy(prompt_encoder)
    classifier = ClassifyingMaskDecoder(decoder)
    module = classifier_module(prompt_encoder, classifier)
    module.load_state_dict(weights)
    module.to(next(sam.parameters()).device).eval()
    return classifier, prompt_encoder
