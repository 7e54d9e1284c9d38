"""The one (slice, organ) sample list (utils.data.samples): rows of a store and of its augmented views.
Oracle: the store's own index.json (slices, their split and organ pixel counts) and the augmentation."""
import json

import numpy as np
import pytest
from synthetic import write_rawdata

from utils.data.augmentation import AugmentSpec, augment_view
from utils.data.samples import SampleIndex
from utils.data.slice_store import SliceStore, build_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("samples")
    root = write_rawdata(tmp / "btcv", case_ids=(1, 2, 35), shape=(48, 40, 5))
    return SliceStore(build_store(root, tmp / "slices", progress=False)[0])


def test_base_rows_are_store_slices_and_samples_every_organ_in_order(store):
    slices = json.loads((store.path / "index.json").read_text())["slices"]
    index = SampleIndex(store)
    assert index.kind == "base" and len(index) == len(slices)
    expected = [(i, int(o)) for i, s in enumerate(slices) for o in sorted(s["organs"], key=int)]
    assert index.split_samples("all") == expected
    for split in ("train", "val"):
        rows = [i for i, s in enumerate(slices) if s["split"] == split]
        assert index.rows_for(split) == rows
        assert index.split_samples(split) == [(r, o) for r, o in expected if r in rows]
    assert index.split_samples("val") and index.split_samples("train")
    row = index.rows_for("val")[0]
    assert (index.store_index(row), index.view_id(row)) == (row, 0)
    assert index.organs(row) == {int(k): v for k, v in slices[row]["organs"].items()}
    assert np.array_equal(index.label(row), store.label(row)) and index.shape(row) == store.label(row).shape


def test_augmented_rows_are_views_of_training_slices_with_stored_labels(store):
    spec = AugmentSpec(views=2, seed=1)
    stored = {}
    index = SampleIndex(store, spec, stored_label=lambda row: stored[row])
    train = store.indices("train")
    assert index.kind == "aug" and len(index) == 2 * len(train)
    sources = [(index.store_index(r), index.view_id(r)) for r in range(len(index))]
    assert sources == [(i, v) for i in train for v in (1, 2)]
    assert index.rows_for("val") == [] and index.rows_for("train") == list(range(len(index)))
    for row in range(len(index)):
        image, label = index.view(row)
        want = augment_view(*store.load(index.store_index(row)), spec, index.store_index(row), index.view_id(row))
        assert np.array_equal(image, want[0]) and np.array_equal(label, want[1])
        stored[row] = label
    row = len(index) - 1
    assert np.array_equal(index.label(row), stored[row])  # read where the cache keeps it, not recomputed
    present, counts = np.unique(stored[row], return_counts=True)
    assert index.organs(row) == {int(o): int(n) for o, n in zip(present, counts) if o > 0}
    assert index.samples([row]) == [(row, o) for o in sorted(index.organs(row))]


def test_augmented_index_without_stored_labels_says_so(store):
    index = SampleIndex(store, AugmentSpec(views=1, seed=0))
    with pytest.raises(ValueError, match="stored_label"):
        index.label(0)
    with pytest.raises(ValueError, match="views >= 1"):
        SampleIndex(store, AugmentSpec(views=0, seed=0))
