"""Seeding: one helper for random, numpy and torch; prompts draw from their own seeded generators."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def child_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined only by ``seed`` and ``keys`` (e.g. slice, view, organ), not by call order."""
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])
