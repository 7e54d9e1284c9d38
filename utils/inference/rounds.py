"""Rounds of interactive decoding: a start prompt, then one correction click per round (the click rules
are in :mod:`utils.inference.clicks`), each round decoded with the clicks so far and, unless switched
off, the previous round's low-res logits as SAM's mask input. What a round's new mask replaces is the
``refinement``'s (:mod:`utils.inference.clicks`: the whole mask, or only the click's own change), and
every round records the decoder's click response (:mod:`utils.eval.click_response`).

:func:`run_rounds` decodes through a callable (:data:`DecodeRound`), so tests can drive it with a
stand-in; ``utils.inference.decoder.CacheDecoder.cache_rounds`` / ``round_decoder`` build that callable over
the suite's decoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from utils.eval.click_response import RESPONSE_FIELDS, click_response
from utils.eval.dice import batch_dice
from utils.inference.clicks import Click, Refinement, accepted_region, merge_low_res, next_click, with_click
from utils.inference.prompts import Prompt

# decode_round(indices, prompts, mask_input) -> (logits (M, H, W), low-res logits (M, 1, 256, 256)):
# indices int64 (M,) are positions in run_rounds' sample list (to pick embeddings), prompts their M
# prompts, mask_input float (M, 1, 256, 256) previous low-res logits or None.
DecodeRound = Callable[[np.ndarray, Sequence[Prompt], "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class Rounds:
    """What :func:`run_rounds` did for S samples and N click rounds.

    dice: float64 (S, N + 1), Dice after 0..N clicks (a sample that stopped keeps its last Dice);
    clicks: per sample, the clicks made in order (fewer than N when it became perfect);
    prompts: per sample, the last prompt decoded (start prompt + its clicks);
    masks: bool (S, N + 1, H, W) predicted masks after each round, or None (``keep_masks=False``);
    response: float64 (S, N, 5) the decoder's click response per round (``utils.eval.click_response``; NaN
    where the sample got no click).
    """

    dice: np.ndarray
    clicks: list[list[Click]]
    prompts: list[Prompt]
    masks: np.ndarray | None = None
    response: np.ndarray | None = None


def _check(truths: np.ndarray, start_prompts: Sequence[Prompt], n_clicks: int, rule: str,
           rngs: Sequence[np.random.Generator] | None) -> None:
    if truths.ndim != 3 or truths.shape[0] != len(start_prompts):
        raise ValueError(f"expected bool (S, H, W) truths for {len(start_prompts)} prompts, got {truths.shape}")
    if rule == "random" and (rngs is None or len(rngs) != len(truths)):
        raise ValueError("the random click rule needs one seeded rng per sample (rngs)")
    if n_clicks < 0:
        raise ValueError(f"n_clicks must be >= 0, got {n_clicks}")


def _add_clicks(pred: np.ndarray, truths: np.ndarray, rule: str, rngs: Sequence[np.random.Generator] | None,
                clicks: list[list[Click]], prompts: list[Prompt]) -> list[int]:
    """One round's clicks: every sample still wrong gets :func:`next_click` (appended to ``clicks[i]`` and to
    ``prompts[i]`` in place); returns the indices of those samples, in order."""
    active = []
    for i in range(len(truths)):
        click = next_click(pred[i], truths[i], rule, rngs[i] if rngs is not None else None)
        if click is not None:
            clicks[i].append(click)
            prompts[i] = with_click(prompts[i], click)
            active.append(i)
    return active


def run_rounds(
    truths: np.ndarray,
    start_prompts: Sequence[Prompt],
    decode_round: DecodeRound,
    n_clicks: int,
    rule: str = "center",
    rngs: Sequence[np.random.Generator] | None = None,
    mask_input: bool = True,
    keep_masks: bool = False,
    refinement: Refinement = Refinement(),
) -> Rounds:
    """The interactive protocol for S samples of one slice size, one decode call per round.

    truths: bool (S, H, W) organ masks; start_prompts: S prompts of one kind (see
    ``utils.inference.decoding.prompt_inputs``). Round 0 decodes the start prompts with no mask input. Rounds
    1..n_clicks: each sample still wrong gets :func:`next_click` (``rule``; ``rngs`` = one seeded
    generator per sample, needed by ``random``, so a sample's clicks do not depend on its batch) and
    is decoded again with all its clicks, and with its previous low-res logits as mask input when
    ``mask_input``; samples already perfect are not decoded again. Since every sample still wrong
    gains exactly one click per round, each round's prompts are all of one kind. Masks are logits > 0.
    ``refinement``: global keeps each new mask whole; local keeps it only in the click's accepted region
    (:func:`utils.inference.clicks.accepted_region`), the old mask and low-res logits elsewhere, so the
    next round's mask input is the merged mask. The click response is measured on the decoder's own mask.
    """
    truths = np.asarray(truths, dtype=bool)
    _check(truths, start_prompts, n_clicks, rule, rngs)
    s = len(truths)
    prompts = list(start_prompts)
    clicks: list[list[Click]] = [[] for _ in range(s)]
    dice = np.zeros((s, n_clicks + 1))
    masks = np.zeros((s, n_clicks + 1, *truths.shape[1:]), dtype=bool) if keep_masks else None
    truth_t = torch.from_numpy(truths)

    def decode(active: np.ndarray, low_res: torch.Tensor | None):
        logits, low = decode_round(active, [prompts[i] for i in active], low_res)
        if tuple(logits.shape) != (len(active), *truths.shape[1:]):
            raise ValueError(f"decode_round returned logits {tuple(logits.shape)} for {len(active)} samples "
                             f"of size {truths.shape[1:]}")
        pred = logits.detach().cpu() > 0
        return pred, low.detach(), batch_dice(pred, truth_t[active]).numpy()

    pred, low_res, dice[:, 0] = decode(np.arange(s), None)
    pred = pred.numpy()
    response = np.full((s, n_clicks, len(RESPONSE_FIELDS)), np.nan)
    if keep_masks:
        masks[:, 0] = pred
    for r in range(1, n_clicks + 1):
        active = _add_clicks(pred, truths, rule, rngs, clicks, prompts)
        dice[:, r] = dice[:, r - 1]
        if keep_masks:
            masks[:, r] = pred
        if not active:
            continue
        active = np.asarray(active, dtype=np.int64)
        index = torch.as_tensor(active, device=low_res.device)
        new_pred, new_low, new_dice = decode(active, low_res[index] if mask_input else None)
        new_pred = new_pred.numpy()
        new_low = new_low.to(low_res.device, low_res.dtype)
        for j, i in enumerate(active):
            click = clicks[i][-1]
            response[i, r - 1] = click_response(pred[i], new_pred[j], truths[i], click.x, click.y, click.label)
            if refinement.local:
                region = accepted_region(pred[i], new_pred[j], click.x, click.y, refinement)
                new_pred[j] = np.where(region, new_pred[j], pred[i])
                new_low[j] = merge_low_res(region, new_low[j], low_res[i])
        if refinement.local:
            new_dice = batch_dice(torch.from_numpy(new_pred), truth_t[active]).numpy()
        pred[active] = new_pred
        low_res = low_res.index_put((index,), new_low)
        dice[active, r] = new_dice
        if keep_masks:
            masks[active, r] = pred[active]
    return Rounds(dice=dice, clicks=clicks, prompts=prompts, masks=masks, response=response)
