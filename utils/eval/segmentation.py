"""Dice of one prompt type over (slice, organ) samples from cached embeddings: the one scoring path of
Task 1, Task 2's validation and Task 3's before/after mask check, so every Dice comes from the same code.
"""
from __future__ import annotations

from typing import Sequence

import torch

from utils.core import distributed
from utils.embeddings.cache import EmbeddingReader
from utils.eval.dice import batch_dice, summarise_dice
from utils.inference.batches import build_batch, group_by_size
from utils.inference.decoder import CacheDecoder
from utils.inference.prompts import DEFAULT_BOX_JITTER_PX


@torch.inference_mode()
def evaluate_prompt(
    cache: EmbeddingReader,
    samples: Sequence[tuple[int, int]],
    prompt_type: str,
    seed: int = 0,
    batch_size: int = 8,
    multimask_output: bool = False,
    prompt_encoder=None,
    mask_decoder=None,
    progress: bool = False,
    precision: str = "fp32",
    box_jitter: int = DEFAULT_BOX_JITTER_PX,
) -> tuple[dict, list[dict]]:
    """Dice of every (cache row, organ) sample with ``prompt_type`` prompts, thresholded at logit 0.

    ``box_jitter`` (slice px) is passed to ``jittered_box`` prompts (``--box-jitter``).

    Returns (summary {"mDice", "organs": {name: {"dice", "n"}}}, per-sample records). Under torchrun
    this is collective (every rank calls it with the same samples; each decodes a share of the batches)
    and every rank returns the single-process result.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(samples), desc=f"decoding {prompt_type}", unit="prompt", disable=not progress)
    decoder = CacheDecoder(cache, prompt_encoder, mask_decoder, precision, multimask_output)

    def score(batch):
        masks, prompts, sizes = build_batch(cache, batch, prompt_type, seed, box_jitter=box_jitter)
        logits, _ = decoder.predict([row for row, _ in batch], prompts, sizes)
        dice = batch_dice(logits.cpu() > 0, masks)
        bar.update(len(batch))
        records = [cache.index.store.records[cache.index.store_index(row)] for row, _ in batch]
        return [{"case": record.case_id, "z": record.z, "row": row, "organ": organ, "dice": d}
                for record, (row, organ), d in zip(records, batch, dice.tolist())]

    # Under torchrun the batches are dealt to the ranks and gathered in order: the records of one process.
    records = [r for part in distributed.map_batches(score, list(group_by_size(cache, samples, batch_size)))
               for r in part]
    bar.close()
    return summarise_dice((r["organ"], r["dice"]) for r in records), records
