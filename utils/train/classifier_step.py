"""Task 3's training step: the classifying mask decoder names the organ of each (row, organ) sample.

Like Task 2's step (:mod:`utils.train.decoder_step`) it serves both paths of :mod:`utils.train.fastpath`:
a list of samples is prepared inside the step (the exact path), or ``step.prepare`` makes the inputs
of a batch ahead in a background thread and the step receives them.
"""
from __future__ import annotations

from typing import Callable

import torch

from utils.inference.classify import class_forward, class_inputs
from utils.train.loop import StepResult


def make_class_step(cache, classifier: torch.nn.Module, prompt_encoder: torch.nn.Module, prompt_type: str,
                    seed: int, precision: str, resident=None) -> Callable[[list | tuple, int], StepResult]:
    """step(batch, epoch) -> StepResult: cross-entropy of the class logits against organ label - 1, and the
    number of correct predictions as the metric, for a list of (row, organ) samples of ``cache`` or for
    what ``step.prepare(batch, epoch)`` (:func:`utils.inference.classify.class_inputs`) made of one.

    ``classifier``: a ``modified_classifier.ClassifyingMaskDecoder``; ``precision``: the training forward's
    autocast (``--train-precision``); ``resident``: a :class:`utils.train.fastpath.ResidentEmbeddings`."""
    loss_fn = torch.nn.CrossEntropyLoss()

    def prepare(batch, epoch):
        return class_inputs(cache, batch, prompt_type, seed, epoch, resident)

    def step(batch, epoch):
        inputs = prepare(batch, epoch) if isinstance(batch, list) else batch  # prepared ahead: a tuple
        logits, targets = class_forward(classifier, prompt_encoder, inputs, precision)
        loss = loss_fn(logits, targets)
        return StepResult(loss=loss, metric_sum=float((logits.argmax(1) == targets).sum()), count=len(targets))

    step.prepare = prepare
    return step
