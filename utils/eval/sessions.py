"""The interactive protocol over cached samples: a start prompt, then correction clicks, Dice per round.

One function for every place that scores correction sessions: ``interactive_task1.py`` (every decoder,
the report's curves and NoC) and ``finetune_interactive.py``'s per-epoch monitor, so that what training
chooses its checkpoint on is what the evaluation measures. The protocol itself (click rule, mask input,
a perfect sample stops) is :func:`utils.inference.rounds.run_rounds`; this module draws the start
prompts and the random rule's generators the same way for everyone and batches by slice size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from utils.core.seeding import child_rng
from utils.eval.auc import with_dice_auc
from utils.eval.click_response import RESPONSE_FIELDS, summarise_responses
from utils.eval.noc import NOC_THRESHOLDS, summarise_rounds
from utils.inference.batches import build_batch, group_by_size
from utils.inference.prompts import DEFAULT_BOX_JITTER_PX, prompt_type_id
from utils.inference.clicks import Refinement
from utils.inference.rounds import run_rounds

# The random click rule's stream, apart from every prompt draw (those use keys epoch + 1 >= 0 < 10**6).
CLICK_STREAM = 10**6


@dataclass
class Protocol:
    """How sessions are run: ``clicks`` rounds after the start, the click ``rule`` (center or random), the
    previous low-res logits as mask input or not, the seed of the start prompts and random clicks, the
    jitter of a jittered_box start, how many samples decode together, and what a round's new mask
    replaces (``refinement``: global or local)."""

    clicks: int = 5
    rule: str = "center"
    mask_input: bool = True
    seed: int = 0
    box_jitter: int = DEFAULT_BOX_JITTER_PX
    batch_size: int = 8
    refinement: Refinement = Refinement()


@dataclass
class Sessions:
    """One start prompt's sessions: ``dice`` float64 (S, clicks + 1) in the order of ``samples``, the clicks
    each sample got, the decoder's click response float64 (S, clicks, 5) (NaN: no click that round), and
    the kept sample's rounds (``shown``: start prompt, clicks, masks, truth, Dice)."""

    samples: list
    dice: np.ndarray
    clicks: list
    shown: dict = field(default_factory=dict)
    response: np.ndarray | None = None

    def summary(self) -> dict:
        """Dice after 0..N clicks, NoC@85/@90 and Dice AUC, per organ and as means over organs, and the click
        response over every round (``utils.eval.click_response.summarise_responses``)."""
        out = with_dice_auc(summarise_rounds([o for _, o in self.samples], self.dice, NOC_THRESHOLDS))
        if self.response is not None:
            out["click_response"] = summarise_responses(self.response)
        return out

    @property
    def decoded(self) -> int:
        """Prompts decoded: every start, plus one per click made."""
        return len(self.samples) + sum(len(c) for c in self.clicks)


def per_organ_subset(samples: list[tuple[int, int]], per_organ: int, seed: int) -> list[tuple[int, int]]:
    """At most ``per_organ`` samples of each organ (0 = all), drawn with ``seed``; in the store's order."""
    if per_organ <= 0:
        return list(samples)
    chosen = []
    for organ in sorted({o for _, o in samples}):
        mine = [s for s in samples if s[1] == organ]
        if len(mine) > per_organ:
            pick = child_rng(seed, CLICK_STREAM + 1, organ).choice(len(mine), size=per_organ, replace=False)
            mine = [mine[i] for i in sorted(pick.tolist())]
        chosen += mine
    order = {s: i for i, s in enumerate(samples)}
    return sorted(chosen, key=order.__getitem__)


def run_sessions(cache, samples: Sequence[tuple[int, int]], start: str, decoder, protocol: Protocol,
                 keep: tuple[int, int] | None = None, progress: bool = False) -> Sessions:
    """Sessions from ``start`` for (row, organ) ``samples`` of ``cache``, decoded by ``decoder`` (a
    :class:`utils.inference.decoder.CacheDecoder`); ``keep``: a sample whose masks per round to keep."""
    from tqdm import tqdm

    samples = list(samples)
    per_sample, shown = {}, {}
    bar = tqdm(total=len(samples), desc=f"{start}: {protocol.clicks} clicks", unit="sample", disable=not progress)
    for batch in group_by_size(cache, samples, protocol.batch_size):
        truths, prompts, sizes = build_batch(cache, batch, start, protocol.seed, box_jitter=protocol.box_jitter)
        rngs = [child_rng(protocol.seed, CLICK_STREAM, cache.index.store_index(r), cache.index.view_id(r), o,
                          prompt_type_id(start)) for r, o in batch]
        kept = keep in batch
        rounds = run_rounds(truths.numpy(), prompts, decoder.cache_rounds([r for r, _ in batch], sizes[0]),
                            protocol.clicks, protocol.rule, rngs, protocol.mask_input, keep_masks=kept,
                            refinement=protocol.refinement)
        for i, sample in enumerate(batch):
            per_sample[sample] = (rounds.dice[i], rounds.clicks[i], rounds.response[i])
        if kept:
            i = batch.index(keep)
            shown = {"start_prompt": prompts[i], "clicks": rounds.clicks[i], "masks": rounds.masks[i],
                     "truth": truths[i].numpy(), "dice": rounds.dice[i]}
        bar.update(len(batch))
    bar.close()
    dice = np.stack([per_sample[s][0] for s in samples]) if samples else np.zeros((0, protocol.clicks + 1))
    response = (np.stack([per_sample[s][2] for s in samples]) if samples
                else np.zeros((0, protocol.clicks, len(RESPONSE_FIELDS))))
    return Sessions(samples, dice, [per_sample[s][1] for s in samples], shown, response)
