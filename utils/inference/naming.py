"""Naming the organ of a person's prompt with Task 3's classifier (``segment_volume.py --classifier``).

Task 3's classifier (``modified_classifier.ClassifyingMaskDecoder``) was trained to name the organ of a
prompt of ONE type drawn from the organ's mask (by default ``one_central_point``: the mask's
distance-transform centre). A person's prompt is a box or points of their own, so each entry is named the
way the classifier was trained: the entry's prompt is decoded on its key slice (by the decoder that
segments the CT), and the classifier is given the prompt of its own type made from that predicted mask
(:func:`utils.inference.propagation.next_prompt`: the tight box for box types, the distance-transform
centre for point types; the random point types get the centre too), on the same slice's embedding.

The classifier names each entry alone, so two entries may get one organ. :func:`assign_organs` gives
every unnamed entry a different organ, none of those the prompt file names: the assignment of largest
summed log-probability (``scipy.optimize.linear_sum_assignment``), which is each entry's most probable organ
whenever those differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from utils.core.organs import NUM_ORGANS, organ_name
from utils.core.precision import autocast
from utils.inference.decoding import prompt_inputs
from utils.inference.propagation import next_prompt


@dataclass
class Naming:
    """What the classifier said of one entry: ``log_probabilities`` float64 (13,) over organs 1..13 (None when
    the key-slice mask was empty, so there was nothing to prompt it with), and the classifier's prompt."""

    log_probabilities: np.ndarray | None
    prompt: object = None

    @property
    def probabilities(self) -> np.ndarray | None:
        return None if self.log_probabilities is None else np.exp(self.log_probabilities)

    @property
    def organ(self) -> int | None:
        """The most probable organ, 1..13 (None without probabilities)."""
        return None if self.probabilities is None else int(np.argmax(self.probabilities)) + 1

    @property
    def probability(self) -> float:
        return 0.0 if self.probabilities is None else float(self.probabilities[self.organ - 1])

    def record(self) -> dict:
        out = {"organ": organ_name(self.organ) if self.organ else None, "probability": round(self.probability, 4),
               "probabilities": None if self.probabilities is None else
               {organ_name(o + 1): float(f"{v:.6g}") for o, v in enumerate(self.probabilities)}}  # small ones too
        if self.prompt is not None and self.prompt.box is not None:
            out["classifier_box_xyxy"] = [float(v) for v in self.prompt.box]
        if self.prompt is not None and self.prompt.points is not None:
            out["classifier_points_xy"] = self.prompt.points.tolist()
        return out


@torch.no_grad()
def name_organs(prompts: Sequence, decoder, classifier, prompt_encoder, prompt_type: str,
                size: tuple[int, int], precision: str = "fp32") -> list[Naming]:
    """One :class:`Naming` per ``utils.inference.prompt_file.OrganPrompt`` of ``prompts``.

    decoder: the ``utils.inference.decoder.CacheDecoder`` that segments the CT (its rows = display slices);
    classifier / prompt_encoder: Task 3's trained pair; prompt_type: the prompt type it was trained with;
    size: the slices' (H, W)."""
    model = decoder.model
    out = []
    for p in prompts:
        logits = decoder.predict_rows([(p.key_z, p.prompt)], 1)[0]
        mask = logits > 0
        if not mask.any():
            out.append(Naming(None))
            continue
        prompt = next_prompt(mask, prompt_type)
        points, boxes = prompt_inputs(model, [prompt], [tuple(size)])
        embedding = decoder.embeddings([p.key_z])
        with autocast(embedding.device, precision):
            sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=None)
            scores = classifier.classify(embedding, prompt_encoder.get_dense_pe(), sparse, dense).float()
        if scores.shape[-1] != NUM_ORGANS:
            raise ValueError(f"the classifier gave {scores.shape[-1]} class scores; expected {NUM_ORGANS}")
        out.append(Naming(scores.double().log_softmax(-1)[0].cpu().numpy(), prompt))
    return out


def assign_organs(namings: Sequence[Naming], taken: set[int]) -> list[int]:
    """A different organ (1..13) for each of ``namings`` (all with log-probabilities), none of them in ``taken``
    (the organs the prompt file names): the assignment of largest summed log-probability. ValueError when
    there are more namings than free organs."""
    from scipy.optimize import linear_sum_assignment

    free = [o for o in range(1, NUM_ORGANS + 1) if o not in taken]
    if len(namings) > len(free):
        raise ValueError(f"{len(namings)} organs to name but only {len(free)} BTCV organs left that the file does not "
                         "name")
    if not namings:
        return []
    cost = -np.stack([n.log_probabilities[np.asarray(free) - 1] for n in namings])
    rows, cols = linear_sum_assignment(cost)
    organs = [0] * len(namings)
    for r, c in zip(rows, cols):
        organs[r] = free[c]
    return organs
