"""Interactive fine-tuning: one training step over simulated correction sessions, on cached embeddings.

The image encoder is frozen and never runs (embeddings come from the cache); the prompt encoder and
mask decoder train. Per (slice, organ) sample, one session per epoch:

- round 0: a start prompt (:func:`utils.inference.training_clicks.draw_start_prompt`): a box with each
  side jittered by up to ``box_jitter`` px with probability ``box_fraction``, else one positive point;
- rounds 1..``rounds``: one click drawn under ``torch.no_grad`` from the previous round's error
  (:func:`~utils.inference.training_clicks.sample_training_click`: uniform over missed organ + leak,
  positive in the missed part, negative in the leak); the clicks accumulate on the start prompt; with
  probability ``mask_feedback`` (micro-sam's 0.5) the previous round's low-res logits, DETACHED, are the
  prompt encoder's mask input. A sample already perfect gets no click and is decoded again as it is.
- every round is decoded with single-mask output (the evaluation's protocol, :func:`utils.inference.
  rounds.run_rounds`, decodes single-mask at every round, and so do Task 2's decoders: the interactive
  decoder is trained for what it is scored on; SAM's best-of-three at an ambiguous round 0 is not done).
- the loss is per sample and round, at the slice's resolution, averaged over samples and rounds.
  ``dice`` (default): MONAI's DiceLoss on sigmoid outputs, the study's and Task 2's loss, so this
  decoder differs from Task 2's only in the sessions it sees (micro-sam also trains its rounds on Dice
  alone). ``dice_bce``: Dice + binary cross-entropy, 1:1, MedSAM's loss (SAM uses focal + Dice, 20:1).

Every random draw comes from ``child_rng(seed, SESSION_STREAM, epoch + 1, store slice, view, organ, round)``:
a session depends only on the seed, the epoch and the sample, never on its batch or on the order of
batches, so a resumed run draws what an uninterrupted one would. The step plugs into
:func:`utils.train.loop.run_training` as Task 2's does (``step.prepare`` for the fast path's
background preparation; ``precision`` is the training forward's autocast).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from utils.core.precision import autocast
from utils.core.seeding import child_rng
from utils.eval.dice import batch_dice
from utils.inference.clicks import with_click
from utils.inference.decoding import predict_masks_paired, prompt_inputs
from utils.inference.prompts import DEFAULT_BOX_JITTER_PX, Prompt
from utils.inference.training_clicks import CLICK_SAMPLINGS, draw_start_prompt, draw_training_click
from utils.train.loop import StepResult

LOSSES = ("dice", "dice_bce")
ROUND_WEIGHTINGS = ("flat", "linear")
# The key (after SESSION_STREAM, epoch + 1) of a batch's draw of its number of click rounds (random_rounds):
# apart from every sample key (store slice indices stay far below it).
ROUND_COUNT_KEY = 2**31
# The first key of every session generator: keeps the sessions' draws apart from every other seeded draw
# of the suite (prompt_for's keys are (epoch + 1, slice, view, organ, prompt type)).
SESSION_STREAM = 22


@dataclass(frozen=True)
class InteractiveSettings:
    """The hyperparameters of simulated sessions; all of them are in the run identity
    (:func:`interactive_identity`)."""

    rounds: int = 4  # correction rounds after the start prompt (SAM-Med2D and micro-sam use 8, SAM 8 + 2 mask-only)
    box_fraction: float = 0.5  # share of box starts (the rest: one positive point); SAM draws both equally often
    box_jitter: int = DEFAULT_BOX_JITTER_PX  # px each side of a start box may move (0 = the tight box)
    mask_feedback: float = 0.5  # probability a round gets the previous low-res logits as mask input (micro-sam)
    loss: str = "dice"  # dice (the study's) or dice_bce (MedSAM's)
    negative_share: float | None = None  # None = clicks uniform over the error (SAM); else P(leak | both kinds)
    # Issue 34 (docs/interactive-training.md, "Clicks that work"): where clicks go, which rounds there are, what
    # the loss weighs. The defaults are the rules before it (SAM's uniform clicks, every round equal).
    click_sampling: str = "uniform"  # uniform (SAM) | inner_half (RITM) | center (the evaluation's rule)
    truth_click_share: float = 0.0  # share of clicks drawn as a positive point inside the organ (SAM 2: ~0.1)
    no_click_rounds: int = 0  # rounds after the clicks that decode again with the mask and no new click (SAM: 2)
    random_rounds: bool = False  # each batch draws its number of click rounds in 0..rounds (RITM)
    round_weighting: str = "flat"  # flat, or linear: round r's loss weighs r + 1 (CFR-ICL's 1:2:3)
    click_loss_weight: float = 0.0  # weight of a BCE term on the pixels within click_radius px of the clicks
    click_radius: int = 5  # px; the disk around each click that click_loss_weight weighs

    @property
    def max_rounds(self) -> int:
        """The most rounds after round 0 a session decodes: click rounds, then rounds without a click."""
        return int(self.rounds) + int(self.no_click_rounds)

    def __post_init__(self):
        if int(self.rounds) != self.rounds or self.rounds < 0:
            raise ValueError(f"rounds must be a whole number >= 0, got {self.rounds!r}")
        if int(self.box_jitter) != self.box_jitter or self.box_jitter < 0:
            raise ValueError(f"box_jitter must be a whole number of pixels >= 0, got {self.box_jitter!r}")
        for name in ("box_fraction", "mask_feedback"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.negative_share is not None and not 0.0 <= self.negative_share <= 1.0:
            raise ValueError(f"negative_share must be in [0, 1] or None, got {self.negative_share!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.click_sampling not in CLICK_SAMPLINGS:
            raise ValueError(f"click_sampling {self.click_sampling!r}: choose from {', '.join(CLICK_SAMPLINGS)}")
        if self.round_weighting not in ROUND_WEIGHTINGS:
            raise ValueError(f"round_weighting {self.round_weighting!r}: choose from {', '.join(ROUND_WEIGHTINGS)}")
        if not 0.0 <= self.truth_click_share <= 1.0:
            raise ValueError(f"truth_click_share must be in [0, 1], got {self.truth_click_share!r}")
        for name in ("no_click_rounds", "click_radius"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {getattr(self, name)!r}")
        if self.click_loss_weight < 0:
            raise ValueError(f"click_loss_weight must be >= 0, got {self.click_loss_weight!r}")


def interactive_identity(settings: InteractiveSettings) -> dict:
    """The sessions' part of a run identity (:func:`utils.scaffold.runs.identity_of` ``**settings``):
    {"interactive": {every field of ``settings``, ints as int, shares as float}}, under one key so that
    no name can clash with the Task 2 settings beside it."""
    fields = dataclasses.asdict(settings)
    for name in ("rounds", "box_jitter", "no_click_rounds", "click_radius"):
        fields[name] = int(fields[name])
    for name in ("box_fraction", "mask_feedback", "negative_share", "truth_click_share", "click_loss_weight"):
        if fields[name] is not None:
            fields[name] = float(fields[name])
    fields["random_rounds"] = bool(settings.random_rounds)
    return {"interactive": fields}


def session_rng(seed: int, epoch: int, store_index: int, view: int, organ: int, round_: int) -> np.random.Generator:
    """The generator of one sample's round in one epoch: round 0 draws the start prompt, round r >= 1 the
    mask-feedback coin and then the click."""
    return child_rng(seed, SESSION_STREAM, epoch + 1, store_index, view, organ, round_)


@dataclass
class SessionGroup:
    """One slice size's share of a batch, ready for its sessions (what the fast path makes ahead)."""

    cache_id: int
    samples: list  # (row, organ), grouped by row
    keys: list  # (store slice, view, organ) per sample: the session generators' keys
    truths: np.ndarray  # bool (n, H, W) on the CPU: the click draws' ground truth
    targets: torch.Tensor  # bool (n, H, W) on the model's device: the loss's
    starts: list  # n start prompts (Prompt)
    embeddings: torch.Tensor  # float32 (n, 256, 64, 64) on the model's device
    size: tuple


def make_session_prepare(caches, settings: InteractiveSettings, seed: int, resident: dict | None = None):
    """prepare(batch, epoch) -> [SessionGroup]: labels, start prompts and embeddings of a batch of
    (cache id, row, organ) samples, grouped by slice size. No autograd: safe in a background thread.
    ``resident``: {cache id: utils.train.fastpath.ResidentEmbeddings}."""
    from utils.inference.batches import gather_embeddings
    from utils.train.fastpath import slice_grouped

    def prepare(batch, epoch):
        groups: dict = {}
        for cache_id, row, organ in slice_grouped(batch):
            groups.setdefault((cache_id, caches[cache_id].index.shape(row)), []).append((row, organ))
        out = []
        for (cache_id, size), samples in groups.items():
            cache = caches[cache_id]
            labels = {row: cache.label(row) for row in dict.fromkeys(r for r, _ in samples)}
            truths = np.stack([labels[row] == organ for row, organ in samples])
            keys = [(cache.index.store_index(row), cache.index.view_id(row), organ) for row, organ in samples]
            starts = [draw_start_prompt(t, session_rng(seed, epoch, *k, 0), settings.box_fraction,
                                        settings.box_jitter) for t, k in zip(truths, keys)]
            embeddings = (resident[cache_id].gather([r for r, _ in samples]) if resident
                          else gather_embeddings(cache, samples))
            out.append(SessionGroup(cache_id, samples, keys, truths, torch.from_numpy(truths).to(embeddings.device),
                                    starts, embeddings, tuple(size)))
        return out

    return prepare


def feedback(low_res: torch.Tensor) -> torch.Tensor:
    """The previous round's low-res logits as the next round's mask input: cut from the graph (SAM, micro-sam),
    so a round's loss never trains the rounds before it through the fed-back mask."""
    return low_res.detach()


def encode_prompts(prompt_encoder: torch.nn.Module, points, boxes, mask_input: torch.Tensor | None,
                   use_mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(sparse, dense) prompt embeddings for M prompts of one kind, the mask input given to some of them.

    points/boxes: as :func:`utils.inference.decoding.prompt_inputs` makes them; mask_input: float (M, 1, 256,
    256) or None; use_mask: bool (M,). Rows with ``use_mask`` get ``prompt_encoder(..., masks=mask_input)``'s
    dense embedding, the others the no-mask embedding, exactly as separate calls would give them."""
    if mask_input is None or not use_mask.any():
        return prompt_encoder(points=points, boxes=boxes, masks=None)
    if use_mask.all():
        return prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=None)
    pick = torch.as_tensor(np.flatnonzero(use_mask), device=mask_input.device)
    sub_points = None if points is None else (points[0][pick], points[1][pick])
    _, masked = prompt_encoder(points=sub_points, boxes=None if boxes is None else boxes[pick], masks=mask_input[pick])
    return sparse, dense.index_put((pick,), masked.to(dense.dtype))


def prompt_kind(prompt: Prompt) -> tuple[bool, int]:
    """(has a box, number of points): prompts of one kind decode in one call."""
    return prompt.box is not None, 0 if prompt.points is None else len(prompt.points)


def decode_session_round(model, trainable, embeddings: torch.Tensor, prompts: Sequence[Prompt], size: tuple,
                         mask_input: torch.Tensor | None, use_mask: np.ndarray, precision: str = "fp32",
                         paired: Callable = predict_masks_paired) -> tuple[torch.Tensor, torch.Tensor]:
    """One round for n samples of one slice size: (low-res logits float32 (n, 1, 256, 256), logits float32
    (n, H, W) on the slice), differentiable w.r.t. ``trainable`` ({"prompt_encoder", "mask_decoder"}).

    Prompts of each kind (:func:`prompt_kind`) decode together, single-mask output; ``embeddings`` float32
    (n, 256, 64, 64), row i = sample i's slice; ``mask_input``/``use_mask`` as :func:`encode_prompts`."""
    encoder, decoder = trainable["prompt_encoder"], trainable["mask_decoder"]
    kinds: dict = {}
    for i, prompt in enumerate(prompts):
        kinds.setdefault(prompt_kind(prompt), []).append(i)
    parts, order = [], []
    for members in kinds.values():
        pick = torch.as_tensor(members, device=embeddings.device)
        points, boxes = prompt_inputs(model, [prompts[i] for i in members], [tuple(size)] * len(members))
        with autocast(model.device, precision):
            sparse, dense = encode_prompts(encoder, points, boxes, None if mask_input is None else mask_input[pick],
                                           use_mask[members])
            masks, _ = paired(decoder, embeddings[pick], encoder.get_dense_pe(), sparse, dense)
        parts.append(masks[:, :1].float())
        order += members
    if len(parts) > 1:  # back to the samples' order
        parts = [torch.cat(parts)[torch.as_tensor(np.argsort(order), device=embeddings.device)]]
    low = parts[0]
    return low, model.postprocess(low, tuple(size))[:, 0]


def session_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str = "dice") -> torch.Tensor:
    """(n,) per-sample loss of float (n, H, W) logits against (n, H, W) {0, 1} targets.

    ``dice``: MONAI ``DiceLoss(sigmoid=True)`` per sample (Task 2's loss: its batch mean is Task 2's value);
    ``dice_bce``: that plus the per-sample mean of ``binary_cross_entropy_with_logits``."""
    from monai.losses import DiceLoss

    flat, target = logits.flatten(1)[:, None], targets.flatten(1)[:, None].float()
    per_sample = DiceLoss(sigmoid=True, reduction="none")(flat, target).flatten()
    if loss == "dice_bce":
        bce = torch.nn.functional.binary_cross_entropy_with_logits(flat, target, reduction="none")
        per_sample = per_sample + bce.flatten(1).mean(1)
    elif loss != "dice":
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    return per_sample


def click_disks(prompts: Sequence[Prompt], size: tuple, radius: int) -> np.ndarray:
    """bool (n, H, W): the pixels within ``radius`` px of each prompt's points (its clicks, and a point start),
    on slices of ``size`` (H, W); empty for a prompt without points."""
    out = np.zeros((len(prompts), *size), dtype=np.uint8)
    for i, prompt in enumerate(prompts):
        for x, y in ([] if prompt.points is None else np.asarray(prompt.points)):
            cv2.circle(out[i], (int(round(float(x))), int(round(float(y)))), int(radius), 1, thickness=-1)
    return out.astype(bool)


def click_loss(logits: torch.Tensor, targets: torch.Tensor, disks: torch.Tensor) -> torch.Tensor:
    """(n,) mean binary cross-entropy over each sample's click disks (bool (n, H, W)); 0 where it has none.
    What makes the pixel a person clicked, and its neighbourhood, count beyond its share of a Dice loss
    (FocalClick up-weights the pixels near clicks for the same reason)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
    weight = disks.to(bce.dtype)
    return (bce * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1.0)


def round_weights(n_rounds: int, weighting: str) -> np.ndarray:
    """float64 (n_rounds,) loss weights of rounds 0..n_rounds-1, mean 1: flat, or linear (round r weighs r + 1,
    CFR-ICL's 1:2:3)."""
    if weighting not in ROUND_WEIGHTINGS:
        raise ValueError(f"unknown round weighting {weighting!r}; choose from {', '.join(ROUND_WEIGHTINGS)}")
    w = np.ones(n_rounds) if weighting == "flat" else np.arange(1, n_rounds + 1, dtype=np.float64)
    return w / w.mean()


@dataclass
class SessionRounds:
    """What :func:`run_session` did for the n samples of a group, rounds 0..R.

    losses: per round, (n,) per-sample loss (with grad); dice: float64 (n, R + 1) Dice per round;
    prompts: per round, the n prompts decoded; mask_inputs: per round, the (n, 1, 256, 256) tensor offered
    as mask input (None at round 0); use_mask: bool (R + 1, n), who took it; low_res: per round, the
    decoded (n, 1, 256, 256) low-res logits (with grad)."""

    losses: list = field(default_factory=list)
    dice: np.ndarray | None = None
    prompts: list = field(default_factory=list)
    mask_inputs: list = field(default_factory=list)
    use_mask: np.ndarray | None = None
    low_res: list = field(default_factory=list)


def next_round_inputs(group: SessionGroup, prompts: list, pred: np.ndarray, settings: InteractiveSettings,
                      seed: int, epoch: int, round_: int, clicking: bool = True) -> tuple[list, np.ndarray]:
    """Round ``round_``'s prompts (a click added where ``pred`` is wrong, :func:`utils.inference.training_clicks.
    draw_training_click` under the settings' rule) and mask-feedback coins, drawn per sample from
    :func:`session_rng` (the coin first, then the click). ``clicking`` False: a round without a new click, the
    mask always fed back (SAM's extra rounds). Runs under no_grad: numpy only."""
    prompts, use_mask = list(prompts), np.zeros(len(prompts), dtype=bool)
    with torch.no_grad():
        for i, key in enumerate(group.keys):
            rng = session_rng(seed, epoch, *key, round_)
            use_mask[i] = rng.random() < settings.mask_feedback
            if not clicking:
                use_mask[i] = True
                continue
            click = draw_training_click(pred[i], group.truths[i], rng, settings.click_sampling,
                                        settings.truth_click_share, settings.negative_share)
            if click is not None:
                prompts[i] = with_click(prompts[i], click)
    return prompts, use_mask


def run_session(model, trainable, group: SessionGroup, settings: InteractiveSettings, seed: int, epoch: int,
                precision: str = "fp32", paired: Callable = predict_masks_paired,
                click_rounds: int | None = None) -> SessionRounds:
    """Round 0, ``click_rounds`` (default ``settings.rounds``) click rounds, then ``settings.no_click_rounds``
    rounds without a click, for the group's sessions: decode, score (the session loss plus, when
    ``settings.click_loss_weight``, that weight times :func:`click_loss` on the clicks' disks), draw the next
    click and coin."""
    n = len(group.samples)
    click_rounds = settings.rounds if click_rounds is None else int(click_rounds)
    rounds = click_rounds + settings.no_click_rounds
    out = SessionRounds(dice=np.zeros((n, rounds + 1)), use_mask=np.zeros((rounds + 1, n), dtype=bool))
    prompts, mask_input, pred, low = list(group.starts), None, None, None
    for r in range(rounds + 1):
        if r > 0:
            prompts, out.use_mask[r] = next_round_inputs(group, prompts, pred, settings, seed, epoch, r,
                                                         clicking=r <= click_rounds)
            mask_input = feedback(low)
        low, logits = decode_session_round(model, trainable, group.embeddings, prompts, group.size, mask_input,
                                           out.use_mask[r], precision, paired)
        loss = session_loss(logits, group.targets, settings.loss)
        if settings.click_loss_weight > 0:
            disks = torch.from_numpy(click_disks(prompts, group.size, settings.click_radius)).to(logits.device)
            loss = loss + settings.click_loss_weight * click_loss(logits, group.targets, disks)
        out.losses.append(loss)
        pred_t = logits.detach() > 0
        out.dice[:, r] = batch_dice(pred_t, group.targets).cpu().numpy()
        pred = pred_t.cpu().numpy()
        out.prompts.append(prompts)
        out.mask_inputs.append(mask_input)
        out.low_res.append(low)
    return out


@dataclass
class InteractiveStepResult(StepResult):
    """A :class:`StepResult` whose metric is each sample's Dice averaged over its rounds (its session's
    Dice AUC, :func:`utils.eval.auc.dice_auc`), plus the Dice summed per round (training Dice per click)."""

    round_dice_sum: list = field(default_factory=list)


def make_interactive_step(caches, settings: InteractiveSettings, seed: int, trainable, precision: str = "fp32",
                          paired: Callable | None = None, resident: dict | None = None):
    """step(batch, epoch) -> InteractiveStepResult for :func:`utils.train.loop.run_training`: the sessions of
    a batch of (cache id, row, organ) samples, or of what ``step.prepare`` made of one. ``trainable``:
    {"prompt_encoder", "mask_decoder"} (the copies that train); ``precision``: the training forward's
    autocast; ``paired``: a compiled :func:`utils.inference.decoding.predict_masks_paired`.

    Loss: over the batch's samples and its rounds, the mean of :func:`session_loss` (plus the click term)
    weighted per round by :func:`round_weights`. With ``settings.random_rounds`` the batch runs a number of
    click rounds drawn in 0..rounds from its first sample's key (so a resumed run draws the same); the
    per-round Dice of rounds a batch did not run repeat its last (a session that stopped keeps its Dice)."""
    prepare = make_session_prepare(caches, settings, seed, resident)
    paired = paired or predict_masks_paired

    def click_rounds_of(groups, epoch) -> int:
        if not settings.random_rounds:
            return settings.rounds
        rng = child_rng(seed, SESSION_STREAM, epoch + 1, ROUND_COUNT_KEY, *groups[0].keys[0])
        return int(rng.integers(0, settings.rounds + 1))

    def step(batch, epoch):
        groups = batch if batch and isinstance(batch[0], SessionGroup) else prepare(batch, epoch)
        n = sum(len(g.samples) for g in groups)
        click_rounds = click_rounds_of(groups, epoch)
        ran = click_rounds + settings.no_click_rounds + 1
        weights = torch.as_tensor(round_weights(ran, settings.round_weighting), dtype=torch.float32)
        loss, metric, per_round = 0.0, 0.0, np.zeros(settings.max_rounds + 1)
        for g in groups:
            done = run_session(caches[g.cache_id].model, trainable, g, settings, seed, epoch, precision, paired,
                               click_rounds)
            sums = torch.stack([l.sum() for l in done.losses])
            loss = loss + (sums * weights.to(sums.device)).sum() / (n * ran)
            dice = np.concatenate([done.dice, np.repeat(done.dice[:, -1:], settings.max_rounds + 1 - ran, axis=1)],
                                  axis=1)
            metric += float(dice.mean(axis=1).sum())
            per_round += dice.sum(axis=0)
        return InteractiveStepResult(loss=loss, metric_sum=metric, count=n, round_dice_sum=per_round.tolist())

    step.prepare = prepare
    return step
