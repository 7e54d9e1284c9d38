"""The one (slice, organ) sample list of Tasks 1-3 and the baselines: the rows of a store and what each is.

A *row* is one image: a store slice as stored (``view`` 0) or an augmented view of a training slice
(``view`` 1..K, :mod:`utils.data.augmentation`). A *sample* is (row, organ label) for every organ on that
row; its mask is ``label(row) == organ``, and its prompts are drawn from that mask
(:mod:`utils.inference.batches`), seeded by (seed, store slice, view, organ), never by call order. An
embedding cache has one row per row of its index (:mod:`utils.embeddings.cache`); without augmentation a
row is the store row, so ``SampleIndex(store).samples(rows)`` are (store row, organ) pairs.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from utils.data.augmentation import AugmentSpec, augment_view
from utils.data.slice_store import SliceStore


class SampleIndex:
    """The rows of one store (``augment=None``: one per slice) or of its augmented training views.

    ``stored_label(row)``: where the labels of augmented rows are read (the cache keeps them with the
    embeddings, made with their images); base rows read theirs from the store."""

    def __init__(self, store: SliceStore, augment: AugmentSpec | None = None,
                 stored_label: Callable[[int], np.ndarray] | None = None):
        self.store = store
        self.augment = augment
        if augment is None:
            self.kind = "base"
            self.sources = [(i, 0) for i in range(len(store))]
        else:
            if augment.views < 1:
                raise ValueError("an augmented cache needs views >= 1")
            self.kind = "aug"
            self.sources = [(i, v) for i in store.indices("train") for v in range(1, augment.views + 1)]
        self._stored_label = stored_label
        self._organs: dict[int, dict[int, int]] = {}
        self._shapes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def store_index(self, row: int) -> int:
        """The store slice ``row`` shows (its row in the store)."""
        return self.sources[row][0]

    def view_id(self, row: int) -> int:
        """0 for the slice as stored, 1..K for its augmented views."""
        return self.sources[row][1]

    def rows_for(self, split: str) -> list[int]:
        """Rows whose slice belongs to ``split`` ("train", "val" or "all")."""
        wanted = set(self.store.indices(split))
        return [r for r, (i, _) in enumerate(self.sources) if i in wanted]

    def view(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 (H, W) in [0, 1], label uint8 (H, W)) of ``row``, as the encoder saw it."""
        store_index, view = self.sources[row]
        image, label = self.store.load(store_index)
        if view == 0:
            return image, label
        return augment_view(image, label, self.augment, store_index, view)

    def label(self, row: int) -> np.ndarray:
        """uint8 (H, W) label of ``row``."""
        if self.kind == "aug":
            if self._stored_label is None:
                raise ValueError("an augmented SampleIndex reads its labels through stored_label; none was given")
            return self._stored_label(row)
        return self.store.label(self.sources[row][0])

    def shape(self, row: int) -> tuple[int, int]:
        """(H, W) of ``row``'s slice (read once, then remembered)."""
        if row not in self._shapes:
            self._shapes[row] = tuple(self.label(row).shape)  # type: ignore[assignment]
        return self._shapes[row]

    def organs(self, row: int) -> dict[int, int]:
        """{organ label: pixel count} on ``row``."""
        if row not in self._organs:
            if self.kind == "base":
                self._organs[row] = self.store.records[self.sources[row][0]].organs
            else:
                present, counts = np.unique(self.label(row), return_counts=True)
                self._organs[row] = {int(o): int(n) for o, n in zip(present, counts) if o > 0}
        return self._organs[row]

    def samples(self, rows: Sequence[int]) -> list[tuple[int, int]]:
        """(row, organ label) for every organ on each of ``rows``, in row order, organs ascending."""
        return [(r, o) for r in rows for o in sorted(self.organs(r))]

    def split_samples(self, split: str) -> list[tuple[int, int]]:
        """:meth:`samples` of every row of ``split`` ("train", "val" or "all")."""
        return self.samples(self.rows_for(split))
