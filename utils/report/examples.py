"""Example figures of decoded slices: which (cache row, organ) samples to show, and Task 1's prompt overlays
(the slice, its ground truth, the prompt and the decoded mask, captioned with organ, case and z).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from utils.core.organs import organ_title
from utils.embeddings.cache import EmbeddingCache
from utils.eval.dice import dice_score
from utils.inference.batches import build_batch
from utils.inference.decoder import CacheDecoder
from utils.inference.prompts import DEFAULT_BOX_JITTER_PX
from utils.report.plots import save_prompt_overlays


def pick_examples(samples: Sequence[tuple[int, int]], cache: EmbeddingCache, n: int) -> list[tuple[int, int]]:
    """n samples spread from the largest to the smallest organ areas (small organs are the hard ones)."""
    if n <= 0 or not samples:
        return []
    by_area = sorted(samples, key=lambda s: -cache.index.organs(s[0])[s[1]])
    step = max(1, (len(by_area) - 1) // max(n - 1, 1))
    return [by_area[min(i * step, len(by_area) - 1)] for i in range(n)]


def median_example(samples: Sequence[tuple[int, int]], cache: EmbeddingCache) -> tuple[int, int]:
    """The sample of median organ area: a typical organ for a figure, neither liver nor a speck."""
    by_area = sorted(samples, key=lambda s: (cache.index.organs(s[0])[s[1]], s))
    return by_area[len(by_area) // 2]


def sample_caption(cache: EmbeddingCache, row: int, organ: int) -> str:
    """'Liver (case 0035, z=3)': the organ, and the case and slice of the sample's store record."""
    record = cache.index.store.records[cache.index.store_index(row)]
    return f"{organ_title(organ)} (case {record.case_id}, z={record.z})"


def save_task1_overlays(decoder: CacheDecoder, samples: Sequence[tuple[int, int]], prompt_type: str, seed: int,
                        path: Path, title: str, box_jitter: int = DEFAULT_BOX_JITTER_PX) -> Path:
    """Decode ``samples`` (all one slice size) with Task 1's draw of ``prompt_type`` prompts and draw each
    slice with its ground truth, prompt and mask (logits > 0), its Dice in the caption."""
    cache = decoder.cache
    masks, prompts, sizes = build_batch(cache, samples, prompt_type, seed, box_jitter=box_jitter)
    logits, _ = decoder.predict([row for row, _ in samples], prompts, sizes)
    examples = []
    for (row, organ), mask, prompt, logit in zip(samples, masks.numpy(), prompts, logits.cpu().numpy()):
        pred = logit > 0
        examples.append({"image": cache.view(row)[0], "truth": mask, "pred": pred, "prompt": prompt,
                         "dice": dice_score(pred, mask), "caption": sample_caption(cache, row, organ)})
    return save_prompt_overlays(examples, path, title)
