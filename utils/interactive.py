"""Interactive segmentation: correction clicks, rounds of decoding, and the number of clicks (NoC).

The protocol (SAM's own iterative one, as SAM-Med2D, micro-sam and Mazurowski et al. evaluate it):
round 0 decodes a start prompt; each later round adds ONE correction click per sample where its mask
is wrong, and decodes the start prompt plus all clicks so far, with the previous round's low-res
logits as SAM's mask input (unless switched off). A sample whose mask is already perfect gets no more
clicks and keeps its Dice. Dice after 0..N clicks per sample is the curve; NoC@t is the number of
clicks needed to reach Dice >= t, counted as N when never reached.

Click rules (:func:`next_click`), on the error region = prediction XOR truth:

- ``center`` (default; Mazurowski et al., RITM-style): the largest 4-connected component among the
  components of missed organ (truth & ~pred, "FN") and of leak (pred & ~truth, "FP"), labelled
  separately so a component is all of one kind; the click is its pixel farthest from the
  component's boundary (L2 distance transform on the padded component); label 1 for FN, 0 for FP.
  4-connectivity: pixels touching only at a corner are separate errors, so the aliased one-pixel
  stair-steps along a contour do not chain into one long "large" region with no interior.
  Ties: the larger component wins; an FN/FP tie goes to FN (a positive click); within a kind the
  component whose first pixel comes first in raster order.
- ``random`` (SAM-Med2D): a seeded uniform draw over all error pixels; label by the pixel's kind.

Coordinates are (x, y) = (column, row) in slice pixels; boxes XYXY. Everything here but
:func:`make_decoder` / :func:`cache_decoder` is independent of SAM: :func:`run_rounds` decodes through
a callable, so tests can drive it with a stand-in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import cv2
import numpy as np
import torch

from .metrics import batch_dice
from .prompts import Prompt, central_point

CLICK_RULES = ("center", "random")
CONNECTIVITY = 4  # of error components for the ``center`` rule (see the module docstring)
NOC_THRESHOLDS = (0.85, 0.90)  # NoC@85 and NoC@90, the interactive-segmentation convention


class Click(NamedTuple):
    """One correction click: (x, y) = (column, row) slice pixel; label 1 = organ (positive), 0 = background."""

    x: int
    y: int
    label: int


# decode_round(indices, prompts, mask_input) -> (logits (M, H, W), low-res logits (M, 1, 256, 256)):
# indices int64 (M,) are positions in run_rounds' sample list (to pick embeddings), prompts their M
# prompts, mask_input float (M, 1, 256, 256) previous low-res logits or None.
DecodeRound = Callable[[np.ndarray, Sequence[Prompt], "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor]"]


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.ndim != 2 or pred.shape != truth.shape:
        raise ValueError(f"expected two bool (H, W) masks of one shape, got {pred.shape} and {truth.shape}")
    return pred, truth


def _largest_component(region: np.ndarray) -> tuple[int, np.ndarray]:
    """(pixel count, bool mask) of the largest CONNECTIVITY-connected component of a non-empty region."""
    n, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=CONNECTIVITY)
    sizes = np.bincount(labels.ravel(), minlength=n)[1:]
    k = int(np.argmax(sizes))  # first of the largest: lowest label = first in raster order
    return int(sizes[k]), labels == k + 1


def next_click(pred: np.ndarray, truth: np.ndarray, rule: str = "center",
               rng: np.random.Generator | None = None) -> Click | None:
    """The next correction click for bool (H, W) ``pred`` against bool (H, W) ``truth``, or None if equal.

    ``rule`` is ``center`` (deepest pixel of the largest FN or FP component) or ``random`` (uniform over
    all error pixels, drawn from ``rng``, required then). See the module docstring for the details.
    """
    if rule not in CLICK_RULES:
        raise ValueError(f"unknown click rule {rule!r}; choose from {', '.join(CLICK_RULES)}")
    pred, truth = _check_pair(pred, truth)
    missed = truth & ~pred
    leak = pred & ~truth
    if not (missed.any() or leak.any()):
        return None
    if rule == "random":
        if rng is None:
            raise ValueError("the random click rule needs a seeded rng (np.random.Generator)")
        rows, cols = np.nonzero(missed | leak)
        i = int(rng.integers(rows.size))
        r, c = int(rows[i]), int(cols[i])
        return Click(c, r, int(missed[r, c]))
    best: tuple[int, int, np.ndarray] | None = None
    for label, region in ((1, missed), (0, leak)):
        if region.any():
            size, component = _largest_component(region)
            if best is None or size > best[0]:  # strict: an FN/FP tie stays FN
                best = (size, label, component)
    (x, y), = central_point(best[2])
    return Click(int(x), int(y), best[1])


def with_click(prompt: Prompt, click: Click) -> Prompt:
    """``prompt`` with ``click`` appended to its points/labels; a box stays (SAM takes box + points)."""
    point = np.array([[click.x, click.y]], dtype=np.float32)
    label = np.array([click.label], dtype=np.int64)
    if prompt.points is None:
        return Prompt(points=point, labels=label, box=prompt.box)
    return Prompt(points=np.concatenate([prompt.points.astype(np.float32), point]),
                  labels=np.concatenate([prompt.labels.astype(np.int64), label]), box=prompt.box)


def noc(dice_per_click: Sequence[float], threshold: float) -> float:
    """Clicks needed to reach Dice >= ``threshold``: 0 if the start prompt does; N if never reached.

    ``dice_per_click``: Dice after 0, 1, ..., N clicks (N + 1 values; N = the click rounds available).
    """
    dice = np.asarray(dice_per_click, dtype=np.float64)
    if dice.ndim != 1 or dice.size == 0:
        raise ValueError(f"expected Dice after 0..N clicks (a non-empty 1-D sequence), got shape {dice.shape}")
    reached = np.flatnonzero(dice >= threshold)
    return float(reached[0]) if reached.size else float(dice.size - 1)


def mean_noc(dice_curves: np.ndarray | Sequence[Sequence[float]], threshold: float) -> float:
    """Mean over samples of :func:`noc`; ``dice_curves`` is (S, N + 1), one curve per sample."""
    curves = np.asarray(dice_curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[0] == 0:
        raise ValueError(f"expected (samples, N + 1) Dice curves, got shape {curves.shape}")
    return float(np.mean([noc(c, threshold) for c in curves]))


@dataclass
class Rounds:
    """What :func:`run_rounds` did for S samples and N click rounds.

    dice: float64 (S, N + 1), Dice after 0..N clicks (a sample that stopped keeps its last Dice);
    clicks: per sample, the clicks made in order (fewer than N when it became perfect);
    prompts: per sample, the last prompt decoded (start prompt + its clicks);
    masks: bool (S, N + 1, H, W) predicted masks after each round, or None (``keep_masks=False``).
    """

    dice: np.ndarray
    clicks: list[list[Click]]
    prompts: list[Prompt]
    masks: np.ndarray | None = None


def run_rounds(
    truths: np.ndarray,
    start_prompts: Sequence[Prompt],
    decode_round: DecodeRound,
    n_clicks: int,
    rule: str = "center",
    rngs: Sequence[np.random.Generator] | None = None,
    mask_input: bool = True,
    keep_masks: bool = False,
) -> Rounds:
    """The interactive protocol for S samples of one slice size, one decode call per round.

    truths: bool (S, H, W) organ masks; start_prompts: S prompts of one kind (see
    ``utils.decoding.prompt_inputs``). Round 0 decodes the start prompts with no mask input. Rounds
    1..n_clicks: each sample still wrong gets :func:`next_click` (``rule``; ``rngs`` = one seeded
    generator per sample, needed by ``random``, so a sample's clicks do not depend on its batch) and
    is decoded again with all its clicks, and with its previous low-res logits as mask input when
    ``mask_input``; samples already perfect are not decoded again. Since every sample still wrong
    gains exactly one click per round, each round's prompts are all of one kind. Masks are logits > 0.
    """
    truths = np.asarray(truths, dtype=bool)
    if truths.ndim != 3 or truths.shape[0] != len(start_prompts):
        raise ValueError(f"expected bool (S, H, W) truths for {len(start_prompts)} prompts, got {truths.shape}")
    if rule == "random" and (rngs is None or len(rngs) != len(truths)):
        raise ValueError("the random click rule needs one seeded rng per sample (rngs)")
    if n_clicks < 0:
        raise ValueError(f"n_clicks must be >= 0, got {n_clicks}")
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

    everyone = np.arange(s)
    pred, low_res, dice[:, 0] = decode(everyone, None)
    pred = pred.numpy()
    if keep_masks:
        masks[:, 0] = pred
    for r in range(1, n_clicks + 1):
        active = []
        for i in range(s):
            click = next_click(pred[i], truths[i], rule, rngs[i] if rngs is not None else None)
            if click is not None:
                clicks[i].append(click)
                prompts[i] = with_click(prompts[i], click)
                active.append(i)
        dice[:, r] = dice[:, r - 1]
        if keep_masks:
            masks[:, r] = pred
        if not active:
            continue
        active = np.asarray(active, dtype=np.int64)
        index = torch.as_tensor(active, device=low_res.device)
        new_pred, new_low, new_dice = decode(active, low_res[index] if mask_input else None)
        pred[active] = new_pred.numpy()
        low_res = low_res.index_put((index,), new_low.to(low_res.device, low_res.dtype))
        dice[active, r] = new_dice
        if keep_masks:
            masks[active, r] = pred[active]
    return Rounds(dice=dice, clicks=clicks, prompts=prompts, masks=masks)


def summarise_rounds(organs: Sequence[int], dice: np.ndarray,
                     thresholds: Sequence[float] = NOC_THRESHOLDS) -> dict:
    """Per-sample curves -> {"dice_per_click", "noc", "n", "organs": {name: {...same}}}.

    ``organs``: (S,) organ label per sample; ``dice``: (S, N + 1) (``Rounds.dice``, rows of many batches
    stacked). Per organ: the mean curve and mean NoC over its samples. Top level: both are means over
    ORGANS of the per-organ values (one convention for both, as mDice everywhere in the suite): a small
    organ counts as much as the liver, whose many slices would otherwise dominate NoC while mDice
    ignored them. With the same number of samples per organ this equals the mean over samples (the
    usual interactive-segmentation reading, "mean clicks per sample"). NoC keys are "85", "90".
    """
    from .organs import organ_name

    organs = np.asarray(organs)
    dice = np.asarray(dice, dtype=np.float64)
    if dice.ndim != 2 or len(organs) != len(dice):
        raise ValueError(f"expected (S,) organs and (S, N + 1) Dice, got {organs.shape} and {dice.shape}")

    def key(t: float) -> str:
        return f"{round(t * 100):d}"

    per_organ = {}
    for organ in sorted(set(organs.tolist())):
        rows = dice[organs == organ]
        per_organ[organ_name(int(organ))] = {
            "dice_per_click": rows.mean(axis=0).tolist(),
            "noc": {key(t): mean_noc(rows, t) for t in thresholds},
            "n": int(len(rows)),
        }
    curves = np.array([v["dice_per_click"] for v in per_organ.values()])
    return {
        "dice_per_click": curves.mean(axis=0).tolist() if len(curves) else [],
        "noc": {key(t): float(np.mean([v["noc"][key(t)] for v in per_organ.values()])) for t in thresholds}
        if per_organ else {},
        "n": int(len(dice)),
        "organs": per_organ,
    }


def make_decoder(model, embeddings: torch.Tensor, size: tuple[int, int], multimask_output: bool = False,
                 prompt_encoder: torch.nn.Module | None = None, mask_decoder: torch.nn.Module | None = None,
                 precision: str = "fp32") -> DecodeRound:
    """A :data:`DecodeRound` over the suite's decode path (``utils.decoding.decode`` + ``postprocess``).

    model: a ``utils.models.SamModel``; embeddings: float (S, 256, 64, 64), row i = sample i's slice
    (or (1, ...) shared by all); size: the slices' (H, W). ``prompt_encoder`` / ``mask_decoder``: pass
    fine-tuned copies (Task 2); ``precision``: as ``--precision``. Returns logits float32 (M, H, W)
    on the slice and low-res logits float32 (M, 1, 256, 256), on the model's device.
    """
    from .decoding import decode
    from .precision import autocast

    def decode_round(indices, prompts, mask_input):
        if embeddings.size(0) == 1:
            chosen = embeddings
        else:
            chosen = embeddings[torch.as_tensor(np.asarray(indices), device=embeddings.device)]
        with torch.no_grad(), autocast(model.device, precision):
            low, _ = decode(model, chosen, prompts, [tuple(size)] * len(prompts), multimask_output,
                            prompt_encoder, mask_decoder, mask_input=mask_input)
            low = low.float()
            return model.postprocess(low, tuple(size))[:, 0].float(), low

    return decode_round


def cache_decoder(cache, samples: Sequence[tuple[int, int]], size: tuple[int, int],
                  multimask_output: bool = False, prompt_encoder: torch.nn.Module | None = None,
                  mask_decoder: torch.nn.Module | None = None, precision: str = "fp32") -> DecodeRound:
    """:func:`make_decoder` for (cache row, organ) ``samples`` of one slice ``size``, from the embedding
    cache, decoding at ``precision`` (``--precision``). Each slice is read once; its embedding is kept for every round
    (float32 (S, 256, 64, 64): 4 MiB per sample, so keep batches to tens of samples)."""
    from .evaluation import gather_embeddings

    return make_decoder(cache.model, gather_embeddings(cache, samples), size, multimask_output,
                        prompt_encoder, mask_decoder, precision)
